//go:build linux

// Package rundir mounts and unmounts what a container's run directory
// holds: the overlay root file system (dir/rootfs over dir/upper and
// dir/work) and a bound network namespace (dir/netns). PID 1's supervisor
// and ctr both use it.
package rundir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// MountRootfs mounts dir/rootfs: an overlay of lowers (top first) with a
// fresh dir/upper and dir/work. It returns the rootfs path.
func MountRootfs(dir string, lowers []string) (string, error) {
	if len(lowers) == 0 {
		return "", errors.New("the image has no layers")
	}
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	for _, p := range append([]string{upper, work}, lowers...) {
		if strings.ContainsAny(p, ",:\\") {
			return "", fmt.Errorf("overlay: path %q contains a character overlayfs options cannot carry", p)
		}
	}
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(data) >= os.Getpagesize()-1 {
		return "", fmt.Errorf("overlay: %d layers make the mount options longer than a page", len(lowers))
	}
	if err := unix.Mount("overlay", rootfs, "overlay", 0, data); err != nil {
		return "", fmt.Errorf("mount overlay on %s: %w", rootfs, err)
	}
	return rootfs, nil
}

// IsMountpoint reports whether p is mounted on (a missing p is not),
// including a namespace file bind-mounted from nsfs.
func IsMountpoint(p string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	if err := unix.Lstat(filepath.Dir(p), &parent); err != nil {
		return false, err
	}
	if st.Dev != parent.Dev {
		return true, nil
	}
	// A bind-mounted namespace file is on nsfs: compare via statfs.
	var fs unix.Statfs_t
	if err := unix.Statfs(p, &fs); err == nil && fs.Type == unix.NSFS_MAGIC {
		return true, nil
	}
	return false, nil
}

// UnmountAll detaches every mount stacked on p (up to 8).
func UnmountAll(p string) error {
	for range 8 {
		mounted, err := IsMountpoint(p)
		if err != nil || !mounted {
			return err
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", p)
}

// NewNetNS creates a network namespace and bind-mounts it on path. The
// unshare happens on a locked thread that then returns to its namespace;
// if it cannot, it stays locked and the Go runtime discards it. (Never
// leaving it wedged matters: the main thread cannot be discarded, and
// /proc/self/ns/net is the main thread's namespace.)
func NewNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		defer func() { // the thread stays locked: its namespace is unknown
			if r := recover(); r != nil {
				errc <- fmt.Errorf("new netns: panic: %v", r)
			}
		}()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread() // still in the original namespace
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "", unix.MS_BIND, "")
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(merr, fmt.Errorf("restore netns: %w", err)) // thread stays locked
			return
		}
		goruntime.UnlockOSThread()
		if merr != nil {
			merr = fmt.Errorf("bind netns: %w", merr)
		}
		errc <- merr
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}
