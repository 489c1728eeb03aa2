package qemutests

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/internal/testenv"
	"cairn.dev/cairn/qemu-tests/harness"
)

// TestVerityCatchesCorruption flips one byte of /sbin/init inside ROOT-A.
// dm-verity must refuse the block, so the root's init never runs: the
// verity target restarts the machine (restart_on_corruption; QEMU
// -no-reboot turns the restart into an exit), and READY never appears.
func TestVerityCatchesCorruption(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	bad := filepath.Join(t.TempDir(), "bad.img")
	if err := harness.SparseCopy(bad, img); err != nil {
		t.Fatal(err)
	}
	// Byte 100 of the ELF file sits in its program headers, which exec reads
	// first.
	flipByte(t, bad, findInRoot(t, bad, initBinary(t))+100)

	vm := harness.Boot(t, harness.Options{Image: bad, Direct: true, NoReboot: true})
	vm.Expect(t, "device-mapper: verity", bootTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Logf("QEMU exit: %v", err)
	}
	if log := vm.Console().Log(); strings.Contains(log, "CAIRN-READY version=") || strings.Contains(log, "cairn: system:") {
		t.Fatalf("the corrupted root ran:\n%s", log)
	}
}

// TestVerityAfterReady corrupts a file the system reads only after READY (a
// network driver that coldplug loads later). The machine is already up, so
// this is the case an EIO-only verity would miss: the tampered block must
// restart the machine, not just fail one read.
func TestVerityAfterReady(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	bad := filepath.Join(t.TempDir(), "bad.img")
	if err := harness.SparseCopy(bad, img); err != nil {
		t.Fatal(err)
	}
	a := testenv.Artifacts(t)
	ko := filepath.Join(a.ModulesDir, "kernel/drivers/net/virtio_net.ko")
	flipByte(t, bad, findInRoot(t, bad, ko)+100)

	vm := harness.Boot(t, harness.Options{Image: bad, Direct: true, NoReboot: true})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "device-mapper: verity", bootTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Logf("QEMU exit: %v", err)
	}
	if log := vm.Console().Log(); strings.Contains(log, "cairn: shutdown complete") {
		t.Fatalf("the machine shut down cleanly instead of restarting on corruption:\n%s", log)
	}
}

func initBinary(t *testing.T) string {
	t.Helper()
	bin, err := harness.CairnBinary()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(filepath.Dir(bin), "cairn-init-pid1")
}

func flipByte(t *testing.T, img string, off int64) {
	t.Helper()
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// findInRoot returns the image offset of a file's first block in ROOT-A:
// erofs stores file data block-aligned and uncompressed, so the file's first
// 4 KiB appear verbatim at a 4 KiB boundary.
func findInRoot(t *testing.T, img, file string) int64 {
	t.Helper()
	head := make([]byte, 4096)
	ib, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	if _, err := io.ReadFull(ib, head); err != nil {
		t.Fatal(err)
	}
	p := partition(t, img, disk.LabelRootA)
	f := openFile(t, img)
	blk := make([]byte, 4096)
	for off := int64(0); off+4096 <= p.Size; off += 4096 {
		if _, err := f.ReadAt(blk, p.Offset+off); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(blk, head) {
			return p.Offset + off
		}
		if off > 256<<20 {
			break
		}
	}
	t.Fatalf("first block of %s not found in ROOT-A", file)
	return 0
}
