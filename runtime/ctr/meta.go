package ctr

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/network"
)

// Options are the locations and settings shared by all ctr commands.
type Options struct {
	Root         string `json:"root"`          // container directories
	Images       string `json:"images"`        // image store
	NetState     string `json:"net_state"`     // network leases
	HostNetNS    string `json:"host_netns"`    // netns of the bridge ("" = ours)
	CgroupParent string `json:"cgroup_parent"` // cgroup below the cgroup2 root
}

// runtimeRoot is the container runtime's state (hidden from ps: IDs never
// start with a dot).
func (o Options) runtimeRoot() string { return filepath.Join(o.Root, ".runtime") }

// Meta is what ctr keeps about one container in ROOT/ID/meta.json.
type Meta struct {
	ID          string                `json:"id"`
	Image       string                `json:"image"`
	Digest      v1.Hash               `json:"digest"`
	Cmd         []string              `json:"cmd,omitempty"` // overrides the image's Cmd
	Env         []string              `json:"env,omitempty"`
	User        string                `json:"user,omitempty"`
	ReadOnly    bool                  `json:"read_only,omitempty"`
	Net         network.Mode          `json:"net"`
	Ports       []network.PortMapping `json:"ports,omitempty"`
	Rm          bool                  `json:"rm,omitempty"`
	Detach      bool                  `json:"detach,omitempty"`
	Interactive bool                  `json:"interactive,omitempty"`
	Created     time.Time             `json:"created"`
	Opts        Options               `json:"opts"`
	Args        []string              `json:"args,omitempty"` // resolved command line
	IP          string                `json:"ip,omitempty"`
	Exit        *container.ExitStatus `json:"exit,omitempty"`
	Error       string                `json:"error,omitempty"` // why it did not start
}

func metaPath(root, id string) string { return filepath.Join(root, id, "meta.json") }

func readMeta(root, id string) (*Meta, error) {
	b, err := os.ReadFile(metaPath(root, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %s: no such container", id)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("container %s: parse meta.json: %w", id, err)
	}
	return &m, nil
}

func writeMeta(root string, m *Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("container %s: encode meta: %w", m.ID, err)
	}
	p := metaPath(root, m.ID)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return fmt.Errorf("container %s: write meta: %w", m.ID, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("container %s: write meta: %w", m.ID, err)
	}
	return nil
}

func listMetas(root string) ([]*Meta, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var out []*Meta
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if m, err := readMeta(root, e.Name()); err == nil {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// ctrLock is the flock on ROOT/ID/lock. The process that runs a container
// (foreground ctr run or the -d monitor) holds it exclusively for the
// container's whole life, so "lock is busy" means "running".
type ctrLock struct{ f *os.File }

func openLock(root, id string) (*ctrLock, error) {
	f, err := os.OpenFile(filepath.Join(root, id, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container %s: lock: %w", id, err)
	}
	return &ctrLock{f: f}, nil
}

// tryLock takes the lock without waiting; false means it is held.
func (l *ctrLock) tryLock() (bool, error) {
	err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}

// lockWait waits up to d for the lock.
func (l *ctrLock) lockWait(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := l.tryLock()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for the container's monitor")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (l *ctrLock) close() { l.f.Close() }
