package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/caps"
	"cairn.dev/cairn/runtime/cgroup"
	"cairn.dev/cairn/runtime/seccomp"
)

// stageExec is the value of stageEnv for an exec stage.
const stageExec = "exec"

// fdPidfd is the exec stage's pidfd of the container's init (its
// namespaces are joined through it).
const fdPidfd = 5

// execNamespaces are joined by the exec stage through the init's pidfd; the
// PID namespace is joined by the parent's forking thread (it applies to
// children only).
const execNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP

// Process is a process started by Exec inside a running container.
type Process struct {
	ID   string // container
	cmd  *exec.Cmd
	done chan struct{}
	exit ExitStatus
}

// Pid returns the process's PID in the caller's PID namespace.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Wait blocks until the process exits and returns how it ended (Code is
// 128+signal for a signal).
func (p *Process) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-p.done:
		return p.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// Signal sends sig to the process (through its pidfd).
func (p *Process) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("container %s: exec process %d: %w", p.ID, p.Pid(), ErrNotRunning)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("container %s: signal exec process %d: %w", p.ID, p.Pid(), err)
	}
	return nil
}

func (r *Runtime) saveSpec(id string, spec *specs.Spec) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("container %s: encode spec: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(r.dir(id), "spec.json"), b, 0o600); err != nil {
		return fmt.Errorf("container %s: write spec: %w", id, err)
	}
	return nil
}

// Spec returns the spec a container was created with, as the runtime
// prepared it (user resolved, PATH and HOME set).
func (r *Runtime) Spec(ctx context.Context, id string) (*specs.Spec, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	if _, err := r.loadState(id); err != nil {
		return nil, err
	}
	return r.loadSpec(id)
}

func (r *Runtime) loadSpec(id string) (*specs.Spec, error) {
	p := filepath.Join(r.dir(id), "spec.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("container %s: read spec: %w", id, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("container %s: %s: %w", id, p, err)
	}
	if spec.Process == nil || spec.Linux == nil {
		return nil, fmt.Errorf("container %s: %s: incomplete spec", id, p)
	}
	return &spec, nil
}

// mergeProcess returns the container's process with p's settings on top:
// Args always come from p; Env entries of p replace or extend the
// container's; Cwd, User, Capabilities, Rlimits and OOMScoreAdj replace the
// container's when set in p (a User with UID 0, GID 0, no name and no extra
// groups counts as unset: ask for root by name or "0"); NoNewPrivileges is
// on if either asks for it.
func mergeProcess(base, p *specs.Process) (*specs.Process, error) {
	if p == nil || len(p.Args) == 0 {
		return nil, errors.New("exec: process args are required")
	}
	out := *base
	out.Args = append([]string(nil), p.Args...)
	out.Env = mergeEnv(base.Env, p.Env)
	if p.Cwd != "" {
		out.Cwd = p.Cwd
	}
	if u := p.User; u.Username != "" || u.UID != 0 || u.GID != 0 || len(u.AdditionalGids) > 0 {
		out.User = u
	}
	if p.Capabilities != nil {
		out.Capabilities = p.Capabilities
	}
	if len(p.Rlimits) > 0 {
		out.Rlimits = p.Rlimits
	}
	if p.OOMScoreAdj != nil {
		out.OOMScoreAdj = p.OOMScoreAdj
	}
	out.NoNewPrivileges = base.NoNewPrivileges || p.NoNewPrivileges
	out.Terminal, out.ConsoleSize = p.Terminal, p.ConsoleSize
	return &out, nil
}

// mergeEnv returns base with the KEY=VALUE entries of over replacing
// entries of the same key or appended.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, e := range over {
		k, _, _ := strings.Cut(e, "=")
		replaced := false
		for i, b := range out {
			if bk, _, _ := strings.Cut(b, "="); bk == k {
				out[i], replaced = e, true
				break
			}
		}
		if !replaced {
			out = append(out, e)
		}
	}
	return out
}

// Exec starts p inside a created or running container: in its mount, PID,
// network, IPC, UTS and cgroup namespaces and its cgroup, with its seccomp
// filter and, unless p sets them, its user, capabilities, cwd and rlimits
// (see mergeProcess). It returns once the program has been exec'd (or with
// the error that prevented it); Process.Wait gives its exit status.
func (r *Runtime) Exec(ctx context.Context, id string, p *specs.Process, pio IO) (_ *Process, err error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	unlock, err := r.lock(id)
	if err != nil {
		return nil, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	s, err := r.loadState(id)
	if err != nil {
		return nil, err
	}
	if st := r.currentStatus(s); st == StatusStopped {
		return nil, fmt.Errorf("container %s: cannot exec in a %s container: %w", id, st, ErrNotRunning)
	}
	base, err := r.loadSpec(id)
	if err != nil {
		return nil, err
	}
	if hasUserNS(base) {
		// setns(CLONE_NEWUSER) needs a single-threaded caller; a Go
		// process never is.
		return nil, fmt.Errorf("container %s: exec into a container with a user namespace is not supported", id)
	}
	merged, err := mergeProcess(base.Process, p)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	base.Process = merged
	if err := checkTerminal(merged, pio.ConsoleSocket); err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	spec, err := prepareSpec(base, s.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	cfg := &stageConfig{Spec: spec, Rootfs: s.Rootfs}
	if cfg.Caps, err = caps.FromSpec(spec.Process.Capabilities); err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	if cfg.LastCap, err = caps.LastCap(); err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	if spec.Linux.Seccomp != nil {
		if cfg.Seccomp, err = seccomp.Compile(spec.Linux.Seccomp); err != nil {
			return nil, fmt.Errorf("container %s: exec: %w", id, err)
		}
	}

	// Pin the init: its namespaces are joined through the pidfd.
	pidfdNum, err := unix.PidfdOpen(s.Pid, 0)
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: pidfd_open %d: %w", id, s.Pid, err)
	}
	pidfd := os.NewFile(uintptr(pidfdNum), "pidfd")
	defer pidfd.Close()
	if !s.alive() {
		return nil, fmt.Errorf("container %s: cannot exec: %w", id, ErrNotRunning)
	}
	var cgfd *os.File
	if s.CgroupPath != "" {
		m, err := cgroup.New(s.CgroupRoot, s.CgroupPath)
		if err != nil {
			return nil, fmt.Errorf("container %s: exec: %w", id, err)
		}
		if cgfd, err = m.Open(); err != nil {
			return nil, fmt.Errorf("container %s: exec: %w", id, err)
		}
		defer cgfd.Close()
	}
	// The container's state may change from here on: exec does not hold
	// the lock while the process runs.
	unlock()
	locked = false

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer statusR.Close()
	defer statusW.Close()

	ep := &Process{ID: id, done: make(chan struct{})}
	iop := &proc{}
	stdio, closeAfterStart, err := iop.setupIO(pio)
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	defer func() {
		for _, f := range closeAfterStart {
			f.Close()
		}
	}()
	cmd := &exec.Cmd{
		Path:        r.opts.Exe,
		Args:        []string{"cairn-exec", id},
		Env:         []string{stageEnv + "=" + stageExec},
		Stdin:       stdio[0],
		Stdout:      stdio[1],
		Stderr:      stdio[2],
		ExtraFiles:  append([]*os.File{cfgR, statusW, pidfd}, consoleFiles(pio.ConsoleSocket)...),
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if cgfd != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgfd.Fd())
	}
	if err := startInPIDNS(cmd, pidfd); err != nil {
		return nil, fmt.Errorf("container %s: exec: start stage: %w", id, err)
	}
	ep.cmd = cmd
	defer func() {
		if err != nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	}()
	// The status pipe closes on exec (CLOEXEC) or carries the error.
	msg, err := handOff(ctx, &closeAfterStart, cfgR, cfgW, statusR, statusW, cfg)
	if err != nil {
		return nil, fmt.Errorf("container %s: exec: %w", id, err)
	}
	if msg.Error != "" {
		return nil, fmt.Errorf("container %s: exec: %s", id, msg.Error)
	}
	go func() {
		ep.exit = waitExit(cmd, &iop.copiers)
		close(ep.done)
		exit := ep.exit
		r.publish(Event{Type: EventExecExit, ID: id, Pid: cmd.Process.Pid, Exit: &exit})
	}()
	return ep, nil
}

// startInPIDNS starts cmd from a thread that joined the PID namespace of
// the process behind pidfd, so the child is born in it. The thread is
// never given back to the Go scheduler: its goroutine exits locked, and
// the runtime then ends the thread.
func startInPIDNS(cmd *exec.Cmd, pidfd *os.File) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(pidfd.Fd()), unix.CLONE_NEWPID); err != nil {
			errc <- fmt.Errorf("setns pid: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// waitExit waits for cmd and returns its exit status once its output has
// been copied (bounded, for writers that outlive it).
func waitExit(cmd *exec.Cmd, copiers *sync.WaitGroup) ExitStatus {
	exit := exitStatus(cmd.Process.Wait())
	copied := make(chan struct{})
	go func() { copiers.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	return exit
}

// execStage runs in the re-executed binary, already in the container's PID
// namespace and cgroup: it joins the other namespaces of the container's
// init and execs the process like the create stage does.
func execStage(status *os.File) error {
	unix.Umask(0)
	cfgFile := os.NewFile(fdConfig, "config")
	var cfg stageConfig
	if err := json.NewDecoder(cfgFile).Decode(&cfg); err != nil {
		return fmt.Errorf("exec stage: read config: %w", err)
	}
	cfgFile.Close()
	if cfg.Spec == nil || cfg.Spec.Process == nil || cfg.Spec.Linux == nil {
		return errors.New("exec stage: incomplete spec")
	}
	// setns into a mount namespace needs an fs_struct of our own; Go's
	// threads share one. This thread is locked and execs (or exits).
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("exec stage: unshare fs: %w", err)
	}
	if err := unix.Setns(fdPidfd, execNamespaces); err != nil {
		return fmt.Errorf("exec stage: join namespaces: %w", err)
	}
	unix.Close(fdPidfd)
	if cfg.Spec.Process.Terminal {
		if err := setupConsole(cfg.Spec.Process); err != nil {
			return err
		}
	}
	return execProcess(&cfg, status, false)
}
