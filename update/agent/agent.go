// Package agent is the core of Cairn's update agent, the part of PID 1
// that keeps a machine current: it checks a TUF repository (update/tuf),
// picks the newest version its channel and rollout wave allow, writes it
// into the ROOT slot that is not booted in a power-cut-safe order
// (Install), reboots according to a policy (immediately, in a maintenance
// window, or holding a FleetLock lease), judges the trial boot of the new
// version (Trial.Assess: bless it, or mark it bad and go back), reports
// outcomes to the update server, and keeps its state in a small file on
// STATE.
//
// The package is guest-usable: it imports no host-only package. The disk,
// the ESP, the loader variables, the health of services and rebooting are
// all passed in, so the host tests use files in their place.
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"cairn.dev/cairn/update/chunk"
	"cairn.dev/cairn/update/fetch"
	"cairn.dev/cairn/update/tuf"
)

// Repo is the part of *tuf.Client the agent uses.
type Repo interface {
	Refresh(ctx context.Context) error
	Versions(channel, osName string) ([]tuf.Version, error)
	Download(ctx context.Context, name string, w io.Writer) error
	DownloadFile(ctx context.Context, name, dst string) error
	Fetch(ctx context.Context, name string, limit int64) ([]byte, error)
}

// Config configures an Agent.
type Config struct {
	OS, Channel string
	// Repo is the verified repository; RepoURL its base URL (chunks are
	// fetched from RepoURL/chunks/…, verified through the chunk index).
	Repo    Repo
	RepoURL string
	// Fetch tunes chunk downloads (proxy, bandwidth limit, retries).
	Fetch fetch.Options
	// API reaches the update server for reports and the rollout pause
	// list (nil: neither).
	API *API
	// MachineID seeds the rollout wave (see Seed).
	MachineID string
	// BootedVersion and BootedSlot describe the running system; BootedSize
	// is the size of its root image (VerityImageSize of its
	// cairn.verity.blocks; 0: unknown).
	BootedVersion, BootedSlot string
	BootedSize                int64
	// Slots are ROOT-A and ROOT-B, by name.
	Slots map[string]*Slot
	// ESP is where the ESP is mounted; StatePath the state file; WorkDir a
	// directory on STATE for downloads.
	ESP, StatePath, WorkDir string
	// Interval between checks, plus up to Jitter at random.
	Interval, Jitter time.Duration
	// Policy decides when to reboot (default Immediate); Reboot reboots
	// (it may return, as in tests).
	Policy RebootPolicy
	Reboot func(ctx context.Context) error
	// Trial judges a trial boot (its ESP defaults to ESP), with Health.
	Trial  Trial
	Health Health
	// Check, when it receives, makes the agent check now.
	Check <-chan struct{}
	// Log prints a line on the console (nil: nothing).
	Log   func(string)
	Clock Clock
	// Rand returns a number in [0,1) for the jitter (default math/rand/v2).
	Rand func() float64
}

// Agent runs updates.
type Agent struct {
	cfg   Config
	seed  float64
	state State
}

// New checks cfg.
func New(cfg Config) (*Agent, error) {
	if err := tuf.ValidOSName(cfg.OS); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := tuf.ValidChannel(cfg.Channel); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.Repo == nil || cfg.RepoURL == "" {
		return nil, errors.New("agent: no repository")
	}
	if cfg.MachineID == "" {
		return nil, errors.New("agent: no machine id")
	}
	if _, err := OtherSlot(cfg.BootedSlot); err != nil {
		return nil, fmt.Errorf("agent: booted %w", err)
	}
	if err := tuf.ValidVersion(cfg.BootedVersion); err != nil {
		return nil, fmt.Errorf("agent: booted %w", err)
	}
	if cfg.Slots["A"] == nil || cfg.Slots["B"] == nil {
		return nil, errors.New("agent: slots A and B are required")
	}
	if cfg.ESP == "" || cfg.StatePath == "" || cfg.WorkDir == "" {
		return nil, errors.New("agent: ESP, StatePath and WorkDir are required")
	}
	if cfg.Reboot == nil {
		return nil, errors.New("agent: no Reboot function")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Policy == nil {
		cfg.Policy = Immediate{}
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Trial.ESP == "" {
		cfg.Trial.ESP = cfg.ESP
	}
	if cfg.Trial.Clock == nil {
		cfg.Trial.Clock = cfg.Clock
	}
	return &Agent{cfg: cfg, seed: Seed(cfg.MachineID)}, nil
}

// Seed is a machine's position in rollout waves: a number in [0,1) derived
// from its machine id, fixed for the machine's life.
func Seed(machineID string) float64 {
	sum := sha256.Sum256([]byte("cairn update wave\x00" + machineID))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}

// FleetLockID is the FleetLock client id of a machine: derived from its
// machine id, so the server does not learn the id itself.
func FleetLockID(machineID string) string {
	sum := sha256.Sum256([]byte("cairn fleetlock\x00" + machineID))
	return hex.EncodeToString(sum[:16])
}

// State returns the agent's current state.
func (a *Agent) State() State { return a.state }

func (a *Agent) logf(format string, args ...any) {
	if a.cfg.Log != nil {
		a.cfg.Log(fmt.Sprintf(format, args...))
	}
}

// set changes and saves the state, and shows it on the console.
func (a *Agent) set(s State) {
	s.Updated = a.cfg.Clock.Now().UTC()
	show := s.String() != a.state.String()
	a.state = s
	if err := SaveState(a.cfg.StatePath, s); err != nil {
		a.logf("update: %v", err)
	}
	if show {
		a.logf("update: %s", s)
	}
}

// Run is the agent: it settles what the last boot means (a trial to judge,
// a rollback to report), then checks for updates every Interval (plus
// jitter) or when asked, until ctx ends or it has called Reboot.
func (a *Agent) Run(ctx context.Context) error {
	st, err := LoadState(a.cfg.StatePath)
	if err != nil {
		a.logf("update: %v (starting from idle)", err)
	}
	a.state = st
	rebooted, err := a.afterBoot(ctx)
	if err != nil {
		return err
	}
	if rebooted {
		return nil
	}
	for {
		a.flushReport(ctx)
		rebooted, err := a.CheckOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			a.logf("update: %v", err)
		}
		if rebooted {
			return nil
		}
		wait := a.cfg.Interval + time.Duration(a.cfg.Rand()*float64(a.cfg.Jitter))
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.cfg.Clock.Sleep(wctx, wait) }()
		select {
		case <-a.cfg.Check:
		case <-done:
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// afterBoot reconciles the saved state with the version that booted.
func (a *Agent) afterBoot(ctx context.Context) (rebooted bool, err error) {
	a.flushReport(ctx)
	st := a.state
	booted := a.cfg.BootedVersion
	if a.cfg.Trial.Vars.BootCountPath != "" {
		// A counted boot is judged whatever the state file says (a power
		// cut may have come between the UKI's rename and the state
		// update, or STATE lost the file): left alone, boot counting would
		// roll back a good version.
		return a.judgeTrial(ctx)
	}
	switch st.Phase {
	case PhaseRebooting, PhaseOnTrial, PhaseWritten, PhaseWaiting:
		if st.Version == booted {
			// Not counted (no EFI, or blessed by someone else): nothing
			// left to judge.
			return a.judgeTrial(ctx)
		}
		if st.Phase == PhaseRebooting || st.Phase == PhaseOnTrial {
			// We rebooted into st.Version and are back on the old
			// version without PID 1 of the new one deciding it: boot
			// counting fell back.
			reason := fmt.Sprintf("booted %s again instead of %s: the new version did not come up", booted, st.Version)
			a.rolledBack(st, StageBoot, reason)
		}
		// Written or waiting: the reboot never happened; check again.
	case PhaseDownloading, PhaseChecking:
		// Interrupted: the next check resumes (Install reuses what the
		// slot already holds).
	}
	a.flushReport(ctx)
	if err := a.cfg.Policy.Release(ctx); err != nil {
		a.logf("update: release reboot lease: %v", err)
	}
	return false, nil
}

func (a *Agent) judgeTrial(ctx context.Context) (bool, error) {
	st := a.state
	if st.Version != a.cfg.BootedVersion {
		st.Version, st.FromVersion = a.cfg.BootedVersion, ""
	}
	st.Phase, st.Stage, st.Reason, st.Percent = PhaseOnTrial, "", "", 0
	a.set(st)
	out, err := a.cfg.Trial.Assess(ctx, a.cfg.Health)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	switch {
	case err != nil && !out.RolledBack:
		// Could not bless (or could not mark bad): leave the counter to
		// systemd-boot, which falls back after the remaining tries.
		st.Phase, st.Stage, st.Reason = PhaseFailed, out.Stage, err.Error()
		a.set(st)
		a.report(ctx, ReportFailed, st)
		return false, nil
	case out.RolledBack:
		a.rolledBack(st, out.Stage, out.Reason)
		a.flushReport(ctx)
		a.logf("update: %s marked bad (%s), rebooting into %s", out.Entry, out.NewEntry, st.FromVersion)
		if err := a.cfg.Reboot(ctx); err != nil {
			return false, fmt.Errorf("agent: reboot after rollback: %w", err)
		}
		return true, nil
	}
	if out.Trial {
		a.logf("update: blessed %s -> %s", out.Entry, out.NewEntry)
	}
	st.Phase = PhaseCommitted
	a.set(st)
	a.report(ctx, ReportCommitted, st)
	a.flushReport(ctx)
	if err := a.cfg.Policy.Release(ctx); err != nil {
		a.logf("update: release reboot lease: %v", err)
	}
	return false, nil
}

func (a *Agent) rolledBack(st State, stage, reason string) {
	st.Phase, st.Stage, st.Reason = PhaseRolledBack, stage, reason
	if !slices.Contains(st.Bad, st.Version) {
		st.Bad = append(st.Bad, st.Version)
	}
	st.Pending = a.newReport(ReportRolledBack, st)
	a.set(st)
}

func (a *Agent) newReport(outcome string, st State) *Report {
	id, group := FleetLockID(a.cfg.MachineID), ""
	if a.cfg.API != nil {
		if a.cfg.API.ID != "" {
			id = a.cfg.API.ID
		}
		group = a.cfg.API.Group
	}
	return &Report{ID: id, Group: group, OS: a.cfg.OS, Channel: a.cfg.Channel,
		FromVersion: st.FromVersion, ToVersion: st.Version, Outcome: outcome,
		Stage: st.Stage, Message: st.Reason}
}

// report queues a report and tries to deliver it.
func (a *Agent) report(ctx context.Context, outcome string, st State) {
	st.Pending = a.newReport(outcome, st)
	a.set(st)
	a.flushReport(ctx)
}

// flushReport delivers the pending report, keeping it on failure.
func (a *Agent) flushReport(ctx context.Context) {
	if a.state.Pending == nil || a.cfg.API == nil {
		return
	}
	if err := a.cfg.API.SendReport(ctx, *a.state.Pending); err != nil {
		a.logf("update: %v (will retry)", err)
		return
	}
	st := a.state
	st.Pending = nil
	a.set(st)
}

// CheckOnce checks the repository and installs the newest allowed
// version, then reboots by the policy. It reports whether it called Reboot.
func (a *Agent) CheckOnce(ctx context.Context) (bool, error) {
	prev := a.state
	a.set(State{Phase: PhaseChecking, Bad: prev.Bad, Pending: prev.Pending})
	v, err := a.pick(ctx)
	if err != nil {
		st := a.state
		st.Phase, st.Stage, st.Reason = PhaseFailed, "check", err.Error()
		a.set(st)
		return false, err
	}
	if v == nil {
		st := a.state
		st.Phase = PhaseIdle
		if prev.Phase == PhaseCommitted || prev.Phase == PhaseRolledBack {
			st = prev // keep showing the last outcome
		}
		a.set(st)
		return false, nil
	}
	st := a.state
	st.Phase, st.Version, st.FromVersion, st.Percent = PhaseDownloading, v.Version, a.cfg.BootedVersion, 0
	a.set(st)
	if err := a.install(ctx, v); err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		st := a.state
		st.Phase, st.Stage, st.Reason = PhaseFailed, "install", err.Error()
		var se *StepError
		if errors.As(err, &se) {
			st.Stage = "install:" + string(se.Step)
		}
		a.set(st)
		a.report(ctx, ReportFailed, st)
		return false, err
	}
	st = a.state
	st.Phase, st.Percent = PhaseWritten, 0
	a.set(st)
	waiting := false
	err = a.cfg.Policy.Wait(ctx, a.cfg.Clock, func(why string) {
		if !waiting {
			st := a.state
			st.Phase, st.Reason = PhaseWaiting, why
			a.set(st)
			waiting = true
		}
	})
	if err != nil {
		return false, fmt.Errorf("agent: reboot policy %s: %w", a.cfg.Policy, err)
	}
	st = a.state
	st.Phase, st.Reason = PhaseRebooting, ""
	a.set(st)
	if err := a.cfg.Reboot(ctx); err != nil {
		return false, fmt.Errorf("agent: reboot: %w", err)
	}
	return true, nil
}

// pick returns the newest version the machine may install, or nil.
func (a *Agent) pick(ctx context.Context) (*tuf.Version, error) {
	if err := a.cfg.Repo.Refresh(ctx); err != nil {
		return nil, err
	}
	vs, err := a.cfg.Repo.Versions(a.cfg.Channel, a.cfg.OS)
	if err != nil {
		return nil, err
	}
	var paused []string
	if a.cfg.API != nil {
		paused, err = a.cfg.API.Paused(ctx, a.cfg.Channel)
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			paused, err = nil, nil // a plain static repository has no rollout API
		}
		if err != nil {
			return nil, fmt.Errorf("rollout pause list: %w", err)
		}
	}
	now := a.cfg.Clock.Now()
	for i := range vs { // newest first
		v := &vs[i]
		switch {
		case tuf.CompareVersions(v.Version, a.cfg.BootedVersion) <= 0:
			return nil, nil
		case slices.Contains(a.state.Bad, v.Version):
			a.logf("update: skipping %s: this machine rolled back from it", v.Version)
		case slices.Contains(paused, v.Version):
			a.logf("update: skipping %s: rollout paused", v.Version)
		case !v.CanUpdateFrom(a.cfg.BootedVersion):
			a.logf("update: skipping %s: needs at least %s", v.Version, v.MinVersion)
		case !v.WaveAllows(a.seed, now):
			a.logf("update: skipping %s: not in this machine's wave yet", v.Version)
		default:
			return v, nil
		}
	}
	return nil, nil
}

// install downloads and writes v into the slot that is not booted.
func (a *Agent) install(ctx context.Context, v *tuf.Version) error {
	target, _ := OtherSlot(a.cfg.BootedSlot)
	uki, ok := v.UKIs[target]
	if !ok {
		return fmt.Errorf("version %s has no UKI for slot %s", v.Version, target)
	}
	if err := os.MkdirAll(a.cfg.WorkDir, 0o700); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	ukiPath := filepath.Join(a.cfg.WorkDir, "uki-"+target+".efi")
	defer os.Remove(ukiPath)
	if err := a.cfg.Repo.DownloadFile(ctx, uki.Name, ukiPath); err != nil {
		return &StepError{Step: StepCheck, Version: v.Version, Err: err}
	}
	var idx *chunk.Index
	if v.ChunkIndex != nil {
		data, err := a.cfg.Repo.Fetch(ctx, v.ChunkIndex.Name, chunk.MaxIndexBytes)
		if err == nil {
			idx, err = chunk.Parse(data)
		}
		if err == nil && idx.SHA256 != v.Root.Hashes["sha256"] {
			err = fmt.Errorf("chunk index describes an image with sha256 %s, the signed root image has %s", idx.SHA256, v.Root.Hashes["sha256"])
		}
		if err != nil {
			// The index is only an optimisation: fall back to the full image.
			a.logf("update: chunk index of %s unusable, downloading the whole image: %v", v.Version, err)
			idx = nil
		}
	}
	fetchOpts := a.cfg.Fetch
	base := strings.TrimRight(a.cfg.RepoURL, "/")
	lastPct := -1
	t := Target{
		Version: v.Version, Slot: a.cfg.Slots[target], Booted: a.cfg.Slots[a.cfg.BootedSlot],
		BootedSize: a.cfg.BootedSize, ESP: a.cfg.ESP,
		VerityRootHash: v.VerityRootHash, RootLength: v.Root.Length, Index: idx,
		FetchChunk: func(ctx context.Context, sum string) (io.ReadCloser, error) {
			opts := fetchOpts
			if idx != nil {
				opts.MaxSize = int64(idx.MaxSize) + int64(idx.MaxSize)/8 + 4096 // zstd of incompressible data grows a little
			}
			data, err := fetch.GetBytes(ctx, base+"/"+chunk.BlobPath(sum), opts)
			if err != nil {
				return nil, err
			}
			return io.NopCloser(bytes.NewReader(data)), nil
		},
		DownloadRoot: func(ctx context.Context, w io.Writer) error {
			return a.cfg.Repo.Download(ctx, v.Root.Name, w)
		},
		UKIPath: ukiPath,
		Progress: func(done, total int64) {
			pct := 100
			if total > 0 {
				pct = int(done * 100 / total)
			}
			if pct/5 != lastPct/5 { // save every 5%
				lastPct = pct
				st := a.state
				st.Percent = pct
				a.set(st)
			}
		},
		Log: func(format string, args ...any) { a.logf("update: "+format, args...) },
	}
	return Install(ctx, t)
}
