package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Status is a container's OCI status.
type Status string

// Statuses (OCI runtime-spec state.status).
const (
	StatusCreating Status = "creating"
	StatusCreated  Status = "created"
	StatusRunning  Status = "running"
	StatusStopped  Status = "stopped"
)

// ExitStatus is how a container's process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+signal when killed by a signal.
	Code      int       `json:"code"`
	Signal    int       `json:"signal,omitempty"`
	OOMKilled bool      `json:"oom_killed,omitempty"`
	ExitedAt  time.Time `json:"exited_at"`
}

// State is what the runtime persists per container.
type State struct {
	ID          string            `json:"id"`
	Bundle      string            `json:"bundle,omitempty"`
	Rootfs      string            `json:"rootfs"`
	Pid         int               `json:"pid"`
	PidStart    uint64            `json:"pid_start"` // /proc/PID/stat starttime, guards against PID reuse
	Status      Status            `json:"status"`
	Created     time.Time         `json:"created"`
	Started     *time.Time        `json:"started,omitempty"`
	Exit        *ExitStatus       `json:"exit,omitempty"`
	CgroupRoot  string            `json:"cgroup_root,omitempty"`
	CgroupPath  string            `json:"cgroup_path,omitempty"`
	StopSignal  int               `json:"stop_signal,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ValidID reports whether id is usable as a container ID (and a path part).
func ValidID(id string) error {
	if !validIDChars(id) {
		return fmt.Errorf("invalid container id %q", id)
	}
	return nil
}

func (r *Runtime) dir(id string) string { return filepath.Join(r.root, id) }

// lock takes an exclusive flock on the container's lock file.
func (r *Runtime) lock(id string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.dir(id), "lock"), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: lock: %w", id, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("container %s: flock: %w", id, err)
	}
	// Delete may have removed the directory while we waited.
	if _, err := os.Stat(filepath.Join(r.dir(id), "state.json")); err != nil {
		f.Close()
		return nil, fmt.Errorf("container %s: %w", id, ErrNotExist)
	}
	return func() { f.Close() }, nil
}

func (r *Runtime) loadState(id string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(r.dir(id), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", id, ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: read state: %w", id, err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("container %s: parse state: %w", id, err)
	}
	return &s, nil
}

func (r *Runtime) saveState(s *State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("container %s: encode state: %w", s.ID, err)
	}
	tmp := filepath.Join(r.dir(s.ID), "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("container %s: write state: %w", s.ID, err)
	}
	if err := os.Rename(tmp, filepath.Join(r.dir(s.ID), "state.json")); err != nil {
		return fmt.Errorf("container %s: write state: %w", s.ID, err)
	}
	return nil
}

// procStart returns field 22 (starttime) of /proc/PID/stat.
func procStart(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// procStat returns fields 3 (state) and 22 (starttime) of /proc/PID/stat.
func procStat(pid int) (byte, uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may contain spaces and parens: split after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, errors.New("malformed stat")
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// alive reports whether the state's process still exists (and is not a
// zombie or a reused PID).
func (s *State) alive() bool {
	if s.Pid <= 0 {
		return false
	}
	state, start, err := procStat(s.Pid)
	return err == nil && start == s.PidStart && state != 'Z'
}

// currentStatus derives the live status from the persisted state.
func (r *Runtime) currentStatus(s *State) Status {
	if s.Exit != nil || !s.alive() {
		return StatusStopped
	}
	if _, err := os.Stat(filepath.Join(r.dir(s.ID), "exec.fifo")); err == nil {
		return StatusCreated
	}
	return StatusRunning
}

// validIDChars: 1-128 of [A-Za-z0-9_.-], starting with a letter or digit.
// Hand-written rather than a regexp: this package is in PID 1, and a
// package-level regexp with a {0,127} repeat costs compile time at every
// boot.
func validIDChars(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}
