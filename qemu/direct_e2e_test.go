package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/images/esp"
	"cairn.dev/cairn/images/uki"
	"cairn.dev/cairn/internal/testenv"
)

// testDisk writes a Cairn disk image (images/disk) whose ESP holds files,
// and returns its path.
func testDisk(t *testing.T, files []esp.File) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if _, err := disk.Build(t.Context(), p, disk.Options{OSName: "qemu-test", ESPFiles: files, MTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	return p
}

// testUKI assembles a UKI from the pinned systemd stub and Debian kernel
// (testenv fetches them when the cache is cold).
func testUKI(t *testing.T, cmdline string) []byte {
	t.Helper()
	return testUKIInitrd(t, cmdline, nil)
}

// testUKIInitrd is testUKI with an initrd.
func testUKIInitrd(t *testing.T, cmdline string, initrd []byte) []byte {
	t.Helper()
	a := testenv.Artifacts(t)
	stub, err := os.ReadFile(a.Stub)
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := os.ReadFile(a.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	pe, err := uki.Assemble(stub, uki.Sections{
		OSRel:   []byte("ID=cairn\nVERSION_ID=1.0\n"),
		Cmdline: []byte(cmdline),
		Uname:   []byte(a.KernelRelease),
		Linux:   kernel,
		Initrd:  initrd,
	})
	if err != nil {
		t.Fatal(err)
	}
	return pe
}

// TestSmokeDirectAndUEFIFromESP boots one image both ways: direct mode must
// pull the kernel and command line out of EFI/Linux/*.efi; UEFI mode (the same
// UKI as the removable-media BOOTX64.EFI) must run it through OVMF. Both end in
// the expected "no root fs" panic (no initrd), which proves the command line
// reached the kernel.
func TestSmokeDirectAndUEFIFromESP(t *testing.T) {
	needQEMU(t)
	const cmdline = "console=ttyS0 panic=-1 cairn.test=e2e"
	pe := testUKI(t, cmdline+"\n")
	old := testUKI(t, "console=ttyS0 cairn.test=old")
	img := testDisk(t, []esp.File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: pe},
		{Path: "EFI/Linux/cairn-1.0+3.efi", Data: pe},
		{Path: "EFI/Linux/cairn-0.9.efi", Data: old},
	})
	u, err := ReadUKI(img)
	if err != nil {
		t.Fatal(err)
	}
	if u.Name != "cairn-1.0+3.efi" || u.Cmdline != cmdline || u.Version != "1.0" || u.TriesLeft != 3 {
		t.Fatalf("ReadUKI = %s %q %q %d", u.Name, u.Cmdline, u.Version, u.TriesLeft)
	}
	for _, direct := range []bool{true, false} {
		name := map[bool]string{true: "direct", false: "uefi"}[direct]
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			vm, err := Start(ctx, Config{Image: img, Direct: direct, NoReboot: true, Snapshot: true, TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Kill()
			fail := func(err error) {
				t.Helper()
				t.Fatalf("%v\n%s\n%s", err, strings.Join(vm.Console().Tail(60), "\n"), vm.Stderr())
			}
			l, err := vm.WaitFor(ctx, Substr("Kernel command line:"), 3*time.Minute)
			if err != nil {
				fail(err)
			}
			if !strings.Contains(l, "cairn.test=e2e") {
				t.Errorf("command line %q", l)
			}
			if _, err := vm.WaitFor(ctx, Substr("VFS: Unable to mount root fs"), time.Minute); err != nil {
				fail(err)
			}
			if err := vm.WaitTimeout(time.Minute); err != nil {
				fail(err)
			}
		})
	}
}
