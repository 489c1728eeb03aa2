package qemutests

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/images/esp"
	"cairn.dev/cairn/qemu-tests/harness"
)

var readyRe = regexp.MustCompile(`CAIRN-READY version=(\S+) slot=([AB]) boot_ms=(\d+)`)

// TestBootUEFI boots the image the way a machine does: OVMF, systemd-boot,
// the counted UKI. PID 1 blesses the boot, the power button shuts it down
// cleanly, and the disk passes the standard checkers afterwards. A second
// boot runs the blessed entry.
func TestBootUEFI(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	vm := harness.Boot(t, harness.Options{Image: img})
	m := vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "1.0.0" || m[2] != "A" {
		t.Errorf("READY line %q: want version 1.0.0 on slot A", m[0])
	}
	vm.Expect(t, "cairn: bootcount: blessed cairn-1.0.0+2-1.efi -> cairn-1.0.0.efi", bootTimeout)
	vm.PowerOff(t, shutdownTimeout)
	checkDisk(t, vm.Disk())
	if got := espEntries(t, vm.Disk()); !slices.Equal(got, []string{"cairn-1.0.0.efi"}) {
		t.Errorf("EFI/Linux after the blessed boot = %v, want [cairn-1.0.0.efi]", got)
	}

	vm.Restart(t)
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "cairn: bootcount:", bootTimeout)
	if log := vm.Console().Log(); strings.Contains(log, "blessed") {
		t.Errorf("second boot blessed again; the entry should have no counter left:\n%s", log)
	}
}

func espEntries(t *testing.T, img string) []string {
	t.Helper()
	f := openFile(t, img)
	p := partition(t, img, disk.LabelESP)
	ents, err := esp.ListDir(f, p.Offset, p.Size, "EFI/Linux")
	if err != nil {
		t.Fatalf("list EFI/Linux: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	return names
}

// TestBootDirectPowerdown boots the UKI's parts directly (no firmware) and
// presses the power button once, as soon as PID 1 watches it: PID 1 stops
// everything, unmounts STATE and powers off, and STATE is clean for e2fsck.
func TestBootDirectPowerdown(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true})
	m := vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[2] != "A" {
		t.Errorf("READY on slot %s, want A", m[2])
	}
	vm.Expect(t, "(Power Button) for the power key", bootTimeout)
	vm.Powerdown(t)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Fatalf("QEMU after power-off: %v", err)
	}
	checkDisk(t, vm.Disk())
}

// TestCtrlAltDel reboots on Ctrl-Alt-Del: the kernel hands the keys to PID 1
// as SIGINT, and PID 1 shuts down cleanly and restarts (QEMU -no-reboot turns
// the restart into an exit).
func TestCtrlAltDel(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, NoReboot: true})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "cairn: bootcount:", bootTimeout)
	keys := []map[string]string{{"type": "qcode", "data": "ctrl"}, {"type": "qcode", "data": "alt"}, {"type": "qcode", "data": "delete"}}
	vm.QMP(t, "send-key", map[string]any{"keys": keys})
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Fatalf("QEMU after reboot: %v", err)
	}
	if out, err := run(t, "e2fsck", "-fn", stateDev(t, vm.Disk())); err != nil {
		t.Errorf("e2fsck -fn on STATE after the reboot: %v\n%s", err, out)
	}
}
