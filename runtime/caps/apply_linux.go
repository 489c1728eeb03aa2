package caps

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Set is a parsed OCI capability set, one bit mask per kind.
type Set struct {
	Bounding, Effective, Permitted, Inheritable, Ambient uint64
}

// FromSpec parses an OCI LinuxCapabilities (nil means: no capabilities).
func FromSpec(c *specs.LinuxCapabilities) (Set, error) {
	var s Set
	if c == nil {
		return s, nil
	}
	var err error
	for _, p := range []struct {
		dst  *uint64
		list []string
		kind string
	}{
		{&s.Bounding, c.Bounding, "bounding"},
		{&s.Effective, c.Effective, "effective"},
		{&s.Permitted, c.Permitted, "permitted"},
		{&s.Inheritable, c.Inheritable, "inheritable"},
		{&s.Ambient, c.Ambient, "ambient"},
	} {
		if *p.dst, err = Mask(p.list); err != nil {
			return s, fmt.Errorf("%s capabilities: %w", p.kind, err)
		}
	}
	return s, nil
}

// DropBounding drops every capability not in keep from the calling thread's
// bounding set. It needs CAP_SETPCAP.
func DropBounding(keep uint64, lastCap int) error {
	for c := 0; c <= lastCap; c++ {
		if keep&(1<<uint(c)) != 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if err == unix.EINVAL {
				continue // not known to this kernel
			}
			return fmt.Errorf("drop %s from bounding set: %w", Name(c), err)
		}
	}
	return nil
}

// SetThread sets the effective, permitted and inheritable sets of the
// calling thread and raises the ambient ones. Masks are clipped to lastCap.
func SetThread(s Set, lastCap int) error {
	valid := uint64(1)<<uint(lastCap+1) - 1
	if lastCap >= 63 {
		valid = ^uint64(0)
	}
	eff, perm, inh := s.Effective&valid, s.Permitted&valid, s.Inheritable&valid
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(eff), Permitted: uint32(perm), Inheritable: uint32(inh)},
		{Effective: uint32(eff >> 32), Permitted: uint32(perm >> 32), Inheritable: uint32(inh >> 32)},
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	for c := 0; c <= lastCap; c++ {
		if s.Ambient&(1<<uint(c)) == 0 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, uintptr(c), 0, 0); err != nil {
			return fmt.Errorf("raise ambient %s: %w", Name(c), err)
		}
	}
	return nil
}
