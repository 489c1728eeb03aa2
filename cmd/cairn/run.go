package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/qemu"
)

// portFlags collects repeatable --port HOSTPORT:GUESTPORT values.
type portFlags []qemu.PortForward

func (p *portFlags) String() string {
	s := make([]string, len(*p))
	for i, f := range *p {
		s[i] = f.String()
	}
	return strings.Join(s, ",")
}

func (p *portFlags) Set(v string) error {
	f, err := qemu.ParsePortForward(v)
	if err != nil {
		return err
	}
	*p = append(*p, f)
	return nil
}

// runOptions are the parsed `cairn run` flags.
type runOptions struct {
	cfg     qemu.Config
	timeout time.Duration
}

func parseRunFlags(args []string, usageOut io.Writer) (runOptions, error) {
	var o runOptions
	var ports portFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: cairn run [flags] IMAGE

Boot IMAGE under QEMU (TCG) with the serial console on stdout. UEFI (OVMF with a
fresh variable store) by default; --direct boots the image's newest UKI with
-kernel/-initrd/-append instead (faster; no EFI variables in the guest).
cairn run exits when the VM powers off. Ctrl-C stops the VM.

flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.cfg.Direct, "direct", false, "boot the UKI's kernel directly (-kernel/-initrd/-append)")
	fs.StringVar(&o.cfg.ExtraAppend, "append", "", "with --direct: extra kernel `ARGS`, such as cairn.debug")
	fs.Var(&ports, "port", "forward `HOSTPORT:GUESTPORT` (TCP, host side on 127.0.0.1); repeatable")
	fs.StringVar(&o.cfg.FwCfgFile, "fw-cfg", "", "expose `FILE` to the guest as fw_cfg "+qemu.FwCfgName)
	fs.StringVar(&o.cfg.Mem, "mem", qemu.DefaultMem, "guest memory (QEMU -m syntax)")
	fs.DurationVar(&o.timeout, "timeout", 0, "stop the VM after `DURATION` and exit non-zero (0: no limit)")
	fs.StringVar(&o.cfg.QMPSocket, "qmp", "", "serve QMP on unix `SOCKET`")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return o, fmt.Errorf("run: want exactly one IMAGE, got %d arguments: %w", fs.NArg(), errUsage)
	}
	if o.timeout < 0 {
		return o, fmt.Errorf("run: --timeout %s is negative", o.timeout)
	}
	if o.cfg.ExtraAppend != "" && !o.cfg.Direct {
		return o, fmt.Errorf("run: --append needs --direct (under OVMF the command line is sealed in the UKI)")
	}
	o.cfg.Image = fs.Arg(0)
	o.cfg.Ports = ports
	if err := o.cfg.Validate(); err != nil {
		return o, fmt.Errorf("run: %w", err)
	}
	for _, f := range []struct{ what, path string }{{"image", o.cfg.Image}, {"--fw-cfg file", o.cfg.FwCfgFile}} {
		if f.path == "" {
			continue
		}
		st, err := os.Stat(f.path)
		if err != nil {
			return o, fmt.Errorf("run: %s: %w", f.what, err)
		}
		if !st.Mode().IsRegular() {
			return o, fmt.Errorf("run: %s %s is not a regular file", f.what, f.path)
		}
	}
	return o, nil
}

// runCmd implements `cairn run`.
func runCmd(ctx context.Context, args []string) error {
	o, err := parseRunFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	o.cfg.Console = os.Stdout
	o.cfg.Stderr = os.Stderr
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	// QEMU runs in its own process group with stdin on /dev/null, so it never
	// touches the terminal: Ctrl-C reaches only us (main's signal context),
	// and cancelling ctx stops QEMU (SIGTERM, then SIGKILL).
	vm, err := qemu.Start(ctx, o.cfg)
	if err != nil {
		return err
	}
	if isTerminal(os.Stdin) {
		mode := "UEFI"
		if o.cfg.Direct {
			mode = "direct"
		}
		fmt.Fprintf(os.Stderr, "cairn: booting %s (%s, QEMU pid %d); Ctrl-C stops the VM\n", o.cfg.Image, mode, vm.Pid())
	}
	err = vm.Wait()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("run: VM still running after --timeout %s, stopped it", o.timeout)
	case errors.Is(err, context.Canceled):
		return errors.New("run: interrupted, VM stopped")
	}
	return fmt.Errorf("run: %w", err)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
