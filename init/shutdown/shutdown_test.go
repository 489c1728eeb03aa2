package shutdown

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHasKey(t *testing.T) {
	// ACPI power button: KEY_POWER (116) only -> bit 52 of word 1 (from the right).
	if !HasKey("10000000000000 0", keyPower) {
		t.Fatal("power button bitmap")
	}
	for _, b := range []string{"", "0", "zz 0", "10000000000000"} {
		if HasKey(b, keyPower) {
			t.Errorf("HasKey(%q) true", b)
		}
	}
	if !HasKey("1", 0) || HasKey("1", 1000) {
		t.Fatal("edge bits")
	}
}

func TestParseInputEvents(t *testing.T) {
	rec := func(typ, code uint16, v int32) []byte {
		b := make([]byte, inputEventSize)
		binary.LittleEndian.PutUint16(b[16:], typ)
		binary.LittleEndian.PutUint16(b[18:], code)
		binary.LittleEndian.PutUint32(b[20:], uint32(v))
		return b
	}
	var b []byte
	b = append(b, rec(evKey, keyPower, 1)...)
	b = append(b, rec(0, 0, 0)...)
	b = append(b, rec(evKey, keyPower, 0)...)
	b = append(b, 1, 2, 3) // partial record ignored
	evs := ParseInputEvents(b)
	if len(evs) != 3 || !IsPowerPress(evs[0]) || IsPowerPress(evs[1]) || IsPowerPress(evs[2]) {
		t.Fatalf("%+v", evs)
	}
}

func TestRunOrder(t *testing.T) {
	var (
		log   []string
		cmds  []int
		grace time.Duration
	)
	o := Options{
		Logf:    func(f string, a ...any) { log = append(log, f) },
		Line:    func(s string) { log = append(log, s) },
		Persist: func() error { log = append(log, "persist"); return nil },
		// Services stop (in their order) before everything else.
		StopServices: func() { log = append(log, "services") },
		Unmount:      []string{t.TempDir()}, // not a mount point: EINVAL, ignored
		reboot:       func(c int) error { cmds = append(cmds, c); return errors.New("EPERM") },
		stop:         func(g time.Duration) int { grace = g; log = append(log, "stop"); return 0 },
	}
	err := Run(Request{Action: PowerOff, Reason: "test"}, o)
	want := []string{"%s (%s)", "services", "stop", "processes stopped (%d needed SIGKILL)", "persist", "cairn: shutdown complete"}
	if err == nil || fmt.Sprint(log) != fmt.Sprint(want) || grace != 5*time.Second {
		t.Fatalf("log %q err %v grace %v", log, err, grace)
	}
	// Power-off falls back to restart (QEMU -no-reboot turns that into exit).
	if len(cmds) != 2 || cmds[0] != unix.LINUX_REBOOT_CMD_POWER_OFF || cmds[1] != unix.LINUX_REBOOT_CMD_RESTART {
		t.Fatalf("reboot cmds %x", cmds)
	}
}

func TestIsKernelThread(t *testing.T) {
	for _, tc := range []struct {
		stat    string
		kth, ok bool
	}{
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0", true, true},
		{"77 (my (odd) name) S 1 77 77 0 -1 4194560 12 0", false, true},
		{"77 (x) S 1", false, false},
		{"garbage", false, false},
		{"1 (a) S 0 0 0 0 -1 zz", false, false},
	} {
		k, ok := IsKernelThread(tc.stat)
		if k != tc.kth || ok != tc.ok {
			t.Errorf("IsKernelThread(%q) = %v %v", tc.stat, k, ok)
		}
	}
	// This test process is not a kernel thread.
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := IsKernelThread(string(b)); k || !ok {
		t.Fatalf("self: %v %v", k, ok)
	}
}
