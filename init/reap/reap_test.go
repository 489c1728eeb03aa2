package reap

import (
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReap(t *testing.T) {
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, nil)
	if err != nil {
		t.Skip("no /bin/true:", err)
	}
	var got []int
	deadline := time.Now().Add(5 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		Reap(func(p int, ws unix.WaitStatus) {
			if ws.ExitStatus() != 0 {
				t.Errorf("exit %d", ws.ExitStatus())
			}
			got = append(got, p)
		})
		time.Sleep(5 * time.Millisecond)
	}
	if len(got) != 1 || got[0] != pid {
		t.Fatalf("reaped %v, want [%d]", got, pid)
	}
	if n := Reap(nil); n != 0 {
		t.Fatalf("reaped %d more", n)
	}
}
