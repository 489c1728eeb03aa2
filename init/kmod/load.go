package kmod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Loader inserts one module file into the kernel. It must treat "already
// loaded" as success.
type Loader interface {
	Load(ctx context.Context, path string) error
}

// FinitLoader loads with finit_module(2).
type FinitLoader struct{}

// Load implements Loader. A module already live in /sys/module is skipped:
// finit_module would verify its signature and relocate it before failing
// with EEXIST, which costs tens of milliseconds under TCG.
func (FinitLoader) Load(_ context.Context, path string) error {
	if b, err := os.ReadFile("/sys/module/" + Name(path) + "/initstate"); err == nil && strings.TrimSpace(string(b)) == "live" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags = 4 // MODULE_INIT_COMPRESSED_FILE
	}
	if err := unix.FinitModule(int(f.Fd()), "", flags); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("kmod: finit_module %s: %w", path, err)
	}
	return nil
}

// Result is the outcome of one module load.
type Result struct {
	Module string
	Start  time.Duration // CLOCK_BOOTTIME-style offset from the Set's clock
	Took   time.Duration
	Err    error
}

type job struct {
	done chan struct{}
	res  Result
}

// Set loads modules of one Index, each exactly once, in parallel: every
// module gets a goroutine that waits for its dependencies and then loads.
// A Set is safe for concurrent use.
type Set struct {
	ix     *Index
	loader Loader
	mu     sync.Mutex
	jobs   map[string]*job
	now    func() time.Duration
}

// NewSet returns a Set loading modules of ix through l.
func NewSet(ix *Index, l Loader) *Set {
	t0 := time.Now()
	return &Set{ix: ix, loader: l, jobs: map[string]*job{}, now: func() time.Duration { return time.Since(t0) }}
}

// Load loads the named modules (names or aliases) and their dependencies and
// waits for them. It returns the results of the modules this call waited for,
// in no particular order, and an error joining the failures.
func (s *Set) Load(ctx context.Context, names []string) ([]Result, error) {
	return s.load(ctx, names, true)
}

// load requests names (resolved as names or aliases when resolve is set,
// else taken as module names) and waits for them.
func (s *Set) load(ctx context.Context, names []string, resolve bool) ([]Result, error) {
	var (
		jobs []*job
		errs []error
	)
	s.mu.Lock()
	seen := map[*job]bool{}
	for _, n := range names {
		mods := []string{Name(n)}
		if resolve {
			mods = s.ix.Resolve(n)
			if len(mods) == 0 && !s.ix.BuiltinProvides(n) {
				errs = append(errs, fmt.Errorf("kmod: module %q not found", n))
			}
		}
		for _, m := range mods {
			for _, j := range s.requestLocked(ctx, m, nil) {
				if !seen[j] {
					seen[j] = true
					jobs = append(jobs, j)
				}
			}
		}
	}
	s.mu.Unlock()
	var res []Result
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return res, fmt.Errorf("kmod: %w", ctx.Err())
		}
		res = append(res, j.res)
		if j.res.Err != nil {
			errs = append(errs, j.res.Err)
		}
	}
	return res, errors.Join(errs...)
}

// requestLocked creates (or finds) the job of module m and of its
// dependencies, returning all of them. stack detects dependency cycles.
func (s *Set) requestLocked(ctx context.Context, m string, stack []string) []*job {
	for _, st := range stack {
		if st == m {
			j := &job{done: make(chan struct{}), res: Result{Module: m}}
			j.res.Err = fmt.Errorf("kmod: dependency cycle at %s", m)
			close(j.done)
			return []*job{j}
		}
	}
	if j, ok := s.jobs[m]; ok {
		return []*job{j}
	}
	j := &job{done: make(chan struct{}), res: Result{Module: m}}
	s.jobs[m] = j
	var deps, soft []*job
	all := []*job{j}
	stack = append(stack, m)
	for _, d := range s.ix.Deps(m) {
		if s.ix.Builtin(d) {
			continue
		}
		dj := s.requestLocked(ctx, d, stack)
		deps = append(deps, dj[0])
		all = append(all, dj...)
	}
	for _, d := range s.ix.SoftDeps(m) {
		dj := s.requestLocked(ctx, d, stack)
		soft = append(soft, dj[0])
		all = append(all, dj...)
	}
	path, ok := s.ix.Path(m)
	// A job outlives the request that started it: it is shared by every
	// later request for m, and finit_module cannot be interrupted anyway.
	// So the caller's cancellation only ends the caller's wait (in Load),
	// never the job, and no later request inherits a cancelled result.
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(j.done)
		// PID 1 must survive a bug here: a panic fails this module only.
		defer func() {
			if x := recover(); x != nil {
				j.res.Err = fmt.Errorf("kmod: %s: panic: %v", m, x)
			}
		}()
		for _, d := range deps {
			select {
			case <-d.done:
				if d.res.Err != nil {
					j.res.Err = fmt.Errorf("kmod: %s: dependency %s failed", m, d.res.Module)
					return
				}
			case <-ctx.Done():
				j.res.Err = fmt.Errorf("kmod: %s: %w", m, ctx.Err())
				return
			}
		}
		for _, d := range soft {
			select {
			case <-d.done: // failure of a soft dependency is not ours
			case <-ctx.Done():
				j.res.Err = fmt.Errorf("kmod: %s: %w", m, ctx.Err())
				return
			}
		}
		if !ok {
			j.res.Err = fmt.Errorf("kmod: module %s not in modules.dep", m)
			return
		}
		start := time.Now()
		j.res.Start = s.now()
		j.res.Err = s.loader.Load(ctx, path)
		j.res.Took = time.Since(start)
	}()
	return all
}

// Requested reports whether the module was already requested from this Set.
func (s *Set) Requested(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.jobs[Name(name)]
	return ok
}

// Count returns how many modules have been requested from this Set (loaded,
// loading or failed).
func (s *Set) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

// SetClock sets the clock used for Result.Start (e.g. CLOCK_BOOTTIME).
func (s *Set) SetClock(now func() time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Results returns the results of the finished loads, sorted by start time.
func (s *Set) Results() []Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Result
	for _, j := range s.jobs {
		select {
		case <-j.done:
			out = append(out, j.res)
		default:
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Start < out[b].Start })
	return out
}
