package qemutests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/qemu-tests/harness"
)

var machineIDRe = regexp.MustCompile(`machine-id ([0-9a-f]{32}) created`)

// TestStateSurvivesReboot: the first boot writes the machine id to STATE;
// after a power-off and a second boot, the same id is there, no new one was
// made, and the persisted log holds the first boot's READY line.
func TestStateSurvivesReboot(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	id := vm.ExpectRegexp(t, machineIDRe, bootTimeout)[1]
	vm.Expect(t, "cairn: bootcount:", bootTimeout)
	vm.PowerOff(t, shutdownTimeout)
	if got := strings.TrimSpace(stateFile(t, vm.Disk(), "/lib/cairn/machine-id")); got != id {
		t.Fatalf("machine-id on STATE = %q, want %q", got, id)
	}

	vm.Restart(t)
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "cairn: bootcount:", bootTimeout)
	vm.PowerOff(t, shutdownTimeout)
	if log := vm.Console().Log(); machineIDRe.MatchString(log) {
		t.Errorf("second boot created a new machine id:\n%s", log)
	}
	if got := strings.TrimSpace(stateFile(t, vm.Disk(), "/lib/cairn/machine-id")); got != id {
		t.Errorf("machine-id after the second boot = %q, want %q", got, id)
	}
	if log := stateFile(t, vm.Disk(), "/log/cairn/cairn.log"); strings.Count(log, "CAIRN-READY") < 2 {
		t.Errorf("persisted log should hold both boots' READY lines:\n%s", log)
	}
}

// TestStateGrows: a disk enlarged with qemu-img resize gets STATE grown to
// its end on the next boot (GPT and ext4, online), and the result passes
// sgdisk -v and e2fsck. The boot after that leaves it alone.
func TestStateGrows(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	requireTool(t, "qemu-img")
	requireTool(t, "dumpe2fs")
	img := images.Build(t, helloOS)
	big := filepath.Join(t.TempDir(), "big.img")
	if err := harness.SparseCopy(big, img); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "resize", "-f", "raw", big, "+1G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img resize: %v\n%s", err, out)
	}
	before := blockCount(t, big)
	vm := harness.Boot(t, harness.Options{Image: big, Direct: true})
	vm.Expect(t, "grown: partition LBA", bootTimeout)
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "cairn: bootcount:", bootTimeout)
	vm.PowerOff(t, shutdownTimeout)
	checkDisk(t, vm.Disk())
	st, err := os.Stat(vm.Disk())
	if err != nil {
		t.Fatal(err)
	}
	p := partition(t, vm.Disk(), disk.LabelState)
	if end := p.Offset + p.Size; st.Size()-end > 2<<20 {
		t.Errorf("STATE ends at %d, disk is %d bytes: not grown to the end", end, st.Size())
	}
	after := blockCount(t, vm.Disk())
	if after < before+(1<<30)/4096*9/10 {
		t.Errorf("ext4 block count %d -> %d: not grown by ~1 GiB", before, after)
	}

	vm.Restart(t)
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	if log := vm.Console().Log(); strings.Contains(log, "grown") {
		t.Errorf("second boot grew STATE again:\n%s", log)
	}
}

var blockCountRe = regexp.MustCompile(`(?m)^Block count:\s+(\d+)`)

func blockCount(t *testing.T, img string) int {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", stateDev(t, img)).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	m := blockCountRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("dumpe2fs printed no block count:\n%s", out)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func openFile(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
