//go:build linux

// Package supervise is the service supervisor of PID 1: it runs the OS
// file's onboot containers in order, then every service as a container,
// each under its own state machine (waiting for dependencies, pulling a
// run-time image, starting, running, exited, backoff, stopped, failed;
// health none, starting, healthy, unhealthy), restarts them by policy with capped exponential
// backoff, checks their health from inside their network namespace, and
// stops them in reverse dependency order.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"cairn.dev/cairn/init/reap"
	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/logs"
	"cairn.dev/cairn/runtime/network"
)

// States of a service.
const (
	StateWaiting  = "waiting"
	StateStarting = "starting"
	StateRunning  = "running"
	StateExited   = "exited"
	StateBackoff  = "backoff"
	StateStopped  = "stopped"
	StateFailed   = "failed"
)

// Health values.
const (
	HealthNone      = "none"
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// Status is a service's state as the API shows it.
type Status struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Health   string    `json:"health"`
	Restarts int       `json:"restarts"`
	PID      int       `json:"pid"`
	ExitCode int       `json:"exit_code"`
	Since    time.Time `json:"since"`
	Message  string    `json:"message"`
}

// Resolver finds an image by the reference written in the OS file.
type Resolver interface {
	Resolve(ref string) (*Image, error)
}

// Options configure a Supervisor.
type Options struct {
	Services map[string]schema.Service
	Onboot   []schema.Onboot
	Runtime  *container.Runtime
	// Network attaches bridge-mode containers; nil makes bridge services
	// fail to start (host and none still work).
	Network *network.Manager
	Images  Resolver
	Reaper  *reap.Reaper
	// StateDir holds per-service directories (overlay upper/work, netns,
	// generated /etc files); VolumesDir holds named volumes; LogDir the
	// services' logs (NAME.log, rotated); NotifyDir the notify sockets.
	StateDir, VolumesDir, LogDir, NotifyDir string
	// Console prints one line on the console (state changes).
	Console func(line string)
	// Logf logs a diagnostic line.
	Logf func(format string, args ...any)
	// Backoff: first delay, cap, and how long a run must last to reset it
	// (defaults 200ms, 30s, 30s).
	BackoffMin, BackoffMax, BackoffReset time.Duration
	// StopTimeout bounds StopAll (default 20s).
	StopTimeout time.Duration
	// CgroupDir is the cgroup holding every container (cgroup.kill after
	// StopAll); "" skips it.
	CgroupDir string
	// Debug logs how long each step of a container start took.
	Debug bool
	// Puller fetches the images of services with pull_policy missing or
	// always (default: a ToolPuller running ToolBinary on ImageStore with
	// DockerConfigDir's credentials); PullBackoffMin is the first delay
	// between failed pull attempts (default 1s, doubling up to BackoffMax).
	Puller         Puller
	PullBackoffMin time.Duration
	// ParallelStarts bounds the container starts under way at once
	// (default 2): a start is CPU-bound (the stage re-executes PID 1's
	// binary), and on a small machine starting everything at once makes
	// the first service wait for all the others.
	ParallelStarts int
	// Online is closed once the machine's network is online; services
	// with wait_for_network wait for it, and so do run-time pulls. Nil
	// counts as online.
	Online <-chan struct{}
}

// Supervisor runs services. Its methods are safe for concurrent use.
type Supervisor struct {
	o Options

	mu       sync.Mutex
	services map[string]*service
	changed  chan struct{} // closed and replaced on every state change
	running  bool
	starts   chan struct{} // semaphore of container starts
	// stopping is set by StopAll: nothing starts after it.
	stopping     bool
	cancelOnboot context.CancelFunc
}

// service is one supervised service.
type service struct {
	name string
	def  schema.Service
	st   Status
	// everStarted: a run reached running; completedOK: the last run exited 0.
	everStarted bool
	ready       bool // READY=1 via sd_notify
	cmds        chan command
	cancel      context.CancelFunc
	done        chan struct{}
	log         *logs.Log
}

type command struct {
	restart bool
	signal  syscall.Signal
	reply   chan error
}

// New returns a Supervisor for o.Services (not started).
func New(o Options) *Supervisor {
	if o.BackoffMin <= 0 {
		o.BackoffMin = 200 * time.Millisecond
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 30 * time.Second
	}
	if o.BackoffReset <= 0 {
		o.BackoffReset = 30 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 20 * time.Second
	}
	if o.Console == nil {
		o.Console = func(string) {}
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Reaper == nil {
		o.Reaper = reap.New()
	}
	if o.ParallelStarts <= 0 {
		o.ParallelStarts = 2
	}
	if o.Puller == nil {
		o.Puller = &ToolPuller{Binary: ToolBinary, Store: ImageStore, DockerConfig: DockerConfigDir, Reaper: o.Reaper}
	}
	if o.PullBackoffMin <= 0 {
		o.PullBackoffMin = time.Second
	}
	sv := &Supervisor{o: o, services: map[string]*service{}, changed: make(chan struct{}), starts: make(chan struct{}, o.ParallelStarts)}
	now := time.Now()
	for name, def := range o.Services {
		sv.services[name] = &service{
			name: name, def: def,
			st:   Status{Name: name, State: StateWaiting, Health: HealthNone, Since: now},
			cmds: make(chan command), done: make(chan struct{}),
		}
	}
	return sv
}

// Run runs the onboot containers in order, then starts every service; it
// returns once they are started (their goroutines run until StopAll or
// until ctx ends).
func (sv *Supervisor) Run(ctx context.Context) {
	sv.mu.Lock()
	if sv.running {
		sv.mu.Unlock()
		return
	}
	sv.running = true
	// StopAll cancels the onboot phase; services have their own contexts.
	octx, cancelOnboot := context.WithCancel(ctx)
	defer cancelOnboot()
	sv.cancelOnboot = cancelOnboot
	stopping := sv.stopping
	sv.mu.Unlock()
	if stopping {
		return
	}
	for i := range sv.o.Onboot {
		if octx.Err() != nil {
			return
		}
		sv.guard("onboot", func() { sv.runOnboot(octx, &sv.o.Onboot[i]) })
	}
	for _, name := range slices.Sorted(maps.Keys(sv.services)) {
		s := sv.services[name]
		sctx, cancel := context.WithCancel(ctx)
		sv.mu.Lock()
		if sv.stopping {
			sv.mu.Unlock()
			cancel()
			return
		}
		s.cancel = cancel
		sv.mu.Unlock()
		go func() {
			defer close(s.done)
			// A panic ends this service's supervision, never PID 1.
			sv.guard("service "+name, func() { sv.runService(sctx, s) })
		}()
	}
}

func (sv *Supervisor) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			sv.o.Logf("panic in %s: %v\n%s", what, r, debug.Stack())
		}
	}()
	f()
}

// Services returns the status of every service, sorted by name.
func (sv *Supervisor) Services() []Status {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	out := make([]Status, 0, len(sv.services))
	for _, name := range slices.Sorted(maps.Keys(sv.services)) {
		out = append(out, sv.services[name].st)
	}
	return out
}

// Service returns one service's status.
func (sv *Supervisor) Service(name string) (Status, bool) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	s, ok := sv.services[name]
	if !ok {
		return Status{}, false
	}
	return s.st, true
}

// ErrNoService is returned for an unknown service name.
var ErrNoService = errors.New("no such service")

// Restart restarts a service now: a running one is stopped gracefully and
// started again; one in backoff, exited or failed starts at once.
func (sv *Supervisor) Restart(ctx context.Context, name string) error {
	return sv.send(ctx, name, command{restart: true})
}

// Kill sends sig to a service's main process (for tests and operators;
// the supervisor then applies the restart policy as for any exit).
func (sv *Supervisor) Kill(ctx context.Context, name string, sig syscall.Signal) error {
	return sv.send(ctx, name, command{signal: sig})
}

func (sv *Supervisor) send(ctx context.Context, name string, c command) error {
	sv.mu.Lock()
	s, ok := sv.services[name]
	sv.mu.Unlock()
	if !ok {
		return fmt.Errorf("service %q: %w", name, ErrNoService)
	}
	c.reply = make(chan error, 1)
	select {
	case s.cmds <- c:
	case <-s.done:
		return fmt.Errorf("service %s: not supervised any more", name)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// update changes a service's status under the lock and wakes waiters.
func (sv *Supervisor) update(s *service, f func(st *Status)) Status {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	old := s.st
	f(&s.st)
	if s.st.State != old.State {
		s.st.Since = time.Now()
		if s.st.State == StateRunning {
			s.everStarted = true
		}
	}
	close(sv.changed)
	sv.changed = make(chan struct{})
	return s.st
}

func (sv *Supervisor) console(format string, args ...any) {
	sv.o.Console(fmt.Sprintf(format, args...))
}

// depsMet reports whether s's dependencies are satisfied, and if not, why.
func (sv *Supervisor) depsMet(s *service) (bool, string, <-chan struct{}) {
	if s.def.WaitForNetwork && sv.o.Online != nil {
		select {
		case <-sv.o.Online:
		default:
			return false, "waiting for the network to be online", sv.o.Online
		}
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	for _, dep := range slices.Sorted(maps.Keys(s.def.DependsOn)) {
		d, ok := sv.services[dep]
		if !ok {
			continue // validation rejects this; do not wait forever
		}
		cond := s.def.DependsOn[dep].Condition
		switch cond {
		case schema.ConditionHealthy:
			if d.def.Healthcheck == nil && !d.def.Notify {
				if !d.everStarted {
					return false, "waiting for " + dep + " to start", sv.changed
				}
			} else if d.st.Health != HealthHealthy {
				return false, "waiting for " + dep + " to be healthy", sv.changed
			}
		case schema.ConditionCompleted:
			if d.st.State != StateExited || d.st.ExitCode != 0 {
				return false, "waiting for " + dep + " to complete successfully", sv.changed
			}
		default:
			if !d.everStarted {
				return false, "waiting for " + dep + " to start", sv.changed
			}
		}
	}
	return true, "", nil
}

// runService is a service's state machine.
func (sv *Supervisor) runService(ctx context.Context, s *service) {
	failures := 0 // consecutive restarts, for the backoff
	for {
		// Waiting for dependencies.
		for {
			ok, why, ch := sv.depsMet(s)
			if ok {
				break
			}
			sv.update(s, func(st *Status) { st.State, st.Message = StateWaiting, why })
			select {
			case <-ctx.Done():
				sv.setStopped(s, "")
				return
			case <-ch:
			case c := <-s.cmds:
				c.reply <- fmt.Errorf("service %s: still %s", s.name, why)
			}
		}
		started := time.Now()
		res := sv.runOnce(ctx, s)
		if ctx.Err() != nil {
			why := ""
			if res.err == nil {
				why = describeExit("exited", res.exit)
			}
			sv.setStopped(s, why)
			return
		}
		if res.restartNow {
			sv.update(s, func(st *Status) { st.Restarts++ })
			failures = 0
			continue
		}
		code := res.exit.Code
		if res.err != nil {
			code = -1
		}
		if time.Since(started) >= sv.o.BackoffReset {
			failures = 0
		}
		if !sv.shouldRestart(s, code, failures) {
			st := sv.update(s, func(st *Status) {
				st.PID, st.ExitCode = 0, code
				st.State = StateExited
				if code != 0 {
					st.State = StateFailed
				}
				if res.err != nil {
					st.Message = res.err.Error()
				}
			})
			if res.err != nil {
				sv.console("service %s: failed: %v", s.name, res.err)
			} else {
				sv.console("service %s: %s", s.name, describeExit(st.State, res.exit))
			}
			// Stay down until a restart request or the end.
			if !sv.waitForRestart(ctx, s) {
				sv.setStopped(s, "")
				return
			}
			sv.update(s, func(st *Status) { st.Restarts++ })
			failures = 0
			continue
		}
		delay := sv.backoff(failures)
		failures++
		st := sv.update(s, func(st *Status) {
			st.State, st.PID, st.ExitCode = StateBackoff, 0, code
			st.Restarts++
			if res.err != nil {
				st.Message = res.err.Error()
			} else {
				st.Message = describeExit("exited", res.exit)
			}
		})
		if res.err != nil {
			sv.console("service %s: failed to start: %v; restarting in %v (restart %d)", s.name, res.err, delay, st.Restarts)
		} else {
			sv.console("service %s: %s, restarting in %v (restart %d)", s.name, describeExit("exited", res.exit), delay, st.Restarts)
		}
		t := time.NewTimer(delay)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				sv.setStopped(s, "")
				return
			case <-t.C:
				break wait
			case c := <-s.cmds:
				if c.restart {
					c.reply <- nil
					t.Stop()
					break wait
				}
				c.reply <- fmt.Errorf("service %s: not running (in backoff)", s.name)
			}
		}
	}
}

func describeExit(verb string, e container.ExitStatus) string {
	msg := fmt.Sprintf("%s with code %d", verb, e.Code)
	if e.Signal > 0 {
		msg += fmt.Sprintf(" (signal %s)", syscall.Signal(e.Signal))
	}
	if e.OOMKilled {
		msg += " (out of memory: killed by the cgroup memory limit)"
	}
	return msg
}

// setStopped records that a service was stopped; why (may be "") says how
// its last run ended.
func (sv *Supervisor) setStopped(s *service, why string) {
	sv.update(s, func(st *Status) { st.State, st.PID, st.Message = StateStopped, 0, why })
	if why != "" {
		sv.console("service %s: stopped (%s)", s.name, why)
		return
	}
	sv.console("service %s: stopped", s.name)
}

// waitForRestart waits for a restart command; false if ctx ended.
func (sv *Supervisor) waitForRestart(ctx context.Context, s *service) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case c := <-s.cmds:
			if c.restart {
				c.reply <- nil
				return true
			}
			c.reply <- fmt.Errorf("service %s: not running", s.name)
		}
	}
}

// shouldRestart applies the restart policy to an exit with code after
// failures consecutive restarts.
func (sv *Supervisor) shouldRestart(s *service, code, failures int) bool {
	p := s.def.Restart
	if p.Mode == "" {
		p = parseRestart(s.def.RestartRaw)
	}
	switch p.Mode {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		return code != 0 && (p.MaxRetries == 0 || failures < p.MaxRetries)
	}
	return false
}

// parseRestart is the fallback when the schema did not fill Restart.
func parseRestart(raw string) schema.RestartPolicy {
	switch {
	case raw == "always" || raw == "unless-stopped":
		return schema.RestartPolicy{Mode: raw}
	case raw == "on-failure":
		return schema.RestartPolicy{Mode: raw}
	case len(raw) > len("on-failure:") && raw[:len("on-failure:")] == "on-failure:":
		n := 0
		for _, c := range raw[len("on-failure:"):] {
			if c < '0' || c > '9' || n > 1e6 {
				return schema.RestartPolicy{Mode: "no"}
			}
			n = n*10 + int(c-'0')
		}
		return schema.RestartPolicy{Mode: "on-failure", MaxRetries: n}
	}
	return schema.RestartPolicy{Mode: "no"}
}

// backoff is the delay before restart number failures+1: BackoffMin
// doubling up to BackoffMax.
func (sv *Supervisor) backoff(failures int) time.Duration {
	d := sv.o.BackoffMin
	for i := 0; i < failures && d < sv.o.BackoffMax; i++ {
		d *= 2
	}
	return min(d, sv.o.BackoffMax)
}

// StopAll stops every service in reverse dependency order (a service
// stops once everything depending on it has stopped), each with its stop
// signal and grace period, bounded by Options.StopTimeout; then it kills
// whatever is left in the containers' cgroup.
func (sv *Supervisor) StopAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, sv.o.StopTimeout)
	defer cancel()
	sv.mu.Lock()
	sv.stopping = true
	if sv.cancelOnboot != nil {
		sv.cancelOnboot()
	}
	svcs := maps.Clone(sv.services)
	sv.mu.Unlock()
	dependants := map[string][]*service{}
	for _, s := range svcs {
		for dep := range s.def.DependsOn {
			dependants[dep] = append(dependants[dep], s)
		}
	}
	stopped := make(map[string]chan struct{}, len(svcs))
	for name := range svcs {
		stopped[name] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for name, s := range svcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(stopped[name])
			for _, d := range dependants[name] {
				select {
				case <-stopped[d.name]:
				case <-ctx.Done():
				}
			}
			sv.mu.Lock()
			cancelSvc := s.cancel
			sv.mu.Unlock()
			if cancelSvc == nil { // never started
				return
			}
			cancelSvc()
			select {
			case <-s.done:
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	// The logs live on /var, which the shutdown unmounts next.
	for _, s := range svcs {
		select {
		case <-s.done:
			sv.mu.Lock()
			lg := s.log
			sv.mu.Unlock()
			if lg != nil {
				lg.Close()
			}
		default:
		}
	}
	if sv.o.CgroupDir != "" {
		if err := os.WriteFile(filepath.Join(sv.o.CgroupDir, "cgroup.kill"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			sv.o.Logf("kill %s: %v", sv.o.CgroupDir, err)
		}
	}
}

// SetNetwork sets the network manager before Run (it is made once the
// kernel modules it needs are loaded).
func (sv *Supervisor) SetNetwork(m *network.Manager) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.o.Network = m
}
