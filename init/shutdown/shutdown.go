//go:build linux

// Package shutdown turns power-off/reboot requests (signals, Ctrl-Alt-Del,
// the ACPI power button) into an orderly shutdown: stop every process,
// persist logs, sync, unmount, reboot(2).
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what to do at the end of the shutdown.
type Action int

// Actions.
const (
	PowerOff Action = iota
	Reboot
)

func (a Action) String() string {
	if a == Reboot {
		return "reboot"
	}
	return "poweroff"
}

// Request is a shutdown request and why it was made.
type Request struct {
	Action Action
	Reason string
}

// Signals delivers SIGTERM/SIGPWR as power-off and SIGINT (Ctrl-Alt-Del,
// after DisableCAD) / SIGUSR2 as reboot requests to out until ctx ends.
func Signals(ctx context.Context, out chan<- Request) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, unix.SIGTERM, unix.SIGPWR, unix.SIGINT, unix.SIGUSR2)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-ch:
			r := Request{Action: PowerOff, Reason: "signal " + unix.SignalName(s.(unix.Signal))}
			if s == unix.SIGINT || s == unix.SIGUSR2 {
				r.Action = Reboot
			}
			if s == unix.SIGINT {
				r.Reason = "ctrl-alt-del"
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}
}

// DisableCAD makes the kernel send SIGINT to PID 1 on Ctrl-Alt-Del instead
// of rebooting at once.
func DisableCAD() error {
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		return fmt.Errorf("shutdown: CAD_OFF: %w", err)
	}
	return nil
}

// Options configure Run.
type Options struct {
	Logf    func(format string, args ...any) // "cairn: shutdown: ..." lines
	Line    func(s string)                   // exact console line
	Grace   time.Duration                    // SIGTERM -> SIGKILL (default 5 s)
	Persist func() error                     // flush logs to disk (may be nil)
	// StopServices, if set, stops the supervised services in order (stop
	// signal, grace period, SIGKILL) before every other process gets
	// SIGTERM.
	StopServices func()
	// Unmount lists mount points to unmount in order (e.g. /efi, /var); a
	// busy one is remounted read-only instead.
	Unmount []string
	// reboot and stop are replaced in tests.
	reboot func(cmd int) error
	stop   func(grace time.Duration) int
}

// Run performs the shutdown and calls reboot(2). It returns only if reboot
// fails.
func Run(r Request, o Options) error {
	if o.Grace == 0 {
		o.Grace = 5 * time.Second
	}
	if o.reboot == nil {
		o.reboot = unix.Reboot
	}
	if o.stop == nil {
		o.stop = stopAll
	}
	o.Logf("%s (%s)", r.Action, r.Reason)
	if o.StopServices != nil {
		o.StopServices()
	}
	n := o.stop(o.Grace)
	o.Logf("processes stopped (%d needed SIGKILL)", n)
	if o.Persist != nil {
		if err := o.Persist(); err != nil {
			o.Logf("persist log: %v", err)
		}
	}
	unix.Sync()
	for _, m := range o.Unmount {
		if err := unmount(m); err != nil {
			o.Logf("%v", err)
		}
	}
	unix.Sync()
	o.Line("cairn: shutdown complete")
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if r.Action == Reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	err := o.reboot(cmd)
	if err != nil && cmd == unix.LINUX_REBOOT_CMD_POWER_OFF {
		err = o.reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
	return fmt.Errorf("shutdown: reboot: %w", err)
}

// stopAll sends SIGTERM to every process but PID 1 and kernel threads, waits
// up to grace for them to go (reaping is someone else's job), then sends
// SIGKILL. It returns 1 if SIGKILL was needed, else 0.
func stopAll(grace time.Duration) int {
	if err := unix.Kill(-1, unix.SIGTERM); errors.Is(err, unix.ESRCH) {
		return 0
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !anyLeft() {
			return 0
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	for range 100 {
		if !anyLeft() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 1
}

// anyLeft reports whether user processes other than PID 1 remain (zombies
// count until reaped). kill(-1, 0) cannot tell: it succeeds as long as
// kernel threads exist.
func anyLeft() bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone
		}
		if kthread, ok := IsKernelThread(string(b)); ok && !kthread {
			return true
		}
	}
	return false
}

// IsKernelThread reports from a /proc/<pid>/stat line whether the process
// is a kernel thread (PF_KTHREAD in the flags field); ok is false if the
// line cannot be parsed.
func IsKernelThread(stat string) (kthread, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return false, false
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is state (field 3); flags is field 9 -> f[6].
	if len(f) < 7 {
		return false, false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return false, false
	}
	const pfKthread = 0x00200000
	return flags&pfKthread != 0, true
}

func unmount(m string) error {
	err := unix.Unmount(m, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil // unmounted, or was not a mount point
	}
	if rerr := unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
		return fmt.Errorf("unmount %s: %w; remount ro: %w", m, err, rerr)
	}
	return nil
}
