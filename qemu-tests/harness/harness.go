// Package harness is the one harness for Cairn's QEMU scenario tests. It boots
// an image (always a private copy, so tests never modify the shared build
// output), watches the serial console, talks QMP and cleans up after the test.
//
//	vm := harness.Boot(t, harness.Options{Image: img, Direct: true})
//	vm.Expect(t, "CAIRN-READY", 2*time.Minute)
//	vm.Powerdown(t)
//	if err := vm.WaitExit(t, time.Minute); err != nil { t.Fatal(err) }
//
// Tests skip only when qemu-system-x86_64 is not installed, and fail instead
// when CI=true. Set CAIRN_TEST_CONSOLE=1 to stream consoles to stderr and
// CAIRN_TEST_LOGDIR=DIR to keep the full console log of failed tests.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cairn.dev/cairn/qemu"
	"cairn.dev/cairn/qemu/qmp"
)

// TailLines is how many console lines a failure report shows.
const TailLines = 60

// RequireQEMU skips the test if qemu-system-x86_64 is absent, or fails it
// when running in CI (CI=true), where a missing QEMU is a setup bug.
func RequireQEMU(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("harness: QEMU scenario skipped in -short mode")
	}
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("harness: %s is required in CI: %v", qemu.DefaultBinary, err)
		}
		t.Skipf("harness: %s not installed: %v", qemu.DefaultBinary, err)
	}
}

// Options describe a VM to boot.
type Options struct {
	// Image is the built disk image. It is copied (sparse) into the test's
	// temp dir, or used as the backing file of a qcow2 overlay (Overlay).
	Image string
	// Overlay uses `qemu-img create -f qcow2 -b Image -F raw` instead of a copy
	// (UEFI only: direct boot reads the ESP from a raw image).
	Overlay bool
	// Direct boots the image's UKI with -kernel/-initrd/-append (no EFI).
	Direct bool
	// Kernel, Initrd, Append boot an explicit kernel (Image optional).
	Kernel, Initrd, Append string
	// ExtraAppend is appended to the kernel command line (direct modes).
	ExtraAppend string
	Mem         string
	Ports       []qemu.PortForward
	FwCfgFile   string
	NoReboot    bool
	ExtraArgs   []string
	// Console, if set, also receives the raw console output.
	Console io.Writer
}

// VM is a booted test VM. Restart boots the same disk and NVRAM again.
type VM struct {
	opts   Options
	cfg    qemu.Config
	disk   string
	vars   string
	sock   string
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	vm  *qemu.VM
	qmp *qmp.Client
}

// Boot starts a VM for t and registers cleanup (kill QEMU, remove files).
func Boot(t testing.TB, o Options) *VM {
	t.Helper()
	RequireQEMU(t)
	if o.Image == "" && o.Kernel == "" {
		t.Fatal("harness: Options.Image or Options.Kernel is required")
	}
	dir := t.TempDir()
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	sockDir, err := os.MkdirTemp("", "cairn-qmp-")
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })

	v := &VM{opts: o, vars: filepath.Join(dir, "OVMF_VARS.fd"), sock: filepath.Join(sockDir, "qmp.sock")}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	t.Cleanup(v.cancel)

	format := "raw"
	if o.Image != "" {
		switch {
		case o.Overlay && o.Direct:
			t.Fatal("harness: Overlay and Direct cannot be combined (direct boot reads the raw ESP)")
		case o.Overlay:
			abs, err := filepath.Abs(o.Image)
			if err != nil {
				t.Fatalf("harness: %v", err)
			}
			v.disk = filepath.Join(dir, "disk.qcow2")
			out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", "raw", v.disk).CombinedOutput()
			if err != nil {
				t.Fatalf("harness: qemu-img create overlay: %v: %s", err, out)
			}
			format = "qcow2"
		default:
			v.disk = filepath.Join(dir, "disk.img")
			start := time.Now()
			if err := SparseCopy(v.disk, o.Image); err != nil {
				t.Fatalf("harness: %v", err)
			}
			t.Logf("harness: copied %s in %s", o.Image, time.Since(start).Round(time.Millisecond))
		}
	}
	console := o.Console
	if os.Getenv("CAIRN_TEST_CONSOLE") == "1" {
		console = multiWriter(console, os.Stderr)
	}
	v.cfg = qemu.Config{
		Image: v.disk, ImageFormat: format, Direct: o.Direct,
		Kernel: o.Kernel, Initrd: o.Initrd, Append: o.Append, ExtraAppend: o.ExtraAppend,
		Mem: o.Mem, Ports: o.Ports, FwCfgFile: o.FwCfgFile, QMPSocket: v.sock,
		NoReboot: o.NoReboot, ExtraArgs: o.ExtraArgs, Console: console,
		VarsFile: v.vars, TempDir: dir,
	}
	v.start(t)
	t.Cleanup(func() { v.cleanup(t) })
	return v
}

func multiWriter(a, b io.Writer) io.Writer {
	if a == nil {
		return b
	}
	return io.MultiWriter(a, b)
}

func (v *VM) start(t testing.TB) {
	t.Helper()
	vm, err := qemu.Start(v.ctx, v.cfg)
	if err != nil {
		t.Fatalf("harness: start VM: %v", err)
	}
	v.mu.Lock()
	v.vm = vm
	v.mu.Unlock()
	t.Logf("harness: started QEMU pid %d: %s %s", vm.Pid(), qemu.DefaultBinary, strings.Join(vm.Args(), " "))
}

func (v *VM) cleanup(t testing.TB) {
	v.mu.Lock()
	vm, c := v.vm, v.qmp
	v.qmp = nil
	v.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
	vm.Kill()
	_ = vm.Wait()
	if t.Failed() {
		if dir := os.Getenv("CAIRN_TEST_LOGDIR"); dir != "" {
			name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".console.log"
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(vm.Console().Log()), 0o644); err == nil {
				t.Logf("harness: full console log in %s", p)
			}
		}
	}
}

// QEMU returns the underlying launcher VM of the current run.
func (v *VM) QEMU() *qemu.VM {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.vm
}

// Disk is the path of the VM's private disk (raw copy or qcow2 overlay).
func (v *VM) Disk() string { return v.disk }

// VarsFile is the VM's OVMF variable store, kept across Restart.
func (v *VM) VarsFile() string { return v.vars }

// Console is the serial console of the current run.
func (v *VM) Console() *qemu.Console { return v.QEMU().Console() }

// report formats the console tail and QEMU's stderr for a failure message.
func (v *VM) report() string {
	vm := v.QEMU()
	var b strings.Builder
	tail := vm.Console().Tail(TailLines)
	fmt.Fprintf(&b, "--- last %d console lines ---\n%s\n---", len(tail), strings.Join(tail, "\n"))
	if se := strings.TrimSpace(vm.Stderr()); se != "" {
		fmt.Fprintf(&b, "\n--- QEMU stderr ---\n%s\n---", se)
	}
	return b.String()
}

// Expect waits for a console line containing substr (after the previous
// match) and returns it; on timeout or VM exit it fails the test with the
// last 60 console lines.
func (v *VM) Expect(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	l, err := v.QEMU().WaitFor(v.ctx, qemu.Substr(substr), timeout)
	if err != nil {
		t.Fatalf("harness: %v after %s\n%s", err, timeout, v.report())
	}
	return l
}

// ExpectRegexp is Expect for a regular expression; it returns the submatches.
func (v *VM) ExpectRegexp(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	l, err := v.QEMU().WaitFor(v.ctx, re, timeout)
	if err != nil {
		t.Fatalf("harness: %v after %s\n%s", err, timeout, v.report())
	}
	return re.FindStringSubmatch(l)
}

// QMP executes a QMP command and fails the test on error.
func (v *VM) QMP(t testing.TB, cmd string, args any) json.RawMessage {
	t.Helper()
	ret, err := v.TryQMP(cmd, args)
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, v.report())
	}
	return ret
}

// TryQMP executes a QMP command and returns its error instead of failing.
func (v *VM) TryQMP(cmd string, args any) (json.RawMessage, error) {
	c, err := v.qmpClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(v.ctx, qmp.DefaultTimeout)
	defer cancel()
	return c.ExecuteContext(ctx, cmd, args)
}

func (v *VM) qmpClient() (*qmp.Client, error) {
	v.mu.Lock()
	c, vm := v.qmp, v.vm
	v.mu.Unlock()
	if c != nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(v.ctx, 30*time.Second)
	defer cancel()
	c, err := vm.QMP(ctx)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.vm != vm { // restarted meanwhile
		_ = c.Close()
		return nil, errors.New("harness: VM restarted during QMP connect")
	}
	v.qmp = c
	return c, nil
}

// Powerdown presses the ACPI power button (QMP system_powerdown).
func (v *VM) Powerdown(t testing.TB) {
	t.Helper()
	v.QMP(t, "system_powerdown", nil)
}

// PowerOff presses the power button until the guest prints
// "cairn: shutdown complete", then waits for QEMU to exit. Like a person, it
// presses again every few seconds: a press that arrives before PID 1 watches
// the power key (just after READY) is lost, as on real hardware.
func (v *VM) PowerOff(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := v.TryQMP("system_powerdown", nil); err != nil && !v.exited() {
			t.Fatalf("harness: system_powerdown: %v\n%s", err, v.report())
		}
		_, err := v.Console().WaitFor(v.ctx, qemu.Substr("cairn: shutdown complete"), 5*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || v.exited() {
			t.Fatalf("harness: no clean shutdown within %s: %v\n%s", timeout, err, v.report())
		}
	}
	if err := v.WaitExit(t, time.Until(deadline)+10*time.Second); err != nil {
		t.Fatalf("harness: QEMU after power-off: %v\n%s", err, v.report())
	}
}

// Reset hard-resets the VM (QMP system_reset), like pressing reset.
func (v *VM) Reset(t testing.TB) {
	t.Helper()
	v.QMP(t, "system_reset", nil)
}

// WaitExit waits up to timeout for QEMU to exit and returns its result (nil
// for a guest power-off). It fails the test if QEMU is still running.
func (v *VM) WaitExit(t testing.TB, timeout time.Duration) error {
	t.Helper()
	err := v.QEMU().WaitTimeout(timeout)
	if errors.Is(err, context.DeadlineExceeded) && !v.exited() {
		t.Fatalf("harness: VM did not exit within %s\n%s", timeout, v.report())
	}
	return err
}

func (v *VM) exited() bool {
	select {
	case <-v.QEMU().Done():
		return true
	default:
		return false
	}
}

// Restart boots the same disk and OVMF variable store again in a new QEMU
// process (after the previous one exited, or it is killed first). Console
// expectations start from the new boot.
func (v *VM) Restart(t testing.TB) {
	t.Helper()
	v.mu.Lock()
	old, c := v.vm, v.qmp
	v.qmp = nil
	v.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
	old.Kill()
	_ = old.Wait()
	v.start(t)
}
