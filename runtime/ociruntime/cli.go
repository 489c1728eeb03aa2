package ociruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/cgroup"
	"cairn.dev/cairn/runtime/container"
)

// Version is reported by --version.
const Version = "0.1.0"

// DefaultCgroupParent holds containers whose spec has no linux.cgroupsPath.
const DefaultCgroupParent = "cairn-runtime"

// Main runs the command line (args without argv[0]) with the process's
// stdio and returns the exit code: 0 ok, 1 error, and for a foreground run
// the container's exit code.
func Main(args []string) int {
	return runCLI(context.Background(), args, os.Stdin, os.Stdout, os.Stderr)
}

type cli struct {
	inv    *invocation
	stdin  *os.File
	stdout *os.File
	stderr *os.File
}

func runCLI(ctx context.Context, args []string, stdin, stdout, stderr *os.File) int {
	inv, err := parseArgs(args)
	c := &cli{inv: inv, stdin: stdin, stdout: stdout, stderr: stderr}
	if err != nil {
		return c.fail(err)
	}
	code, err := c.dispatch(ctx)
	if err != nil {
		return c.fail(err)
	}
	return code
}

// fail reports err on stderr and, with --log, in the log file (runc's
// logrus text or JSON format), and returns exit code 1.
func (c *cli) fail(err error) int {
	fmt.Fprintln(c.stderr, err)
	if c.inv == nil || c.inv.Global.Log == "" {
		return 1
	}
	f, ferr := os.OpenFile(c.inv.Global.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if ferr != nil {
		fmt.Fprintf(c.stderr, "cairn-runtime: open log %s: %v\n", c.inv.Global.Log, ferr)
		return 1
	}
	defer f.Close()
	_, _ = f.Write(formatLog(c.inv.Global.LogFormat, "error", err.Error(), time.Now()))
	return 1
}

// formatLog renders one log line as runc (logrus) does.
func formatLog(format, level, msg string, now time.Time) []byte {
	ts := now.Format(time.RFC3339Nano)
	if format == "json" {
		b, _ := json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, ts})
		return append(b, '\n')
	}
	return []byte(fmt.Sprintf("time=%q level=%s msg=%s\n", ts, level, strconv.Quote(msg)))
}

func (c *cli) runtime() (*container.Runtime, error) {
	parent := c.inv.Global.CgroupParent
	if parent == "" {
		parent = DefaultCgroupParent
	}
	rt, err := container.New(container.Options{Root: c.inv.Global.Root, CgroupParent: parent})
	if err != nil {
		return nil, fmt.Errorf("cairn-runtime: %w", err)
	}
	return rt, nil
}

func (c *cli) dispatch(ctx context.Context) (int, error) {
	inv := c.inv
	switch inv.Cmd {
	case "version":
		fmt.Fprintf(c.stdout, "cairn-runtime version %s\nspec: %s\n", Version, specs.Version)
		return 0, nil
	case "help":
		fmt.Fprint(c.stdout, usageText)
		return 0, nil
	case "spec":
		return 0, c.spec()
	}
	if inv.ID != "" {
		if err := container.ValidID(inv.ID); err != nil {
			return 1, err
		}
	}
	rt, err := c.runtime()
	if err != nil {
		return 1, err
	}
	switch inv.Cmd {
	case "create":
		return 0, c.create(ctx, rt)
	case "run":
		return c.run(ctx, rt)
	case "start":
		return 0, rt.Start(ctx, inv.ID)
	case "exec":
		return c.exec(ctx, rt)
	case "state":
		st, err := rt.State(ctx, inv.ID)
		if err != nil {
			return 1, err
		}
		b, err := json.MarshalIndent(ociState(st), "", "  ")
		if err != nil {
			return 1, fmt.Errorf("encode state: %w", err)
		}
		_, err = c.stdout.Write(append(b, '\n'))
		return 0, err
	case "kill":
		return 0, c.kill(ctx, rt)
	case "delete":
		err := rt.Delete(ctx, inv.ID, inv.Force)
		if inv.Force && errors.Is(err, container.ErrNotExist) {
			return 0, nil // runc: delete --force of a missing container is not an error
		}
		return 0, err
	case "list":
		return 0, c.list(ctx, rt)
	}
	return 1, fmt.Errorf("unknown command %q", inv.Cmd)
}

// stateJSON is the OCI runtime-spec state, plus runc's rootfs and created.
type stateJSON struct {
	Version     string            `json:"ociVersion"`
	ID          string            `json:"id"`
	Status      string            `json:"status"`
	Pid         int               `json:"pid"`
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func ociState(st *container.State) stateJSON {
	status := st.Status
	if status == container.StatusCreating {
		status = container.StatusStopped // a create that never finished
	}
	pid := st.Pid
	if status == container.StatusStopped {
		pid = 0
	}
	return stateJSON{
		Version: specs.Version, ID: st.ID, Status: string(status), Pid: pid,
		Bundle: st.Bundle, Rootfs: st.Rootfs, Created: st.Created, Annotations: st.Annotations,
	}
}

// createContainer loads the bundle and creates the container with this
// process's stdio, writing --pid-file.
func (c *cli) createContainer(ctx context.Context, rt *container.Runtime) error {
	inv := c.inv
	if inv.PreserveFDs > 0 {
		return errors.New("--preserve-fds: passing extra file descriptors is not supported by cairn-runtime")
	}
	spec, bundle, err := loadBundle(inv.Bundle)
	if err != nil {
		return err
	}
	io := container.IO{Stdin: c.stdin, Stdout: c.stdout, Stderr: c.stderr}
	if inv.ConsoleSocket != "" {
		sock, err := dialConsole(inv.ConsoleSocket)
		if err != nil {
			return err
		}
		defer sock.Close()
		io.ConsoleSocket = sock
	}
	if err := rt.Create(ctx, inv.ID, spec, container.CreateOptions{Bundle: bundle, IO: io}); err != nil {
		return err
	}
	if inv.PidFile != "" {
		st, err := rt.State(ctx, inv.ID)
		if err == nil {
			err = writePidFile(inv.PidFile, st.Pid)
		}
		if err != nil {
			_ = rt.Delete(ctx, inv.ID, true)
			return err
		}
	}
	return nil
}

func (c *cli) create(ctx context.Context, rt *container.Runtime) error {
	return c.createContainer(ctx, rt)
}

// run is create + start; in the foreground it forwards signals, waits,
// deletes the container and returns its exit code.
func (c *cli) run(ctx context.Context, rt *container.Runtime) (int, error) {
	id := c.inv.ID
	if err := c.createContainer(ctx, rt); err != nil {
		return 1, err
	}
	var sigc chan os.Signal
	if !c.inv.Detach {
		// Registered before start so no signal is lost; forwarded after.
		sigc = make(chan os.Signal, 16)
		signal.Notify(sigc, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigc)
	}
	if err := rt.Start(ctx, id); err != nil {
		_ = rt.Delete(context.Background(), id, true)
		return 1, err
	}
	if c.inv.Detach {
		return 0, nil
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigc:
				_ = rt.Signal(ctx, id, s.(syscall.Signal))
			case <-done:
				return
			}
		}
	}()
	exit, err := rt.Wait(ctx, id)
	if err != nil {
		return 1, err
	}
	if err := rt.Delete(ctx, id, true); err != nil {
		return 1, err
	}
	return exit.Code, nil
}

// writePidFile writes pid atomically (tmp + rename) as runc does.
func writePidFile(path string, pid int) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

func (c *cli) kill(ctx context.Context, rt *container.Runtime) error {
	inv := c.inv
	if !inv.All {
		return rt.Signal(ctx, inv.ID, inv.Signal)
	}
	st, err := rt.State(ctx, inv.ID)
	if err != nil {
		return err
	}
	if st.Status != container.StatusCreated && st.Status != container.StatusRunning {
		return fmt.Errorf("container %s: %w", inv.ID, container.ErrNotRunning)
	}
	if st.CgroupPath == "" {
		return rt.Signal(ctx, inv.ID, inv.Signal)
	}
	m, err := cgroup.New(st.CgroupRoot, st.CgroupPath)
	if err != nil {
		return fmt.Errorf("container %s: %w", inv.ID, err)
	}
	pids, err := m.Procs()
	if err != nil {
		return fmt.Errorf("container %s: %w", inv.ID, err)
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, inv.Signal); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("container %s: signal pid %d: %w", inv.ID, pid, err)
		}
	}
	return nil
}

func (c *cli) list(ctx context.Context, rt *container.Runtime) error {
	states, err := rt.List(ctx)
	if err != nil {
		return err
	}
	switch {
	case c.inv.Quiet:
		for _, st := range states {
			fmt.Fprintln(c.stdout, st.ID)
		}
		return nil
	case c.inv.Format == "json":
		out := make([]stateJSON, 0, len(states))
		for _, st := range states {
			out = append(out, ociState(st))
		}
		b, err := json.Marshal(out)
		if err != nil {
			return fmt.Errorf("encode list: %w", err)
		}
		_, err = c.stdout.Write(append(b, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 12, 1, 3, ' ', 0)
	fmt.Fprint(tw, "ID\tPID\tSTATUS\tBUNDLE\tCREATED\n")
	for _, st := range states {
		s := ociState(st)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", s.ID, s.Pid, s.Status, s.Bundle, s.Created.Format(time.RFC3339Nano))
	}
	return tw.Flush()
}

// spec writes a default config.json (rootfs "rootfs", args ["sh"], no
// terminal) with Cairn's default isolation; it never overwrites.
func (c *cli) spec() error {
	if c.inv.Rootless {
		return errors.New("spec --rootless: rootless containers are not supported by cairn-runtime")
	}
	dir := c.inv.Bundle
	if dir == "" {
		dir = "."
	}
	s := container.DefaultSpec("rootfs", "sh")
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	p := filepath.Join(dir, "config.json")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("spec: file %s exists: remove it first", p)
	}
	if err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("spec: write %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spec: write %s: %w", p, err)
	}
	return nil
}

const usageText = `cairn-runtime: Cairn's OCI runtime (runc-compatible command line)

usage: cairn-runtime [global options] command [options] [args]

global options:
  --root DIR             state directory (default /run/cairn-runtime)
  --log FILE             also write errors to FILE
  --log-format FORMAT    text (default) or json
  --cgroup-parent PATH   cgroup for containers without linux.cgroupsPath (default cairn-runtime)
  --systemd-cgroup       not supported (error)
  --version, -v          print the version

commands:
  create --bundle DIR [--pid-file F] ID   create a container (process waits for start)
  start ID                                start a created container
  state ID                                print the OCI state as JSON
  kill [--all] ID [SIGNAL]                send a signal (default TERM)
  delete [--force] ID                     remove a stopped (with --force: any) container
  run --bundle DIR [--pid-file F] [-d] ID create + start; in the foreground exit with its code
  spec [--bundle DIR]                     write a default config.json
  list [--format table|json] [-q]         list containers
  exec [-d] [--pid-file F] [-e K=V] [--cwd DIR] [-u UID[:GID]] [--cap CAP]
       [--no-new-privs] ID (CMD... | --process FILE before ID)
                                          run a process in a running container

not supported: pause, resume,
update, checkpoint, events, ps, rootless mode, systemd cgroups.
`
