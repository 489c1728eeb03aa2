package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"cairn.dev/cairn/init/bootcount"
	"cairn.dev/cairn/internal/atomicfile"
	"cairn.dev/cairn/update/fetch"
)

// Clock is the agent's time: injected so tests run without waiting.
type Clock = fetch.Clock

// RealClock is the system clock.
type RealClock = fetch.RealClock

// Health is what a trial boot must show before it is blessed.
type Health struct {
	// Services returns nil when every service with a health check is
	// healthy, or an error naming one that is not (nil func: no services
	// to wait for).
	Services func(ctx context.Context) error
	// Repository returns nil when the update repository is reachable (nil
	// func: not required).
	Repository func(ctx context.Context) error
}

// Stages a trial boot can fail in (Outcome.Stage, and reports).
const (
	StageHealth     = "health"     // a service never stayed healthy long enough
	StageRepository = "repository" // the repository was not reachable
	StageBoot       = "boot"       // the new version never reached the agent (boot counting fell back)
	StageBless      = "bless"      // renaming the entry failed
)

// Trial decides whether a counted (trial) boot is good.
type Trial struct {
	// ESP is where the ESP is mounted (/efi).
	ESP string
	// Vars are the loader variables of this boot (bootcount.ReadVars).
	Vars bootcount.Vars
	// HealthyFor is how long the health predicate must hold without a
	// break before the boot is blessed.
	HealthyFor time.Duration
	// Timeout bounds the whole assessment; when it passes without a
	// blessing the entry is marked bad.
	Timeout time.Duration
	// Poll is the interval between checks (default 1s).
	Poll  time.Duration
	Clock Clock
}

// Outcome is what Assess decided.
type Outcome struct {
	// Trial is false when this boot was not counted: nothing was decided.
	Trial bool
	// Committed: the entry was blessed (renamed without its counter).
	Committed bool
	// RolledBack: the entry was marked bad (+0-N) and the caller must
	// reboot into the previous version.
	RolledBack bool
	// Stage and Reason say why a trial failed.
	Stage, Reason string
	// Entry is the entry's file name before, NewEntry after the decision.
	Entry, NewEntry string
}

// Assess watches a trial boot: it blesses the entry once h.Services has
// held for HealthyFor and h.Repository answers, or marks it bad when
// Timeout passes first. A boot that is not counted is no trial.
func (t *Trial) Assess(ctx context.Context, h Health) (Outcome, error) {
	if t.Vars.BootCountPath == "" {
		return Outcome{}, nil
	}
	rel, err := bootcount.ESPPath(t.Vars.BootCountPath)
	if err != nil {
		return Outcome{}, err
	}
	base := path.Base(rel)
	if _, _, _, ok := bootcount.Counter(base); !ok {
		return Outcome{}, fmt.Errorf("trial: %q has no boot counter", base)
	}
	clock := t.Clock
	if clock == nil {
		clock = RealClock{}
	}
	poll := t.Poll
	if poll <= 0 {
		poll = time.Second
	}
	out := Outcome{Trial: true, Entry: base}
	start := clock.Now()
	var healthySince time.Time
	out.Stage, out.Reason = StageHealth, "not checked yet"
	for {
		now := clock.Now()
		serr := call(ctx, h.Services)
		switch {
		case serr != nil:
			healthySince = time.Time{}
			out.Stage, out.Reason = StageHealth, serr.Error()
		case healthySince.IsZero():
			healthySince = now
			fallthrough
		default:
			if now.Sub(healthySince) < t.HealthyFor {
				out.Stage, out.Reason = StageHealth, fmt.Sprintf("healthy for %v of %v", now.Sub(healthySince), t.HealthyFor)
				break
			}
			if rerr := call(ctx, h.Repository); rerr != nil {
				out.Stage, out.Reason = StageRepository, rerr.Error()
				break
			}
			_, newName, err := bootcount.Bless(t.ESP, t.Vars.BootCountPath)
			if err != nil {
				return Outcome{Trial: true, Entry: base, Stage: StageBless, Reason: err.Error()}, fmt.Errorf("trial: %w", err)
			}
			return Outcome{Trial: true, Committed: true, Entry: base, NewEntry: newName}, nil
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if now.Sub(start) >= t.Timeout {
			newName, err := MarkBad(t.ESP, t.Vars.BootCountPath)
			if err != nil {
				return out, fmt.Errorf("trial: %s failed (%s: %s), and marking it bad failed: %w", base, out.Stage, out.Reason, err)
			}
			out.RolledBack, out.NewEntry = true, newName
			return out, nil
		}
		if err := clock.Sleep(ctx, poll); err != nil {
			return out, err
		}
	}
}

func call(ctx context.Context, f func(context.Context) error) error {
	if f == nil {
		return ctx.Err()
	}
	return f(ctx)
}

// BadName is a counted entry's name with no tries left, so systemd-boot
// sorts it after every other entry: cairn-1.0+2-1.efi -> cairn-1.0+0-1.efi.
func BadName(name string) (string, error) {
	blessed, _, done, ok := bootcount.Counter(name)
	if !ok {
		return "", fmt.Errorf("%q has no boot counter", name)
	}
	ext := path.Ext(blessed)
	ctr := "+0"
	if done > 0 {
		ctr += "-" + strconv.Itoa(done)
	}
	return blessed[:len(blessed)-len(ext)] + ctr + ext, nil
}

// MarkBad renames the counted entry at the EFI path countPath, on the ESP
// mounted at esp, to its BadName and fsyncs the directory. It returns the
// new name. An entry already marked bad is left alone.
func MarkBad(esp, countPath string) (string, error) {
	rel, err := bootcount.ESPPath(countPath)
	if err != nil {
		return "", err
	}
	dir, base := path.Split(rel)
	bad, err := BadName(base)
	if err != nil {
		return "", fmt.Errorf("mark bad: %w", err)
	}
	d := filepath.Join(esp, filepath.FromSlash(dir))
	src, dst := filepath.Join(d, base), filepath.Join(d, bad)
	if src == dst {
		return bad, nil
	}
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		if _, err2 := os.Lstat(dst); err2 == nil {
			return bad, nil
		}
		return "", fmt.Errorf("mark bad: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		return "", fmt.Errorf("mark bad: %w", err)
	}
	if err := atomicfile.SyncRenamed(dst); err != nil { // vfat: SyncDir alone leaves the entry empty
		return bad, fmt.Errorf("mark bad: %w", err)
	}
	return bad, nil
}
