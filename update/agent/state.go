package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"cairn.dev/cairn/internal/atomicfile"
)

// Phase is where the update agent is.
type Phase string

// Phases, in the order an update goes through them.
const (
	PhaseIdle        Phase = "idle"
	PhaseChecking    Phase = "checking"
	PhaseDownloading Phase = "downloading"
	PhaseWritten     Phase = "written"
	PhaseWaiting     Phase = "waiting for lease"
	PhaseRebooting   Phase = "rebooting"
	PhaseOnTrial     Phase = "on trial"
	PhaseCommitted   Phase = "committed"
	PhaseRolledBack  Phase = "rolled back"
	PhaseFailed      Phase = "failed"
)

// State is the agent's persistent state, a small JSON file on STATE.
type State struct {
	Phase Phase `json:"phase"`
	// Percent is the download progress in PhaseDownloading.
	Percent int `json:"percent,omitempty"`
	// Version is the version being installed or tried; FromVersion the
	// one it replaces.
	Version     string `json:"version,omitempty"`
	FromVersion string `json:"from_version,omitempty"`
	// Stage and Reason say why the last attempt failed or rolled back.
	Stage  string `json:"stage,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Bad lists versions this machine rolled back from; it does not try
	// them again.
	Bad []string `json:"bad,omitempty"`
	// Pending is a report not delivered yet.
	Pending *Report   `json:"pending_report,omitempty"`
	Updated time.Time `json:"updated"`
}

// String is the one-line form shown on the console: "downloading 42%",
// "rolled back because of health: web unhealthy".
func (s State) String() string {
	switch s.Phase {
	case PhaseDownloading:
		return fmt.Sprintf("downloading %s %d%%", s.Version, s.Percent)
	case PhaseRolledBack:
		return fmt.Sprintf("rolled back from %s because of %s: %s", s.Version, s.Stage, s.Reason)
	case PhaseFailed:
		if s.Version == "" { // a failed check: no version picked yet
			return fmt.Sprintf("%s failed: %s", s.Stage, s.Reason)
		}
		return fmt.Sprintf("update to %s failed at %s: %s", s.Version, s.Stage, s.Reason)
	case PhaseWaiting:
		if s.Reason != "" {
			return fmt.Sprintf("%s to reboot into %s", s.Reason, s.Version)
		}
	case PhaseIdle, PhaseChecking, "":
		return string(s.Phase)
	}
	return string(s.Phase) + " " + s.Version
}

// maxStateBytes bounds the state file.
const maxStateBytes = 64 << 10

// maxBad bounds State.Bad (oldest dropped).
const maxBad = 32

// DecodeState parses a state file. Unknown fields are errors, as is a
// phase the agent does not know.
func DecodeState(data []byte) (State, error) {
	var s State
	if len(data) > maxStateBytes {
		return s, fmt.Errorf("state: %d bytes, limit %d", len(data), maxStateBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return State{}, fmt.Errorf("state: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return State{}, errors.New("state: trailing data")
	}
	switch s.Phase {
	case PhaseIdle, PhaseChecking, PhaseDownloading, PhaseWritten, PhaseWaiting, PhaseRebooting,
		PhaseOnTrial, PhaseCommitted, PhaseRolledBack, PhaseFailed:
	default:
		return State{}, fmt.Errorf("state: unknown phase %q", s.Phase)
	}
	if s.Percent < 0 || s.Percent > 100 {
		return State{}, fmt.Errorf("state: percent %d", s.Percent)
	}
	if len(s.Bad) > maxBad {
		s.Bad = s.Bad[len(s.Bad)-maxBad:]
	}
	return s, nil
}

// LoadState reads the state file at p. A missing file is the idle state;
// a corrupt one is reported and read as idle, keeping nothing from it (the
// agent must keep working on a machine whose STATE was damaged).
func LoadState(p string) (State, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return State{Phase: PhaseIdle}, nil
	}
	if err != nil {
		return State{Phase: PhaseIdle}, fmt.Errorf("state: %w", err)
	}
	s, err := DecodeState(data)
	if err != nil {
		return State{Phase: PhaseIdle}, fmt.Errorf("%s: %w", p, err)
	}
	return s, nil
}

// SaveState writes s to p atomically: a temporary file in the same
// directory, fsync, rename, fsync of the directory.
func SaveState(p string, s State) error {
	if len(s.Bad) > maxBad {
		s.Bad = s.Bad[len(s.Bad)-maxBad:]
	}
	data, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := atomicfile.WriteFile(p, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return atomicfile.SyncDir(dir)
}
