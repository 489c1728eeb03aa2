//go:build linux

package reap

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		in    string
		state byte
		ppid  int
		ok    bool
	}{
		{"12 (sh) Z 1 12 12 0", 'Z', 1, true},
		{"13 (a (b) c) S 7 1", 'S', 7, true},
		{"14 (x)", 0, 0, false},
		{"garbage", 0, 0, false},
		{"15 (x) ZZ 1", 0, 0, false},
	} {
		st, pp, ok := parseStat([]byte(tc.in))
		if st != tc.state || pp != tc.ppid || ok != tc.ok {
			t.Errorf("%q: %c %d %v", tc.in, st, pp, ok)
		}
	}
}

// TestReaper: an orphan-like unregistered child is reaped; a child started
// through StartCmd is left to its owner's Wait.
func TestReaper(t *testing.T) {
	r := New()
	owned := exec.Command("/bin/true")
	if err := r.StartCmd(owned); err != nil {
		t.Skip(err)
	}
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	// Both become zombies; only the unowned one may be reaped.
	for deadline := time.Now().Add(30 * time.Second); len(r.zombies(os.Getpid())) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("zombies %v", r.zombies(os.Getpid()))
		}
	}
	var reaped []int
	r.OnExit = func(p int, _ unix.WaitStatus) { reaped = append(reaped, p) }
	r.Reap()
	if len(reaped) != 1 || reaped[0] != pid {
		t.Fatalf("reaped %v, want [%d]", reaped, pid)
	}
	if err := r.WaitCmd(owned); err != nil {
		t.Fatalf("owner's Wait: %v", err)
	}
	if r.isOwned(owned.Process.Pid) {
		t.Error("pid still registered after WaitCmd")
	}
}
