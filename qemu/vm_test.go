package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/internal/testenv"
)

func needQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing in CI: %v", DefaultBinary, err)
		}
		t.Skipf("%s not installed", DefaultBinary)
	}
}

// needKernel returns the pinned Debian kernel, fetched and extracted into
// the cache by testenv when missing.
func needKernel(t *testing.T) string {
	t.Helper()
	return testenv.Artifacts(t).Vmlinuz
}

// shortTemp returns a short temp dir (unix socket paths are limited to 108 bytes).
func shortTemp(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "cq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// TestSmokeKernelPanicExit boots the bare Debian kernel without an initrd: it
// must panic with "VFS: Unable to mount root fs", and with panic=-1 and
// -no-reboot QEMU must exit by itself, cleanly.
func TestSmokeKernelPanicExit(t *testing.T) {
	needQEMU(t)
	kernel := needKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log strings.Builder
	vm, err := Start(ctx, Config{
		Kernel:   kernel,
		Append:   "console=ttyS0 panic=-1",
		NoReboot: true,
		Console:  &log,
		TempDir:  t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if _, err := vm.WaitFor(ctx, Substr("Linux version 6.1"), 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(vm.Console().Tail(60), "\n"))
	}
	line, err := vm.WaitFor(ctx, Substr("VFS: Unable to mount root fs"), 90*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(vm.Console().Tail(60), "\n"))
	}
	t.Logf("matched: %s", line)
	if err := vm.WaitTimeout(60 * time.Second); err != nil {
		t.Fatalf("QEMU did not exit cleanly after the panic: %v", err)
	}
	if !strings.Contains(log.String(), "Kernel panic") {
		t.Error("console stream lacks the panic message")
	}
}

// TestSmokeQMPAndCancel checks QMP against real QEMU and that cancelling the
// context stops the VM.
func TestSmokeQMPAndCancel(t *testing.T) {
	needQEMU(t)
	kernel := needKernel(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(shortTemp(t), "qmp.sock")
	vm, err := Start(ctx, Config{Kernel: kernel, Append: "console=ttyS0", QMPSocket: sock, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
	defer qcancel()
	c, err := vm.QMP(qctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ret, err := c.ExecuteContext(qctx, "query-status", nil)
	if err != nil || !strings.Contains(string(ret), `"running"`) {
		t.Fatalf("query-status = %s, %v", ret, err)
	}
	if _, err := c.ExecuteContext(qctx, "no-such-command", nil); err == nil {
		t.Fatal("unknown command succeeded")
	}
	cancel()
	err = vm.WaitTimeout(30 * time.Second)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(vm.tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s left behind: %v", vm.tmp, err)
	}
}

// TestSmokeOVMF boots OVMF on a blank disk with a fresh vars copy: the
// firmware must reach its boot manager and QMP quit must end the VM.
func TestSmokeOVMF(t *testing.T) {
	needQEMU(t)
	fw, err := FindFirmware()
	if err != nil {
		t.Skipf("no OVMF: %v", err)
	}
	dir := shortTemp(t)
	img := filepath.Join(dir, "blank.raw")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "vars.fd")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	vm, err := Start(ctx, Config{Image: img, Firmware: &fw, VarsFile: vars, QMPSocket: filepath.Join(dir, "q.sock"), TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	if vm.Boot().OVMFVars != vars {
		t.Errorf("vars = %s, want %s", vm.Boot().OVMFVars, vars)
	}
	if _, err := vm.WaitFor(ctx, Substr("BdsDxe"), 150*time.Second); err != nil {
		t.Fatalf("%v\n%s\nstderr: %s", err, strings.Join(vm.Console().Tail(60), "\n"), vm.Stderr())
	}
	c, err := vm.QMP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Execute("quit", nil); err != nil {
		t.Fatal(err)
	}
	if err := vm.WaitTimeout(30 * time.Second); err != nil {
		t.Fatalf("Wait after quit: %v", err)
	}
	if _, err := os.Stat(vars); err != nil {
		t.Errorf("caller's vars file must survive the VM: %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Start(ctx, Config{}); err == nil || !strings.Contains(err.Error(), "no image") {
		t.Errorf("empty config: %v", err)
	}
	if _, err := Start(ctx, Config{Image: "/x", Binary: "/nonexistent/qemu"}); err == nil {
		t.Error("missing binary accepted")
	}
	_, err := Start(ctx, Config{Image: "/x", Binary: "true", Firmware: &Firmware{Code: "/nonexistent/CODE.fd", Vars: "/nonexistent/VARS.fd"}, TempDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "OVMF") {
		t.Errorf("missing firmware: %v", err)
	}
	if _, err := findFirmware([]Firmware{{"/nonexistent/a", "/nonexistent/b"}}); err == nil || !strings.Contains(err.Error(), "install") {
		t.Errorf("findFirmware: %v", err)
	}
}
