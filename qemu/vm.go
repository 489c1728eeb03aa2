package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"cairn.dev/cairn/qemu/qmp"
)

// ErrKilled is returned by Wait when the VM was stopped with Kill.
var ErrKilled = errors.New("qemu: VM killed")

// stopGrace is how long QEMU gets to exit after SIGTERM (context cancel)
// before it is killed.
const stopGrace = 5 * time.Second

// VM is a running QEMU process.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	console *Console
	stderr  *tailBuffer
	tmp     string
	args    []string
	boot    BootFiles

	done    chan struct{}
	waitErr error

	mu     sync.Mutex
	killed bool
}

// Start resolves the boot files (OVMF vars copy, or kernel/initrd from the
// image's UKI in direct mode), starts QEMU and returns at once. The VM is
// killed when ctx is cancelled (SIGTERM, then SIGKILL after a grace period).
// Wait must be called (or Kill then Wait) to release temp files.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(cfg.binary())
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	tmp, err := os.MkdirTemp(cfg.TempDir, "cairn-vm-")
	if err != nil {
		return nil, fmt.Errorf("qemu: temp dir: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	boot, err := resolveBoot(&cfg, tmp)
	if err != nil {
		return nil, err
	}
	args, err := cfg.Args(boot)
	if err != nil {
		return nil, err
	}
	if cfg.QMPSocket != "" {
		// A stale socket from an earlier run would make QEMU fail to bind.
		if err := os.Remove(cfg.QMPSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("qemu: remove stale QMP socket: %w", err)
		}
	}

	v := &VM{
		cfg:     cfg,
		console: NewConsole(cfg.Console),
		stderr:  &tailBuffer{max: 64 << 10, out: cfg.Stderr},
		tmp:     tmp,
		args:    args,
		boot:    boot,
		done:    make(chan struct{}),
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = nil // /dev/null: the console is output-only and QEMU never touches a TTY
	cmd.Stdout = v.console
	cmd.Stderr = v.stderr
	// Own process group: a terminal's Ctrl-C reaches only us, and we stop QEMU
	// cleanly. Pdeathsig: never leave an orphaned QEMU behind if we die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	v.cmd = cmd
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: start %s: %w", bin, err)
	}
	ok = true
	go v.wait(ctx)
	return v, nil
}

func resolveBoot(cfg *Config, tmp string) (BootFiles, error) {
	switch {
	case cfg.Kernel != "":
		b := BootFiles{Kernel: cfg.Kernel, Initrd: cfg.Initrd, Append: cfg.Append}
		if cfg.ExtraAppend != "" {
			b.Append = joinSpace(b.Append, cfg.ExtraAppend)
		}
		if cfg.KernelViaFirmware {
			var err error
			if b.OVMFCode, b.OVMFVars, err = firmwareFiles(cfg, tmp); err != nil {
				return BootFiles{}, err
			}
		}
		return b, nil
	case cfg.Direct:
		u, err := ReadUKI(cfg.Image)
		if err != nil {
			return BootFiles{}, fmt.Errorf("qemu: direct boot: %w", err)
		}
		b, err := writeBootFiles(u, tmp, cfg.ExtraAppend)
		if err != nil {
			return BootFiles{}, fmt.Errorf("qemu: direct boot: %w", err)
		}
		return b, nil
	}
	code, vars, err := firmwareFiles(cfg, tmp)
	if err != nil {
		return BootFiles{}, err
	}
	return BootFiles{OVMFCode: code, OVMFVars: vars}, nil
}

// firmwareFiles finds OVMF (cfg.Firmware or the installed one) and the
// variable store of this VM: cfg.VarsFile, or a fresh copy in tmp.
func firmwareFiles(cfg *Config, tmp string) (code, vars string, err error) {
	var fw Firmware
	if cfg.Firmware != nil {
		fw = *cfg.Firmware
		if err := fw.check(); err != nil {
			return "", "", err
		}
	} else if fw, err = FindFirmware(); err != nil {
		return "", "", err
	}
	vars = cfg.VarsFile
	if vars == "" {
		vars = filepath.Join(tmp, "OVMF_VARS.fd")
		if err := fw.NewVars(vars); err != nil {
			return "", "", err
		}
	} else if err := fw.ensureVars(vars); err != nil {
		return "", "", err
	}
	return fw.Code, vars, nil
}

func joinSpace(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + " " + b
}

func (v *VM) wait(ctx context.Context) {
	err := v.cmd.Wait()
	_ = v.console.Close()
	v.mu.Lock()
	killed := v.killed
	v.mu.Unlock()
	switch {
	case killed:
		err = ErrKilled
	case err != nil && ctx.Err() != nil:
		err = fmt.Errorf("qemu: stopped: %w", ctx.Err())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("qemu: exited with %v: %s", ee.ProcessState, bytes.TrimSpace(v.stderr.Bytes()))
		} else {
			err = fmt.Errorf("qemu: %w", err)
		}
	}
	if rerr := os.RemoveAll(v.tmp); rerr != nil && err == nil {
		err = fmt.Errorf("qemu: remove temp dir: %w", rerr)
	}
	v.waitErr = err
	close(v.done)
}

// Wait waits for QEMU to exit. It returns nil when the guest powered off (or
// rebooted with NoReboot), ErrKilled after Kill, and an error otherwise. It may
// be called several times.
func (v *VM) Wait() error {
	<-v.done
	return v.waitErr
}

// WaitTimeout is Wait bounded by d; on timeout it returns
// context.DeadlineExceeded (wrapped) and leaves the VM running.
func (v *VM) WaitTimeout(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-v.done:
		return v.waitErr
	case <-t.C:
		return fmt.Errorf("qemu: VM still running after %s: %w", d, context.DeadlineExceeded)
	}
}

// Done is closed when QEMU has exited.
func (v *VM) Done() <-chan struct{} { return v.done }

// Kill stops QEMU immediately (SIGKILL). It is safe to call at any time,
// several times, and after exit.
func (v *VM) Kill() {
	select {
	case <-v.done:
		return
	default:
	}
	v.mu.Lock()
	v.killed = true
	v.mu.Unlock()
	_ = v.cmd.Process.Kill()
}

// Stop asks QEMU to terminate (SIGTERM: it flushes and exits) and kills it if
// it has not exited after grace.
func (v *VM) Stop(grace time.Duration) error {
	select {
	case <-v.done:
		return v.waitErr
	default:
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	if err := v.WaitTimeout(grace); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	v.Kill()
	return v.Wait()
}

// Console is the VM's serial console.
func (v *VM) Console() *Console { return v.console }

// WaitFor waits for a console line matching p (see Console.WaitFor).
func (v *VM) WaitFor(ctx context.Context, p Pattern, timeout time.Duration) (string, error) {
	return v.console.WaitFor(ctx, p, timeout)
}

// Args returns the QEMU arguments used (without the binary).
func (v *VM) Args() []string { return append([]string(nil), v.args...) }

// Boot returns the resolved boot files. Temp files in it are removed after exit.
func (v *VM) Boot() BootFiles { return v.boot }

// Pid returns QEMU's process id.
func (v *VM) Pid() int { return v.cmd.Process.Pid }

// Stderr returns the tail of QEMU's own stderr.
func (v *VM) Stderr() string { return string(v.stderr.Bytes()) }

// QMP connects to the VM's QMP socket (Config.QMPSocket must be set), waiting
// for QEMU to create it.
func (v *VM) QMP(ctx context.Context) (*qmp.Client, error) {
	if v.cfg.QMPSocket == "" {
		return nil, errors.New("qemu: VM started without a QMP socket")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-v.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	c, err := qmp.Dial(ctx, v.cfg.QMPSocket)
	if err != nil {
		select {
		case <-v.done:
			return nil, fmt.Errorf("qemu: QMP: VM exited: %w", err)
		default:
		}
		return nil, fmt.Errorf("qemu: QMP: %w", err)
	}
	return c, nil
}

// tailBuffer keeps the last max bytes written and copies them to out.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
	out io.Writer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.out != nil {
		_, _ = t.out.Write(p)
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
