//go:build linux

// Package reap reaps orphaned children of PID 1.
package reap

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Reaper reaps PID 1's orphans without stealing the exit status of the
// children that PID 1 itself started and waits for (containers, the tool
// binary): a plain wait4(-1) loop would reap them first and their owner's
// Wait would fail with ECHILD.
//
// Owners start children under Spawn, which blocks the reaper's scan while
// the child is created and registers its pid; the owner calls Release once
// it has waited for the child. The reaper reaps only zombies whose parent
// is this process and whose pid is not registered.
type Reaper struct {
	// mu is held for reading while children are spawned and for writing
	// while zombies are scanned, so that a child never dies unregistered
	// between its creation and its registration.
	mu sync.RWMutex
	// omu guards owned; it is only ever held for a map access.
	omu   sync.Mutex
	owned map[int]bool
	// proc is the proc file system (default /proc); tests change it.
	proc string
	// OnExit, if set, is called for every reaped orphan.
	OnExit func(pid int, ws unix.WaitStatus)
}

// New returns a Reaper.
func New() *Reaper { return &Reaper{owned: map[int]bool{}, proc: "/proc"} }

// Spawn runs start (which starts children and returns their pids) with the
// reaper's scan blocked, and registers the pids as owned.
func (r *Reaper) Spawn(start func() ([]int, error)) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	pids, err := start()
	r.own(pids)
	return err
}

func (r *Reaper) own(pids []int) {
	if len(pids) == 0 {
		return
	}
	r.omu.Lock()
	for _, p := range pids {
		if p > 0 {
			r.owned[p] = true
		}
	}
	r.omu.Unlock()
}

// Release forgets an owned pid once its owner has waited for it.
func (r *Reaper) Release(pid int) {
	r.omu.Lock()
	delete(r.owned, pid)
	r.omu.Unlock()
}

func (r *Reaper) isOwned(pid int) bool {
	r.omu.Lock()
	defer r.omu.Unlock()
	return r.owned[pid]
}

// StartCmd starts cmd as an owned child; WaitCmd waits for it and releases
// it. Use these for every exec.Cmd that PID 1 starts.
func (r *Reaper) StartCmd(cmd *exec.Cmd) error {
	return r.Spawn(func() ([]int, error) {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return []int{cmd.Process.Pid}, nil
	})
}

// WaitCmd waits for a child started with StartCmd.
func (r *Reaper) WaitCmd(cmd *exec.Cmd) error {
	err := cmd.Wait()
	if cmd.Process != nil {
		r.Release(cmd.Process.Pid)
	}
	return err
}

// Loop reaps on every SIGCHLD until ctx ends.
func (r *Reaper) Loop(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		r.Reap()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// Reap reaps every unowned zombie child and returns how many.
func (r *Reaper) Reap() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	self := os.Getpid()
	n := 0
	for _, pid := range r.zombies(self) {
		if r.isOwned(pid) {
			continue
		}
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		for errors.Is(err, unix.EINTR) {
			got, err = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		if err != nil || got <= 0 {
			continue
		}
		n++
		if r.OnExit != nil {
			r.OnExit(got, ws)
		}
	}
	return n
}

// zombies lists the zombie children of parent from /proc/*/stat.
func (r *Reaper) zombies(parent int) []int {
	ents, err := os.ReadDir(r.proc)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(r.proc + "/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		state, ppid, ok := parseStat(b)
		if ok && state == 'Z' && ppid == parent {
			out = append(out, pid)
		}
	}
	return out
}

// parseStat returns the state and parent pid from a /proc/PID/stat line
// ("pid (comm) S ppid ..."; comm may hold spaces and parentheses).
func parseStat(b []byte) (state byte, ppid int, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	p, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], p, true
}
