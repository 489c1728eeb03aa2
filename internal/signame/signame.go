// Package signame parses and names Linux signals the way runc and Docker
// write them: "SIGTERM", "TERM", "term", "15", "SIGRTMIN+3", "RTMAX-2". It is
// the one signal parser behind the OS file's stop_signal, an image's
// StopSignal, PID 1's API and the cairn-runtime command line.
package signame

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Real-time signals as user space numbers them (glibc keeps 32 and 33).
const (
	RTMin = 34
	RTMax = 64
)

// aliases are the old names that golang.org/x/sys does not list.
var aliases = map[string]syscall.Signal{"SIGIOT": syscall.SIGABRT, "SIGPOLL": syscall.SIGIO, "SIGCLD": syscall.SIGCHLD}

// Parse parses a signal number (1-64) or name, with or without the SIG
// prefix, in any case.
func Parse(s string) (syscall.Signal, error) {
	if s == "" {
		return 0, errors.New("empty signal")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > RTMax {
			return 0, fmt.Errorf("invalid signal number %d", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if rt, ok := strings.CutPrefix(name, "SIGRTMIN"); ok {
		return rtSignal(s, rt, RTMin, 1)
	}
	if rt, ok := strings.CutPrefix(name, "SIGRTMAX"); ok {
		return rtSignal(s, rt, RTMax, -1)
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	if sig, ok := aliases[name]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// rtSignal parses the "+N"/"-N" after SIGRTMIN/SIGRTMAX.
func rtSignal(orig, off string, base, dir int) (syscall.Signal, error) {
	if off == "" {
		return syscall.Signal(base), nil
	}
	want := "+"
	if dir < 0 {
		want = "-"
	}
	if off[:1] != want {
		return 0, fmt.Errorf("unknown signal %q", orig)
	}
	n, err := strconv.Atoi(off[1:])
	if err != nil || n < 0 || n > RTMax-RTMin || off[1:] != strconv.Itoa(n) {
		return 0, fmt.Errorf("unknown signal %q", orig)
	}
	return syscall.Signal(base + dir*n), nil
}

// Name returns the canonical name of sig: "SIGTERM", "SIGRTMIN+3", or the
// number for one that has none.
func Name(sig syscall.Signal) string {
	switch {
	case sig >= RTMin && sig <= RTMax:
		if sig == RTMin {
			return "SIGRTMIN"
		}
		return "SIGRTMIN+" + strconv.Itoa(int(sig)-RTMin)
	case unix.SignalName(sig) != "":
		return unix.SignalName(sig)
	}
	return strconv.Itoa(int(sig))
}
