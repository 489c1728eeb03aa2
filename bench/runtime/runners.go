package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"cairn.dev/cairn/runtime/container"
)

// sample is one timed container run.
type sample struct {
	dur time.Duration
}

// runner starts the bench container once per Run, with a unique id.
type runner interface {
	Name() string
	Run(ctx context.Context, id string) (sample, error)
	// Cleanup removes what a failed Run may have left (container, state).
	Cleanup(ctx context.Context, id string)
	// Close removes everything this runner created.
	Close(ctx context.Context) error
}

// cliRunner runs `<bin> [global...] run --bundle B ID` (runc, crun and the
// OCI CLI cairn-runtime): the wall time of the whole command, stdio on
// /dev/null.
//
// Peak RSS is measured in separate untimed runs under GNU time (%M: wait4
// maxrss of the command and the children it reaped, e.g. `runc init`). Not
// from this process's own wait4: Go starts children with
// clone(CLONE_VM|CLONE_VFORK), and at execve the kernel records the old
// mm's high-water RSS in the child's maxrss, so every child would report at
// least this benchmark's own RSS. GNU time's floor is about 1 MB.
type cliRunner struct {
	name   string
	bin    string
	global []string // e.g. --root DIR
	state  string   // state root to remove on Close ("" if none of ours)
	bundle string
	null   *os.File
	stderr *os.File
}

func newCLIRunner(name, bin string, global []string, state, bundle, tmp string) (*cliRunner, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	stderr, err := os.CreateTemp(tmp, name+"-stderr-")
	if err != nil {
		null.Close()
		return nil, err
	}
	return &cliRunner{name: name, bin: bin, global: global, state: state, bundle: bundle, null: null, stderr: stderr}, nil
}

func (c *cliRunner) Name() string { return c.name }

func (c *cliRunner) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.bin, append(append([]string{}, c.global...), args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.null, c.null, c.stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (c *cliRunner) Run(ctx context.Context, id string) (sample, error) {
	if err := c.stderr.Truncate(0); err != nil {
		return sample{}, err
	}
	if _, err := c.stderr.Seek(0, io.SeekStart); err != nil {
		return sample{}, err
	}
	cmd := c.command(ctx, "run", "--bundle", c.bundle, id)
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return sample{}, fmt.Errorf("%s run %s: %w: %s", c.name, id, err, c.stderrTail())
	}
	return sample{dur: d}, nil
}

// peakRSS runs the container once under GNU time (timeBin) and returns
// its %M (KiB).
func (c *cliRunner) peakRSS(ctx context.Context, timeBin, id, tmp string) (int64, error) {
	out := filepath.Join(tmp, id+".time")
	defer os.Remove(out)
	args := append([]string{"-f", "%M", "-o", out, c.bin}, c.global...)
	cmd := exec.CommandContext(ctx, timeBin, append(args, "run", "--bundle", c.bundle, id)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.null, c.null, c.null
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s %s run %s: %w", timeBin, c.name, id, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return 0, err
	}
	return parseTimeMaxRSS(string(b))
}

func (c *cliRunner) stderrTail() string {
	b, _ := os.ReadFile(c.stderr.Name())
	s := strings.TrimSpace(string(b))
	if len(s) > 400 {
		s = "…" + s[len(s)-400:]
	}
	if s == "" {
		return "(no stderr)"
	}
	return s
}

func (c *cliRunner) Cleanup(ctx context.Context, id string) {
	_ = c.command(ctx, "delete", "--force", id).Run()
}

func (c *cliRunner) Close(ctx context.Context) error {
	var errs []error
	if c.state != "" {
		// Whatever is still registered (a killed run) is force-deleted.
		ents, _ := os.ReadDir(c.state)
		for _, e := range ents {
			if e.IsDir() {
				c.Cleanup(ctx, e.Name())
			}
		}
		if err := os.RemoveAll(c.state); err != nil {
			errs = append(errs, err)
		}
	}
	c.null.Close()
	c.stderr.Close()
	return errors.Join(errs...)
}

// apiRunner drives runtime/container in this process, as PID 1 does:
// config.json is parsed, then Create, Start, Wait and Delete; the time
// covers all of it. The container's stage is this binary re-executed
// (main calls container.MaybeStage first).
type apiRunner struct {
	rt     *container.Runtime
	root   string
	bundle string
}

func newAPIRunner(root, cgroupParent, bundle string) (*apiRunner, error) {
	rt, err := container.New(container.Options{Root: root, CgroupParent: cgroupParent})
	if err != nil {
		return nil, err
	}
	return &apiRunner{rt: rt, root: root, bundle: bundle}, nil
}

func (a *apiRunner) Name() string { return "cairn-api" }

func (a *apiRunner) Run(ctx context.Context, id string) (sample, error) {
	t0 := time.Now()
	if err := a.run(ctx, id, nil); err != nil {
		return sample{}, err
	}
	return sample{dur: time.Since(t0)}, nil
}

// run is one container; between Create and Start (the stage is set up and
// blocked on the exec fifo) it calls created with the stage's state.
func (a *apiRunner) run(ctx context.Context, id string, created func(*container.State) error) error {
	spec, err := loadSpec(a.bundle)
	if err != nil {
		return err
	}
	if err := a.rt.Create(ctx, id, spec, container.CreateOptions{Bundle: a.bundle}); err != nil {
		return err
	}
	if created != nil {
		st, err := a.rt.State(ctx, id)
		if err != nil {
			return err
		}
		if err := created(st); err != nil {
			return err
		}
	}
	if err := a.rt.Start(ctx, id); err != nil {
		return err
	}
	exit, err := a.rt.Wait(ctx, id)
	if err != nil {
		return err
	}
	if exit.Code != 0 {
		return fmt.Errorf("container %s exited with code %d", id, exit.Code)
	}
	return a.rt.Delete(ctx, id, false)
}

// stageRSS runs one container and returns the stage's VmHWM (peak RSS so
// far) read from /proc while it waits on the exec fifo, i.e. after all of
// its set-up work, and the container's cgroup path. (The stage's wait4
// maxrss would include this process's RSS: see cliRunner.)
func (a *apiRunner) stageRSS(ctx context.Context, id string) (hwm int64, cgroup string, err error) {
	err = a.run(ctx, id, func(st *container.State) error {
		cgroup = st.CgroupPath
		if st.CgroupPath != "" {
			cgroup = filepath.Join(st.CgroupRoot, st.CgroupPath)
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", st.Pid))
		if err != nil {
			return err
		}
		defer f.Close()
		hwm, err = parseStatusKiB(f, "VmHWM")
		return err
	})
	return hwm, cgroup, err
}

func (a *apiRunner) Cleanup(ctx context.Context, id string) {
	_ = a.rt.Delete(ctx, id, true)
}

func (a *apiRunner) Close(ctx context.Context) error {
	sts, _ := a.rt.List(ctx)
	for _, s := range sts {
		a.Cleanup(ctx, s.ID)
	}
	return os.RemoveAll(a.root)
}
