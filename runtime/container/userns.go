package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// hasUserNS reports whether the spec asks for a new user namespace.
func hasUserNS(spec *specs.Spec) bool {
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return true
		}
	}
	return false
}

// validateUserNS checks the user namespace and its ID maps: a new user
// namespace (joining one by path is not supported) needs both maps, and
// maps need the namespace.
func validateUserNS(spec *specs.Spec) error {
	l := spec.Linux
	maps := len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0
	for _, ns := range l.Namespaces {
		if ns.Type == specs.UserNamespace && ns.Path != "" {
			return fmt.Errorf("joining an existing user namespace (%s) is not supported", ns.Path)
		}
	}
	if !hasUserNS(spec) {
		if maps {
			return errors.New("linux.uidMappings/gidMappings need a user namespace in linux.namespaces")
		}
		return nil
	}
	if len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0 {
		return errors.New("a user namespace needs linux.uidMappings and linux.gidMappings")
	}
	for what, m := range map[string][]specs.LinuxIDMapping{"uidMappings": l.UIDMappings, "gidMappings": l.GIDMappings} {
		for i, e := range m {
			if e.Size == 0 || uint64(e.ContainerID)+uint64(e.Size) > 1<<32 || uint64(e.HostID)+uint64(e.Size) > 1<<32 {
				return fmt.Errorf("linux.%s[%d]: bad range %d→%d size %d", what, i, e.ContainerID, e.HostID, e.Size)
			}
		}
	}
	if _, ok := hostID(l.UIDMappings, 0); !ok {
		return errors.New("linux.uidMappings must map the container's root (uid 0)")
	}
	if _, ok := hostID(l.GIDMappings, 0); !ok {
		return errors.New("linux.gidMappings must map the container's root group (gid 0)")
	}
	return nil
}

// hostID maps a container ID to the host's.
func hostID(m []specs.LinuxIDMapping, id uint32) (uint32, bool) {
	for _, e := range m {
		if id >= e.ContainerID && uint64(id) < uint64(e.ContainerID)+uint64(e.Size) {
			return e.HostID + (id - e.ContainerID), true
		}
	}
	return 0, false
}

func sysIDMap(m []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(m))
	for _, e := range m {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(e.ContainerID), HostID: int(e.HostID), Size: int(e.Size)})
	}
	return out
}

// checkRootfsOwner requires the rootfs to belong to the host IDs that the
// container's root maps to: files of the host's root would show up as
// nobody and be read-only to the container. (overlayfs on 6.1 cannot
// idmap its lower layers, so the image store's snapshots must be made
// for the mapping, e.g. chowned copies.)
func checkRootfsOwner(rootfs string, spec *specs.Spec) error {
	uid, _ := hostID(spec.Linux.UIDMappings, 0)
	gid, _ := hostID(spec.Linux.GIDMappings, 0)
	var st unix.Stat_t
	if err := unix.Stat(rootfs, &st); err != nil {
		return fmt.Errorf("rootfs %s: %w", rootfs, err)
	}
	if st.Uid != uid || st.Gid != gid {
		return fmt.Errorf("rootfs %s is owned by %d:%d, but the container's root maps to host %d:%d: chown the rootfs for this mapping", rootfs, st.Uid, st.Gid, uid, gid)
	}
	return nil
}

// bindDevice makes /dev/<path> in the rootfs a bind mount of the host's
// node: in a user namespace mknod is not allowed (runc does the same).
func bindDevice(rootfd int, d specs.LinuxDevice) error {
	host := filepath.Clean(d.Path)
	if !strings.HasPrefix(host, "/dev/") {
		return fmt.Errorf("device %s outside /dev", d.Path)
	}
	if _, err := os.Stat(host); err != nil {
		return fmt.Errorf("device %s: the host has no such node to bind in a user namespace: %w", d.Path, err)
	}
	if err := mkdirAllInRoot(rootfd, host, true); err != nil {
		return err
	}
	target, err := inRoot(rootfd, host, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := unix.Mount(host, procFD(target), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind device %s: %w", d.Path, err)
	}
	return nil
}
