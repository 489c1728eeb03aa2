//go:build linux

// Package reap reaps orphaned children of PID 1.
package reap

import (
	"context"
	"errors"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// Loop waits for SIGCHLD and reaps every exited child with
// wait4(-1, WNOHANG) until ctx ends. onExit (may be nil) is called for each.
//
// Note: this also reaps children started with os/exec, whose Wait would then
// fail with ECHILD; a supervisor that starts processes must take over reaping
// for its own pids (the container runtime will register them here).
func Loop(ctx context.Context, onExit func(pid int, ws unix.WaitStatus)) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		Reap(onExit)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// Reap collects every exited child without blocking and returns how many.
func Reap(onExit func(pid int, ws unix.WaitStatus)) int {
	n := 0
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return n
		}
		n++
		if onExit != nil {
			onExit(pid, ws)
		}
	}
}
