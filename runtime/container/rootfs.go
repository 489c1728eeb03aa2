package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountOpt maps OCI/mount(8) options to flags; clear=true removes the flag.
var mountOpts = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"dirsync": {false, unix.MS_DIRSYNC}, "mand": {false, unix.MS_MANDLOCK}, "nomand": {true, unix.MS_MANDLOCK},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"defaults": {false, 0},
}

var propagationOpts = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

type parsedMount struct {
	flags       uintptr
	propagation []uintptr
	data        string
	bind        bool
}

func parseMountOptions(m specs.Mount) parsedMount {
	var pm parsedMount
	var data []string
	for _, o := range m.Options {
		if f, ok := mountOpts[o]; ok {
			if f.clear {
				pm.flags &^= f.flag
			} else {
				pm.flags |= f.flag
			}
			continue
		}
		if p, ok := propagationOpts[o]; ok {
			pm.propagation = append(pm.propagation, p)
			continue
		}
		data = append(data, o)
	}
	pm.data = strings.Join(data, ",")
	pm.bind = m.Type == "bind" || pm.flags&unix.MS_BIND != 0
	return pm
}

// inRoot opens path (absolute, as seen inside the container) below rootfd
// without leaving the root, following symlinks as the container would.
func inRoot(rootfd int, path string, flags uint64) (int, error) {
	fd, err := unix.Openat2(rootfd, strings.TrimPrefix(path, "/"), &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, fmt.Errorf("open %s in rootfs: %w", path, err)
	}
	return fd, nil
}

// mkdirAllInRoot creates path below rootfd, component by component, never
// following a symlink out of the root; file=true makes the last component
// an empty file (bind-mount target for a file).
func mkdirAllInRoot(rootfd int, path string, file bool) error {
	parts := strings.Split(strings.Trim(filepath.Clean("/"+path), "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		return nil
	}
	cur := ""
	for i, part := range parts {
		next := cur + "/" + part
		fd, err := inRoot(rootfd, next, unix.O_PATH)
		if err == nil {
			unix.Close(fd)
			cur = next
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
		dirfd, err := inRoot(rootfd, cur+"/.", unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		if file && i == len(parts)-1 {
			var f int
			f, err = unix.Openat(dirfd, part, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(f)
			}
		} else {
			err = unix.Mkdirat(dirfd, part, 0o755)
		}
		unix.Close(dirfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create %s in rootfs: %w", next, err)
		}
		cur = next
	}
	return nil
}

func procFD(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// prepareRootfs mounts everything below the rootfs and pivots into it.
func prepareRootfs(cfg *stageConfig) error {
	spec := cfg.Spec
	prop := uintptr(unix.MS_PRIVATE | unix.MS_REC)
	if p, ok := propagationOpts[spec.Linux.RootfsPropagation]; ok {
		prop = p
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("stage: make / %s: %w", spec.Linux.RootfsPropagation, err)
	}
	rootfs := cfg.Rootfs
	if err := unix.Mount(rootfs, rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("stage: bind rootfs: %w", err)
	}
	rootfd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open rootfs: %w", err)
	}
	defer unix.Close(rootfd)
	devTmpfs := false
	for _, m := range spec.Mounts {
		if err := mountOne(rootfd, m); err != nil {
			return fmt.Errorf("stage: mount %s on %s: %w", m.Type, m.Destination, err)
		}
		if filepath.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			devTmpfs = true
		}
	}
	if devTmpfs {
		if err := populateDev(rootfd, spec.Linux.Devices, cfg.UserNS); err != nil {
			return fmt.Errorf("stage: /dev: %w", err)
		}
	}
	if err := stageHookSync(cfg); err != nil {
		return err
	}
	return pivotRoot(rootfs)
}

func mountOne(rootfd int, m specs.Mount) error {
	if !filepath.IsAbs(m.Destination) {
		return errors.New("destination must be absolute")
	}
	pm := parseMountOptions(m)
	isFile := false
	if pm.bind {
		st, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("bind source: %w", err)
		}
		isFile = !st.IsDir()
	}
	if err := mkdirAllInRoot(rootfd, m.Destination, isFile); err != nil {
		return err
	}
	target, err := inRoot(rootfd, m.Destination, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	switch {
	case pm.bind:
		rec := pm.flags & unix.MS_REC
		if err := unix.Mount(m.Source, procFD(target), "", unix.MS_BIND|rec, ""); err != nil {
			return err
		}
		if rest := pm.flags &^ (unix.MS_BIND | unix.MS_REC); rest != 0 {
			// Remount the new mount (reopen: target still names the mount point below).
			fd, err := inRoot(rootfd, m.Destination, unix.O_PATH)
			if err != nil {
				return err
			}
			err = remountBind(procFD(fd), rest)
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
	default:
		typ, src := m.Type, m.Source
		if typ == "cgroup" {
			typ = "cgroup2"
		}
		if src == "" {
			src = typ
		}
		if err := unix.Mount(src, procFD(target), typ, pm.flags, pm.data); err != nil {
			return err
		}
	}
	if len(pm.propagation) > 0 {
		fd, err := inRoot(rootfd, m.Destination, unix.O_PATH)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, p := range pm.propagation {
			if err := unix.Mount("", procFD(fd), "", p, ""); err != nil {
				return fmt.Errorf("propagation: %w", err)
			}
		}
	}
	return nil
}

// remountBind applies flags to a bind mount, keeping the flags the kernel
// locks (nosuid, nodev, noexec, atime) as they are.
func remountBind(target string, flags uintptr) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	keep := uintptr(0)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(st.Flags)&f.st != 0 {
			keep |= f.ms
		}
	}
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|keep|flags, ""); err != nil {
		return fmt.Errorf("remount %s: %w", target, err)
	}
	return nil
}

// defaultDevices are the nodes runc and Docker create in a tmpfs /dev.
var defaultDevices = []specs.LinuxDevice{
	{Path: "/dev/null", Type: "c", Major: 1, Minor: 3},
	{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	{Path: "/dev/full", Type: "c", Major: 1, Minor: 7},
	{Path: "/dev/random", Type: "c", Major: 1, Minor: 8},
	{Path: "/dev/urandom", Type: "c", Major: 1, Minor: 9},
	{Path: "/dev/tty", Type: "c", Major: 5, Minor: 0},
}

func populateDev(rootfd int, extra []specs.LinuxDevice, userns bool) error {
	devs := append(append([]specs.LinuxDevice(nil), defaultDevices...), extra...)
	for _, d := range devs {
		if userns {
			if err := bindDevice(rootfd, d); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(filepath.Clean(d.Path), "/dev/") {
			return fmt.Errorf("device %s outside /dev", d.Path)
		}
		dir := filepath.Dir(filepath.Clean(d.Path))
		if err := mkdirAllInRoot(rootfd, dir, false); err != nil {
			return err
		}
		dirfd, err := inRoot(rootfd, dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		mode := uint32(0o666)
		if d.FileMode != nil {
			mode = uint32(*d.FileMode) & 0o7777
		}
		switch d.Type {
		case "c", "u":
			mode |= unix.S_IFCHR
		case "b":
			mode |= unix.S_IFBLK
		case "p":
			mode |= unix.S_IFIFO
		default:
			unix.Close(dirfd)
			return fmt.Errorf("device %s: bad type %q", d.Path, d.Type)
		}
		name := filepath.Base(d.Path)
		err = unix.Mknodat(dirfd, name, mode, int(unix.Mkdev(uint32(d.Major), uint32(d.Minor))))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(dirfd)
			return fmt.Errorf("mknod %s: %w", d.Path, err)
		}
		uid, gid := 0, 0
		if d.UID != nil {
			uid = int(*d.UID)
		}
		if d.GID != nil {
			gid = int(*d.GID)
		}
		err = unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
		unix.Close(dirfd)
		if err != nil {
			return fmt.Errorf("chown %s: %w", d.Path, err)
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
	}
	devfd, err := inRoot(rootfd, "/dev", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(devfd)
	for _, l := range links {
		if err := unix.Symlinkat(l[0], devfd, l[1]); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root and detaches the old one (runc's
// pivot_root(".", ".") sequence, which needs no directory for the old root).
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open /: %w", err)
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("stage: open rootfs: %w", err)
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return fmt.Errorf("stage: chdir rootfs: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("stage: pivot_root: %w", err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return fmt.Errorf("stage: chdir old root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("stage: make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("stage: detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("stage: chdir /: %w", err)
	}
	return nil
}

// finishRootfs runs after pivot_root: sysctls, masked and read-only paths,
// read-only root.
func finishRootfs(spec *specs.Spec) error {
	for k, v := range spec.Linux.Sysctl {
		if err := writeSysctl(k, v); err != nil {
			return err
		}
	}
	for _, p := range spec.Linux.MaskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := remountBind("/", unix.MS_RDONLY); err != nil {
			return fmt.Errorf("stage: read-only root: %w", err)
		}
	}
	return nil
}

func writeSysctl(k, v string) error {
	if k == "" || strings.Contains(k, "..") || strings.ContainsAny(k, "\x00") {
		return fmt.Errorf("stage: bad sysctl %q", k)
	}
	p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
	if !strings.HasPrefix(p, "/proc/sys/") {
		return fmt.Errorf("stage: bad sysctl %q", k)
	}
	if err := os.WriteFile(p, []byte(v), 0); err != nil {
		return fmt.Errorf("stage: sysctl %s=%s: %w", k, v, err)
	}
	return nil
}

func maskPath(p string) error {
	st, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stage: mask %s: %w", p, err)
	}
	if st.IsDir() {
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "")
	} else {
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("stage: mask %s: %w", p, err)
	}
	return nil
}

func readonlyPath(p string) error {
	if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stage: bind %s: %w", p, err)
	}
	if err := remountBind(p, unix.MS_RDONLY); err != nil {
		return fmt.Errorf("stage: read-only %s: %w", p, err)
	}
	return nil
}
