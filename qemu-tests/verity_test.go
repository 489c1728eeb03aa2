package qemutests

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/disk"
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
	off := findInitInRoot(t, bad)
	f, err := os.OpenFile(bad, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	// Byte 100 of the ELF file sits in its program headers, which exec reads
	// first.
	if _, err := f.ReadAt(b, off+100); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off+100); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	vm := harness.Boot(t, harness.Options{Image: bad, Direct: true, NoReboot: true})
	vm.Expect(t, "device-mapper: verity", bootTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Logf("QEMU exit: %v", err)
	}
	if log := vm.Console().Log(); strings.Contains(log, "CAIRN-READY version=") || strings.Contains(log, "cairn: system:") {
		t.Fatalf("the corrupted root ran:\n%s", log)
	}
}

// findInitInRoot returns the image offset of /sbin/init's first block in
// ROOT-A: erofs stores file data block-aligned and uncompressed, so the
// binary's first 4 KiB appear verbatim at a 4 KiB boundary.
func findInitInRoot(t *testing.T, img string) int64 {
	t.Helper()
	bin, err := harness.CairnBinary()
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 4096)
	ib, err := os.Open(filepath.Join(filepath.Dir(bin), "cairn-init"))
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
	t.Fatal("cairn-init's first block not found in ROOT-A")
	return 0
}
