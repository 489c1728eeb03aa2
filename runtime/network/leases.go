package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// leaseFileVersion is the format version written to and accepted from the lease file.
const leaseFileVersion = 1

// maxLeaseFileSize bounds how much of a lease file is read; a /16 full of leases with
// a few ports each stays far below it.
const maxLeaseFileSize = 32 << 20

// lease is one container's address reservation, persisted in the state dir.
type lease struct {
	ID    string        `json:"id"`
	IP    netip.Addr    `json:"ip"`
	Veth  string        `json:"veth"`
	Ports []PortMapping `json:"ports,omitempty"`
}

// leaseFile is the whole persisted allocation state.
type leaseFile struct {
	Version int          `json:"version"`
	Subnet  netip.Prefix `json:"subnet"`
	// Last is the most recently allocated address; allocation continues after it so
	// that a released address is not handed out again at once.
	Last   netip.Addr `json:"last,omitzero"`
	Leases []lease    `json:"leases"`
}

// parseLeases decodes and validates a lease file. It never trusts the content: every
// address must be an IPv4 host address of the recorded subnet, not the network,
// gateway or broadcast address, and IDs, addresses, veth names and host ports must be
// unique.
func parseLeases(data []byte) (*leaseFile, error) {
	if len(data) > maxLeaseFileSize {
		return nil, fmt.Errorf("lease file is %d bytes, limit %d", len(data), maxLeaseFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var lf leaseFile
	if err := dec.Decode(&lf); err != nil {
		return nil, fmt.Errorf("decode lease file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode lease file: trailing data")
	}
	if err := lf.validate(); err != nil {
		return nil, err
	}
	return &lf, nil
}

func (lf *leaseFile) validate() error {
	if lf.Version != leaseFileVersion {
		return fmt.Errorf("lease file version %d, want %d", lf.Version, leaseFileVersion)
	}
	if err := checkSubnet(lf.Subnet); err != nil {
		return fmt.Errorf("lease file: %w", err)
	}
	if lf.Last.IsValid() && !usable(lf.Subnet, lf.Last) {
		return fmt.Errorf("lease file: last address %s is not a usable address of %s", lf.Last, lf.Subnet)
	}
	ids := make(map[string]bool, len(lf.Leases))
	ips := make(map[netip.Addr]bool, len(lf.Leases))
	veths := make(map[string]bool, len(lf.Leases))
	hostPorts := make(map[portKey]string)
	for i, l := range lf.Leases {
		if err := ValidateID(l.ID); err != nil {
			return fmt.Errorf("lease %d: %w", i, err)
		}
		if ids[l.ID] {
			return fmt.Errorf("lease %d: duplicate id %q", i, l.ID)
		}
		ids[l.ID] = true
		if !usable(lf.Subnet, l.IP) {
			return fmt.Errorf("lease %q: address %s is not a usable address of %s", l.ID, l.IP, lf.Subnet)
		}
		if ips[l.IP] {
			return fmt.Errorf("lease %q: duplicate address %s", l.ID, l.IP)
		}
		ips[l.IP] = true
		if l.Veth != vethName(l.IP) {
			return fmt.Errorf("lease %q: veth name %q does not match address %s", l.ID, l.Veth, l.IP)
		}
		veths[l.Veth] = true
		if err := validatePorts(l.Ports); err != nil {
			return fmt.Errorf("lease %q: %w", l.ID, err)
		}
		for _, p := range l.Ports {
			k := p.key()
			if other, ok := hostPorts[k]; ok {
				return fmt.Errorf("lease %q: host port %s/%d already published by %q", l.ID, p.Protocol, p.HostPort, other)
			}
			hostPorts[k] = l.ID
		}
	}
	return nil
}

func (lf *leaseFile) marshal() ([]byte, error) {
	b, err := json.MarshalIndent(lf, "", "\t")
	if err != nil {
		return nil, fmt.Errorf("encode lease file: %w", err)
	}
	return append(b, '\n'), nil
}

func (lf *leaseFile) find(id string) int {
	for i := range lf.Leases {
		if lf.Leases[i].ID == id {
			return i
		}
	}
	return -1
}

// allocate reserves the next free usable address after lf.Last (wrapping around).
func (lf *leaseFile) allocate() (netip.Addr, error) {
	used := make(map[netip.Addr]bool, len(lf.Leases))
	for _, l := range lf.Leases {
		used[l.IP] = true
	}
	first, last := hostRange(lf.Subnet)
	start := first
	if lf.Last.IsValid() && lf.Last.Less(last) {
		start = lf.Last.Next()
	}
	a := start
	for {
		if !used[a] {
			lf.Last = a
			return a, nil
		}
		if a == last {
			a = first
		} else {
			a = a.Next()
		}
		if a == start {
			return netip.Addr{}, fmt.Errorf("subnet %s: no free address (%d leases)", lf.Subnet, len(lf.Leases))
		}
	}
}

// leaseStore is the on-disk lease file plus its lock file in the state directory.
type leaseStore struct {
	dir    string
	subnet netip.Prefix
}

func (s *leaseStore) path() string     { return filepath.Join(s.dir, "leases.json") }
func (s *leaseStore) lockPath() string { return filepath.Join(s.dir, "leases.lock") }

// withLock runs fn with an exclusive flock on the state dir's lock file, passing the
// current lease state; if fn returns save=true the new state is written atomically.
// The lock is per open file description, so it serialises goroutines of this process
// as well as other processes.
func (s *leaseStore) withLock(ctx context.Context, fn func(lf *leaseFile) (save bool, err error)) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.OpenFile(s.lockPath(), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open lock file: %w", err)
	}
	defer f.Close()
	if err := flockContext(ctx, int(f.Fd())); err != nil {
		return fmt.Errorf("lock %s: %w", s.lockPath(), err)
	}
	// Closing the file releases the lock.
	lf, err := s.load()
	if err != nil {
		return err
	}
	save, err := fn(lf)
	if err != nil {
		return err
	}
	if !save {
		return nil
	}
	return s.store(lf)
}

func flockContext(ctx context.Context, fd int) error {
	delay := time.Millisecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

func (s *leaseStore) load() (*leaseFile, error) {
	f, err := os.Open(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return &leaseFile{Version: leaseFileVersion, Subnet: s.subnet}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open lease file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLeaseFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read lease file: %w", err)
	}
	lf, err := parseLeases(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.path(), err)
	}
	if lf.Subnet != s.subnet {
		if len(lf.Leases) != 0 {
			return nil, fmt.Errorf("%s holds %d leases in subnet %s but the configured subnet is %s: detach or garbage-collect them first",
				s.path(), len(lf.Leases), lf.Subnet, s.subnet)
		}
		return &leaseFile{Version: leaseFileVersion, Subnet: s.subnet}, nil
	}
	return lf, nil
}

// store writes the lease file atomically: temp file, fsync, rename.
func (s *leaseStore) store(lf *leaseFile) error {
	if err := lf.validate(); err != nil {
		return fmt.Errorf("refusing to write invalid lease state: %w", err)
	}
	data, err := lf.marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".leases-*.tmp")
	if err != nil {
		return fmt.Errorf("write lease file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write lease file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync lease file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close lease file: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path()); err != nil {
		return fmt.Errorf("replace lease file: %w", err)
	}
	// The directory is deliberately not fsynced (it costs ~10 ms per Attach on this
	// kind of disk): the file's content is synced before the rename, so a power cut
	// leaves either the old or the new complete file, never a torn one, and the
	// leases describe veths and rules that do not survive a power cut anyway.
	return nil
}
