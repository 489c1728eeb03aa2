package ociruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/container"
)

// execProcessSpec builds the process of "exec" from --process FILE or from the
// command and flags. Fields it leaves empty are taken from the container's
// own process (see container.Runtime.Exec).
func (c *cli) execProcessSpec() (*specs.Process, error) {
	inv := c.inv
	var p specs.Process
	if inv.ProcessFile != "" {
		b, err := os.ReadFile(inv.ProcessFile)
		if err != nil {
			return nil, fmt.Errorf("exec: %w", err)
		}
		pp, err := parseProcess(b, inv.ProcessFile)
		if err != nil {
			return nil, fmt.Errorf("exec: %w", err)
		}
		p = *pp
	} else {
		p.Args = inv.Args
	}
	if inv.Tty {
		p.Terminal = true
	}
	p.Env = append(p.Env, inv.Env...)
	if inv.Cwd != "" {
		p.Cwd = inv.Cwd
	}
	if inv.User != "" {
		p.User.Username = inv.User
	}
	for _, g := range inv.AddGids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("exec: --additional-gids %q: %w", g, err)
		}
		p.User.AdditionalGids = append(p.User.AdditionalGids, uint32(n))
	}
	if inv.NoNewPrivs {
		p.NoNewPrivileges = true
	}
	return &p, nil
}

// maxProcessFile bounds a --process file.
const maxProcessFile = 1 << 20

// parseProcess parses runc's exec --process file: a runtime-spec process
// object. Errors name the file and the field (or the byte offset).
func parseProcess(b []byte, name string) (*specs.Process, error) {
	if len(b) > maxProcessFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxProcessFile)
	}
	var p specs.Process
	if err := json.Unmarshal(b, &p); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("%s: byte %d: %w", name, se.Offset, err)
		case errors.As(err, &te):
			return nil, fmt.Errorf("%s: field %s (byte %d): %w", name, te.Field, te.Offset, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("%s: field args: must not be empty", name)
	}
	if p.Cwd != "" && !strings.HasPrefix(p.Cwd, "/") {
		return nil, fmt.Errorf("%s: field cwd: %q is not absolute", name, p.Cwd)
	}
	for i, e := range p.Env {
		if !strings.Contains(e, "=") {
			return nil, fmt.Errorf("%s: field env[%d]: %q is not KEY=VALUE", name, i, e)
		}
	}
	return &p, nil
}

// exec runs a process in a container: in the foreground it forwards
// signals and returns the process's exit code; with --detach it writes
// --pid-file and returns 0 at once.
func (c *cli) exec(ctx context.Context, rt *container.Runtime) (int, error) {
	inv := c.inv
	p, err := c.execProcessSpec()
	if err != nil {
		return 1, err
	}
	pio := container.IO{Stdin: c.stdin, Stdout: c.stdout, Stderr: c.stderr}
	if inv.ConsoleSocket != "" {
		sock, err := dialConsole(inv.ConsoleSocket)
		if err != nil {
			return 1, err
		}
		defer sock.Close()
		pio.ConsoleSocket = sock
	}
	if len(inv.Caps) > 0 {
		if p.Capabilities, err = c.addCaps(ctx, rt, p.Capabilities, inv.Caps); err != nil {
			return 1, err
		}
	}
	var sigc chan os.Signal
	if !inv.Detach {
		sigc = make(chan os.Signal, 16)
		signal.Notify(sigc, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigc)
	}
	proc, err := rt.Exec(ctx, inv.ID, p, pio)
	if err != nil {
		return 1, err
	}
	if inv.PidFile != "" {
		if err := writePidFile(inv.PidFile, proc.Pid()); err != nil {
			_ = proc.Signal(syscall.SIGKILL)
			return 1, err
		}
	}
	if inv.Detach {
		return 0, nil
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigc:
				_ = proc.Signal(s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	exit, err := proc.Wait(ctx)
	if err != nil {
		return 1, err
	}
	return exit.Code, nil
}

// addCaps returns the capabilities of the container's process (or base)
// with names added to the bounding, effective and permitted sets.
func (c *cli) addCaps(ctx context.Context, rt *container.Runtime, base *specs.LinuxCapabilities, names []string) (*specs.LinuxCapabilities, error) {
	if base == nil {
		spec, err := rt.Spec(ctx, c.inv.ID)
		if err != nil {
			return nil, err
		}
		base = &specs.LinuxCapabilities{}
		if spec.Process.Capabilities != nil {
			*base = *spec.Process.Capabilities
		}
	}
	out := *base
	for _, n := range names {
		n = strings.ToUpper(n)
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		out.Bounding = append(out.Bounding, n)
		out.Effective = append(out.Effective, n)
		out.Permitted = append(out.Permitted, n)
	}
	return &out, nil
}

// dialConsole connects to a --console-socket and returns the connection as
// a file for the runtime to send the pty master over.
func dialConsole(path string) (*os.File, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	defer conn.Close()
	f, err := conn.(*net.UnixConn).File()
	if err != nil {
		return nil, fmt.Errorf("console socket %s: %w", path, err)
	}
	return f, nil
}
