// Package container runs OCI runtime-spec containers without a daemon. The
// caller's own binary is re-executed as a "stage" in new namespaces (see
// MaybeStage); the stage prepares the root, drops privileges, waits on an
// exec fifo until Start and execs the container process. State lives in a
// root directory, one subdirectory per container, guarded by flock, so
// several processes may drive the same containers.
package container

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/signame"
	"cairn.dev/cairn/runtime/caps"
	"cairn.dev/cairn/runtime/cgroup"
	"cairn.dev/cairn/runtime/seccomp"
)

// Errors.
var (
	ErrNotExist    = errors.New("container does not exist")
	ErrExist       = errors.New("container already exists")
	ErrNotRunning  = errors.New("container is not running")
	ErrExitUnknown = errors.New("exit status unknown: the container was not started by this process")
)

// Options configures a Runtime.
type Options struct {
	// Root is the state directory (one subdirectory per container).
	Root string
	// CgroupRoot is the cgroup2 mount; empty: detect from /proc/self/mountinfo.
	CgroupRoot string
	// CgroupParent is the cgroup below CgroupRoot that holds containers
	// (default "cairn"); a spec's Linux.CgroupsPath overrides it per container.
	CgroupParent string
	// NoCgroups runs containers without a cgroup (resources then fail).
	NoCgroups bool
	// Exe is the binary re-executed as the stage (default /proc/self/exe);
	// its main must call MaybeStage first.
	Exe string
	// Logf receives warnings (failed poststart and poststop hooks); nil
	// discards them.
	Logf func(format string, args ...any)
}

// Runtime creates and drives containers. Handles of containers created by
// this Runtime (exit status, stdio) live in memory; everything else is on
// disk.
type Runtime struct {
	root       string
	opts       Options
	cgroupRoot string // "" if none

	mu    sync.Mutex
	procs map[string]*proc

	ev events
}

// proc is the in-memory handle of a container this Runtime created.
type proc struct {
	cmd     *exec.Cmd
	status  *os.File // read end of the stage's status pipe
	done    chan struct{}
	exit    ExitStatus
	copiers sync.WaitGroup
	exited  chan struct{} // closed once the process has been waited for
	oomDone chan struct{} // closed once the OOM watcher has finished
}

// New returns a Runtime using opts.Root for state.
func New(opts Options) (*Runtime, error) {
	if opts.Root == "" {
		return nil, errors.New("container: Options.Root is required")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("container: root: %w", err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("container: create root: %w", err)
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "cairn"
	}
	if opts.Exe == "" {
		opts.Exe = "/proc/self/exe"
	}
	r := &Runtime{root: root, opts: opts, procs: map[string]*proc{}}
	if !opts.NoCgroups {
		r.cgroupRoot = opts.CgroupRoot
		if r.cgroupRoot == "" {
			if cr, err := cgroup.Detect("/proc/self/mountinfo"); err == nil {
				r.cgroupRoot = cr
			}
		}
	}
	return r, nil
}

// IO is a container's stdio. Nil means /dev/null. *os.File values are
// handed to the container directly; other readers and writers are fed
// through pipes by goroutines of this process (use logs.Log writers for
// output that must never block the container).
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// ConsoleSocket, for a process with Terminal set (and only then), is a
	// connected unix socket: the runtime allocates a pty in the container,
	// sends its master over the socket (SCM_RIGHTS, with the pty's name as
	// the payload, as runc does; see RecvConsole) and makes the slave the
	// process's stdio and controlling terminal. Stdin, Stdout and Stderr
	// are then unused.
	ConsoleSocket *os.File
}

// CreateOptions are per-container options beyond the spec.
type CreateOptions struct {
	// Bundle is the directory a relative spec.Root.Path is relative to.
	Bundle string
	IO     IO
}

// Create sets up a container from spec and leaves its process waiting
// before exec: namespaces, mounts, pivot_root, capabilities, user,
// seccomp (if NoNewPrivileges is false) and the cgroup are in place when
// Create returns. spec.Process.User.Username, if set, is resolved against
// the rootfs's /etc/passwd and /etc/group ("name", "uid", "name:group").
func (r *Runtime) Create(ctx context.Context, id string, spec *specs.Spec, opts CreateOptions) (err error) {
	if err := ValidID(id); err != nil {
		return err
	}
	if err := validateSpec(spec); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := checkTerminal(spec.Process, opts.IO.ConsoleSocket); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(opts.Bundle, rootfs)
	}
	if rootfs, err = filepath.Abs(rootfs); err != nil {
		return fmt.Errorf("container %s: rootfs: %w", id, err)
	}
	if st, err := os.Stat(rootfs); err != nil || !st.IsDir() {
		return fmt.Errorf("container %s: rootfs %s is not a directory (%v)", id, rootfs, err)
	}
	dir := r.dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container %s: %w", id, ErrExist)
		}
		return fmt.Errorf("container %s: %w", id, err)
	}
	var cleanups []func()
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				cleanups[i]()
			}
		}
	}()
	cleanups = append(cleanups, func() { _ = os.RemoveAll(dir) })
	lockf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer lockf.Close()
	if err := unix.Flock(int(lockf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("container %s: flock: %w", id, err)
	}
	state := &State{ID: id, Bundle: opts.Bundle, Rootfs: rootfs, Status: StatusCreating, Created: time.Now().UTC(), Annotations: spec.Annotations}
	if err := r.saveState(state); err != nil {
		return err
	}

	spec, err = prepareSpec(spec, rootfs)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := r.saveSpec(id, spec); err != nil {
		return err
	}
	cfg := &stageConfig{Spec: spec, Rootfs: rootfs, JoinNS: map[specs.LinuxNamespaceType]string{}, ID: id, Bundle: opts.Bundle}
	if h := spec.Hooks; h != nil {
		cfg.HookSync = len(runtimeHooks(h))+len(h.CreateContainer)+len(h.StartContainer) > 0
	}
	var cloneflags uintptr
	for _, ns := range spec.Linux.Namespaces {
		flag, ok := map[specs.LinuxNamespaceType]uintptr{
			specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
			specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS,
			specs.MountNamespace: unix.CLONE_NEWNS, specs.CgroupNamespace: 0,
			specs.UserNamespace: unix.CLONE_NEWUSER,
		}[ns.Type]
		if !ok {
			return fmt.Errorf("container %s: %s namespace not supported yet", id, ns.Type)
		}
		switch {
		case ns.Path != "":
			if ns.Type == specs.PIDNamespace || ns.Type == specs.MountNamespace {
				return fmt.Errorf("container %s: joining an existing %s namespace is not supported", id, ns.Type)
			}
			cfg.JoinNS[ns.Type] = ns.Path
		case ns.Type == specs.CgroupNamespace:
			cfg.CgroupNS = true
		default:
			cloneflags |= flag
		}
	}
	if cloneflags&unix.CLONE_NEWNS == 0 {
		return fmt.Errorf("container %s: a mount namespace is required", id)
	}
	if cloneflags&unix.CLONE_NEWUSER != 0 {
		if len(cfg.JoinNS) > 0 {
			return fmt.Errorf("container %s: joining namespaces by path is not supported with a user namespace", id)
		}
		if err := checkRootfsOwner(rootfs, spec); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		cfg.UserNS = true
	}
	if cfg.Caps, err = caps.FromSpec(spec.Process.Capabilities); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if cfg.LastCap, err = caps.LastCap(); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if spec.Linux.Seccomp != nil {
		if cfg.Seccomp, err = seccomp.Compile(spec.Linux.Seccomp); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}

	// cgroup
	var cgfd *os.File
	if r.cgroupRoot != "" {
		path := spec.Linux.CgroupsPath
		if path == "" {
			path = r.opts.CgroupParent + "/" + id
		}
		m, err := cgroup.New(r.cgroupRoot, path)
		if err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		if err := m.Create(spec.Linux.Resources); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		cleanups = append(cleanups, func() { _ = m.Destroy() })
		state.CgroupRoot, state.CgroupPath = m.Root, m.Path
		if cgfd, err = m.Open(); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		defer cgfd.Close()
	} else if hasLimits(spec.Linux.Resources) {
		return fmt.Errorf("container %s: resource limits requested but no cgroup2 hierarchy is available", id)
	}

	// exec fifo: the stage blocks opening it for writing until Start reads.
	fifoPath := filepath.Join(dir, "exec.fifo")
	if err := unix.Mkfifo(fifoPath, 0o622); err != nil {
		return fmt.Errorf("container %s: mkfifo: %w", id, err)
	}
	if err := os.Chmod(fifoPath, 0o622); err != nil { // umask
		return fmt.Errorf("container %s: chmod fifo: %w", id, err)
	}
	fifoFD, err := unix.Open(fifoPath, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("container %s: open fifo: %w", id, err)
	}
	fifo := os.NewFile(uintptr(fifoFD), fifoPath)
	defer fifo.Close()

	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer cfgR.Close()
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer statusW.Close()
	cleanups = append(cleanups, func() { statusR.Close() })

	p := &proc{status: statusR, done: make(chan struct{}), exited: make(chan struct{}), oomDone: make(chan struct{})}
	stdio, closeAfterStart, err := p.setupIO(opts.IO)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer func() {
		for _, f := range closeAfterStart {
			f.Close()
		}
	}()

	cmd := &exec.Cmd{
		Path:       r.opts.Exe,
		Args:       []string{"cairn-stage", id},
		Env:        []string{stageEnv + "=1"},
		Stdin:      stdio[0],
		Stdout:     stdio[1],
		Stderr:     stdio[2],
		ExtraFiles: append([]*os.File{cfgR, statusW, fifo}, consoleFiles(opts.IO.ConsoleSocket)...),
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: cloneflags,
			Setsid:     true,
		},
	}
	if cgfd != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgfd.Fd())
	}
	if cfg.UserNS {
		// Go writes the maps from this process before the stage runs.
		cmd.SysProcAttr.UidMappings = sysIDMap(spec.Linux.UIDMappings)
		cmd.SysProcAttr.GidMappings = sysIDMap(spec.Linux.GIDMappings)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// Become the namespace's root (the host's root is not mapped):
		// execve then gives the stage every capability in it.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("container %s: start stage: %w", id, err)
	}
	p.cmd = cmd
	cleanups = append(cleanups, func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	msg, err := handOff(ctx, &closeAfterStart, cfgR, cfgW, statusR, statusW, cfg)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if msg.Hooks {
		if err := parentHookSync(ctx, cfgW, id, opts.Bundle, spec, cmd.Process.Pid); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		cfgW.Close()
		if msg, err = readStatus(ctx, statusR); err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	if !msg.Ready {
		if msg.Error == "" {
			msg.Error = "stage exited before it was ready"
		}
		return fmt.Errorf("container %s: %s", id, msg.Error)
	}
	state.Pid = cmd.Process.Pid
	if state.PidStart, err = procStart(state.Pid); err != nil {
		return fmt.Errorf("container %s: read process start time: %w", id, err)
	}
	state.Status = StatusCreated
	if s, ok := spec.Annotations["org.opencontainers.image.stopSignal"]; ok {
		state.StopSignal = signalByName(s)
	}
	if err := r.saveState(state); err != nil {
		return err
	}
	r.mu.Lock()
	r.procs[id] = p
	r.mu.Unlock()
	r.watchOOM(id, p, state.CgroupRoot, state.CgroupPath)
	go r.reap(id, p, state.CgroupRoot, state.CgroupPath)
	return nil
}

func hasLimits(res *specs.LinuxResources) bool {
	if res == nil {
		return false
	}
	f, err := cgroup.Files(res)
	return err != nil || len(f) > 0
}

func validateSpec(spec *specs.Spec) error {
	switch {
	case spec == nil:
		return errors.New("nil spec")
	case spec.Root == nil || spec.Root.Path == "":
		return errors.New("spec.root.path is required")
	case spec.Process == nil || len(spec.Process.Args) == 0:
		return errors.New("spec.process.args is required")
	case spec.Linux == nil:
		return errors.New("spec.linux is required")
	}
	if err := validateUserNS(spec); err != nil {
		return err
	}
	return validateHooks(spec.Hooks)
}

// prepareSpec returns a copy of spec with the user resolved and PATH/HOME set.
func prepareSpec(in *specs.Spec, rootfs string) (*specs.Spec, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("copy spec: %w", err)
	}
	p := spec.Process
	home := "/"
	if name := p.User.Username; name != "" {
		u, h, err := ResolveUser(rootfs, name)
		if err != nil {
			return nil, err
		}
		u.Umask = p.User.Umask
		u.AdditionalGids = append(u.AdditionalGids, p.User.AdditionalGids...)
		p.User, home = u, h
	} else if u, h, err := ResolveUser(rootfs, fmt.Sprint(p.User.UID)); err == nil && u.UID == p.User.UID {
		home = h
	}
	hasEnv := func(k string) bool {
		return slices.ContainsFunc(p.Env, func(e string) bool { return len(e) > len(k) && e[:len(k)+1] == k+"=" })
	}
	if !hasEnv("PATH") {
		p.Env = append(p.Env, "PATH="+defaultPath)
	}
	if !hasEnv("HOME") {
		p.Env = append(p.Env, "HOME="+home)
	}
	return &spec, nil
}

// setupIO returns the stage's stdin/stdout/stderr files; the second result
// are the child ends to close after the stage started.
func (p *proc) setupIO(io_ IO) ([3]*os.File, []*os.File, error) {
	var files [3]*os.File
	var closeAfter []*os.File
	fail := func(err error) ([3]*os.File, []*os.File, error) {
		for _, f := range closeAfter {
			f.Close()
		}
		return files, nil, err
	}
	devnull := func(flag int) (*os.File, error) {
		f, err := os.OpenFile(os.DevNull, flag, 0)
		if err == nil {
			closeAfter = append(closeAfter, f)
		}
		return f, err
	}
	switch in := io_.Stdin.(type) {
	case nil:
		f, err := devnull(os.O_RDONLY)
		if err != nil {
			return fail(err)
		}
		files[0] = f
	case *os.File:
		files[0] = in
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		files[0] = pr
		closeAfter = append(closeAfter, pr)
		go func() {
			_, _ = io.Copy(pw, in)
			pw.Close()
		}()
	}
	for i, w := range []io.Writer{io_.Stdout, io_.Stderr} {
		switch out := w.(type) {
		case nil:
			f, err := devnull(os.O_WRONLY)
			if err != nil {
				return fail(err)
			}
			files[i+1] = f
		case *os.File:
			files[i+1] = out
		default:
			pr, pw, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			files[i+1] = pw
			closeAfter = append(closeAfter, pw)
			p.copiers.Add(1)
			go func() {
				defer p.copiers.Done()
				defer pr.Close()
				_, _ = io.Copy(out, pr)
			}()
		}
	}
	return files, closeAfter, nil
}

// handOff runs once the stage has started: it closes the parent's copies
// of the child's ends (closeAfterStart, cfgR, statusW), sends cfg on cfgW
// and reads the stage's first status message. With cfg.HookSync cfgW stays
// open for the hook handshake.
func handOff(ctx context.Context, closeAfterStart *[]*os.File, cfgR, cfgW, statusR, statusW *os.File, cfg *stageConfig) (stageMsg, error) {
	for _, f := range *closeAfterStart {
		f.Close()
	}
	*closeAfterStart = nil
	cfgR.Close()
	statusW.Close()
	if err := json.NewEncoder(cfgW).Encode(cfg); err != nil {
		return stageMsg{}, fmt.Errorf("send config: %w", err)
	}
	if !cfg.HookSync {
		cfgW.Close()
	}
	return readStatus(ctx, statusR)
}

func readStatus(ctx context.Context, r *os.File) (stageMsg, error) {
	type result struct {
		msg stageMsg
		err error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadBytes('\n')
		if len(line) == 0 {
			if err == io.EOF {
				err = nil
			}
			ch <- result{err: err}
			return
		}
		var m stageMsg
		if err := json.Unmarshal(line, &m); err != nil {
			ch <- result{err: fmt.Errorf("bad stage message %q: %w", line, err)}
			return
		}
		ch <- result{msg: m}
	}()
	select {
	case res := <-ch:
		return res.msg, res.err
	case <-ctx.Done():
		return stageMsg{}, ctx.Err()
	}
}

// exitStatus is how a waited-for process ended: its exit code, or 128+N
// and the signal N that killed it; code -1 if the wait failed.
func exitStatus(ps *os.ProcessState, err error) ExitStatus {
	exit := ExitStatus{Code: -1, ExitedAt: time.Now().UTC()}
	if err != nil {
		return exit
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Exited():
			exit.Code = ws.ExitStatus()
		case ws.Signaled():
			exit.Signal = int(ws.Signal())
			exit.Code = 128 + exit.Signal
		}
	}
	return exit
}

// reap waits for the stage/container process and records how it ended.
func (r *Runtime) reap(id string, p *proc, cgRoot, cgPath string) {
	exit := exitStatus(p.cmd.Process.Wait())
	close(p.exited)
	<-p.oomDone // oom events come before the exit event
	if cgPath != "" {
		if m, err := cgroup.New(cgRoot, cgPath); err == nil {
			exit.OOMKilled, _ = m.OOMKilled()
		}
	}
	// With a pid namespace every writer of the pipes is gone now; bound the
	// wait anyway for containers sharing the host's pid namespace.
	copied := make(chan struct{})
	go func() { p.copiers.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	p.exit = exit
	close(p.done)
	defer r.publish(Event{Type: EventExit, ID: id, Pid: p.cmd.Process.Pid, Exit: &exit})
	unlock, err := r.lock(id)
	if err != nil {
		return // deleted meanwhile
	}
	defer unlock()
	if s, err := r.loadState(id); err == nil && s.Exit == nil {
		s.Exit = &exit
		s.Status = StatusStopped
		_ = r.saveState(s)
	}
}

func (r *Runtime) handle(id string) *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[id]
}

// Start releases a created container: its process execs the spec's args.
// With the in-memory handle (same Runtime as Create) Start returns after
// the exec happened, or the exec error.
func (r *Runtime) Start(ctx context.Context, id string) error {
	unlock, err := r.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := r.loadState(id)
	if err != nil {
		return err
	}
	if st := r.currentStatus(s); st != StatusCreated {
		return fmt.Errorf("container %s: cannot start a %s container", id, st)
	}
	fifoPath := filepath.Join(r.dir(id), "exec.fifo")
	if err := releaseFifo(ctx, fifoPath, s); err != nil {
		if p := r.handle(id); p != nil {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			msg, _ := readStatus(sctx, p.status)
			cancel()
			if msg.Error != "" {
				err = fmt.Errorf("%w: %s", err, msg.Error)
			}
			select {
			case <-p.done:
				err = fmt.Errorf("%w (exit code %d)", err, p.exit.Code)
			case <-time.After(100 * time.Millisecond):
			}
		}
		return fmt.Errorf("container %s: %w", id, err)
	}
	_ = os.Remove(fifoPath)
	now := time.Now().UTC()
	s.Started, s.Status = &now, StatusRunning
	if err := r.saveState(s); err != nil {
		return err
	}
	if p := r.handle(id); p != nil {
		// The status pipe closes on exec (CLOEXEC) or carries the exec error.
		msg, err := readStatus(ctx, p.status)
		p.status.Close()
		if err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("container %s: %s", id, msg.Error)
		}
	}
	r.publish(Event{Type: EventStart, ID: id, Pid: s.Pid})
	if spec, err := r.loadSpec(id); err == nil && spec.Hooks != nil {
		r.warnHooks(ctx, "poststart", spec.Hooks.Poststart, ociState(id, s.Bundle, StatusRunning, s.Pid, s.Annotations))
	}
	return nil
}

// releaseFifo opens the exec fifo for reading and waits for the stage's
// byte, watching the stage's pidfd so a dead stage is an error, not a hang.
func releaseFifo(ctx context.Context, path string, s *State) error {
	// Pin the process first: once the fifo is open the container may run
	// and exit at any moment.
	pidfd, err := unix.PidfdOpen(s.Pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", s.Pid, err)
	}
	defer unix.Close(pidfd)
	if !s.alive() {
		return errors.New("stage process is gone")
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open exec fifo: %w", err)
	}
	defer unix.Close(fd)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(pidfd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 50); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll exec fifo: %w", err)
		}
		if fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0 {
			var b [1]byte
			n, err := unix.Read(fd, b[:])
			if n == 1 {
				return nil
			}
			if err != nil && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("read exec fifo: %w", err)
			}
			if n == 0 && fds[0].Revents&unix.POLLHUP != 0 {
				return errors.New("stage closed the exec fifo without starting")
			}
		}
		if fds[1].Revents != 0 && fds[0].Revents&unix.POLLIN == 0 {
			return errors.New("stage exited before start")
		}
	}
}

// Wait blocks until the container's process exits and returns its exit
// status. In another process than the creator it waits on a pidfd and
// returns the persisted status, or ErrExitUnknown if none was recorded.
func (r *Runtime) Wait(ctx context.Context, id string) (ExitStatus, error) {
	if p := r.handle(id); p != nil {
		select {
		case <-p.done:
			return p.exit, nil
		case <-ctx.Done():
			return ExitStatus{}, ctx.Err()
		}
	}
	s, err := r.loadState(id)
	if err != nil {
		return ExitStatus{}, err
	}
	if s.Exit == nil && s.alive() {
		pidfd, err := unix.PidfdOpen(s.Pid, 0)
		if err == nil {
			for s.alive() {
				if err := ctx.Err(); err != nil {
					unix.Close(pidfd)
					return ExitStatus{}, err
				}
				fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
				_, _ = unix.Poll(fds, 100)
			}
			unix.Close(pidfd)
		}
	}
	// Give the creator a moment to persist the status.
	for i := 0; i < 50 && s.Exit == nil; i++ {
		time.Sleep(10 * time.Millisecond)
		if s, err = r.loadState(id); err != nil {
			return ExitStatus{}, err
		}
	}
	if s.Exit != nil {
		return *s.Exit, nil
	}
	return ExitStatus{Code: -1}, fmt.Errorf("container %s: %w", id, ErrExitUnknown)
}

// Signal sends sig to the container's init process (created or running).
func (r *Runtime) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	if p := r.handle(id); p != nil {
		select {
		case <-p.done:
			return fmt.Errorf("container %s: %w", id, ErrNotRunning)
		default:
		}
		// os.Process signals through its pidfd: no PID-reuse race.
		if err := p.cmd.Process.Signal(sig); err != nil {
			return fmt.Errorf("container %s: signal %d: %w", id, sig, err)
		}
		return nil
	}
	s, err := r.loadState(id)
	if err != nil {
		return err
	}
	if s.Exit != nil || !s.alive() {
		return fmt.Errorf("container %s: %w", id, ErrNotRunning)
	}
	pidfd, err := unix.PidfdOpen(s.Pid, 0)
	if err != nil {
		return fmt.Errorf("container %s: pidfd_open: %w", id, err)
	}
	defer unix.Close(pidfd)
	if !s.alive() { // checked after the pidfd pins the process
		return fmt.Errorf("container %s: %w", id, ErrNotRunning)
	}
	if err := unix.PidfdSendSignal(pidfd, sig, nil, 0); err != nil {
		return fmt.Errorf("container %s: signal %d: %w", id, sig, err)
	}
	return nil
}

// Stop sends the stop signal (the image's, else SIGTERM), waits up to
// grace for the process to exit, then kills everything in the container
// (cgroup.kill, or SIGKILL to its pid-namespace init) and waits.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) (ExitStatus, error) {
	s, err := r.loadState(id)
	if err != nil {
		return ExitStatus{}, err
	}
	sig := syscall.SIGTERM
	if s.StopSignal > 0 {
		sig = syscall.Signal(s.StopSignal)
	}
	if err := r.Signal(ctx, id, sig); err != nil && !errors.Is(err, ErrNotRunning) {
		return ExitStatus{}, err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	exit, err := r.Wait(gctx, id)
	cancel()
	if err == nil {
		return exit, nil
	}
	if ctx.Err() != nil {
		return ExitStatus{}, ctx.Err()
	}
	if err := r.kill(ctx, s); err != nil {
		return ExitStatus{}, err
	}
	return r.Wait(ctx, id)
}

func (r *Runtime) kill(ctx context.Context, s *State) error {
	if s.CgroupPath != "" {
		if m, err := cgroup.New(s.CgroupRoot, s.CgroupPath); err == nil && m.Kill() == nil {
			return nil
		}
	}
	if err := r.Signal(ctx, s.ID, syscall.SIGKILL); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	return nil
}

// State returns the persisted state with the live status.
func (r *Runtime) State(ctx context.Context, id string) (*State, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	s, err := r.loadState(id)
	if err != nil {
		return nil, err
	}
	if p := r.handle(id); p != nil && s.Exit == nil {
		select {
		case <-p.done: // reaped, not persisted yet
			exit := p.exit
			s.Exit = &exit
		default:
		}
	}
	s.Status = r.currentStatus(s)
	return s, nil
}

// List returns the states of all containers under the root.
func (r *Runtime) List(ctx context.Context) ([]*State, error) {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return nil, fmt.Errorf("container: list: %w", err)
	}
	var out []*State
	for _, e := range ents {
		if !e.IsDir() || ValidID(e.Name()) != nil {
			continue
		}
		if s, err := r.State(ctx, e.Name()); err == nil {
			out = append(out, s)
		}
	}
	return out, nil
}

// Stats returns the cgroup accounting of a container.
func (r *Runtime) Stats(ctx context.Context, id string) (*cgroup.Stats, error) {
	s, err := r.loadState(id)
	if err != nil {
		return nil, err
	}
	if s.CgroupPath == "" {
		return nil, fmt.Errorf("container %s: no cgroup", id)
	}
	m, err := cgroup.New(s.CgroupRoot, s.CgroupPath)
	if err != nil {
		return nil, err
	}
	return m.Stats()
}

// Delete removes a stopped container (with force: kills it first), its
// cgroup and its state.
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	unlock, err := r.lock(id)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := r.loadState(id)
	if err != nil {
		return err
	}
	if st := r.currentStatus(s); st != StatusStopped {
		if !force {
			return fmt.Errorf("container %s: cannot delete a %s container without force", id, st)
		}
		if err := r.kill(ctx, s); err != nil {
			return err
		}
		if p := r.handle(id); p != nil {
			select {
			case <-p.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else {
			for s.alive() {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if s.CgroupPath != "" {
		m, err := cgroup.New(s.CgroupRoot, s.CgroupPath)
		if err == nil {
			err = m.Destroy()
		}
		if err != nil {
			return fmt.Errorf("container %s: %w", id, err)
		}
	}
	if p := r.handle(id); p != nil {
		p.status.Close()
		r.mu.Lock()
		delete(r.procs, id)
		r.mu.Unlock()
	}
	if spec, err := r.loadSpec(id); err == nil && spec.Hooks != nil {
		r.warnHooks(ctx, "poststop", spec.Hooks.Poststop, ociState(id, s.Bundle, StatusStopped, 0, s.Annotations))
	}
	if err := os.RemoveAll(r.dir(id)); err != nil {
		return fmt.Errorf("container %s: remove state: %w", id, err)
	}
	return nil
}

// signalByName parses a stop signal as an image or a spec annotation
// writes it ("SIGTERM", "TERM", "9", "SIGRTMIN+3"); 0 if it is not one.
func signalByName(s string) int {
	sig, err := signame.Parse(s)
	if err != nil {
		return 0
	}
	return int(sig)
}
