//go:build linux

// Package bootinfo carries what the early stage learned (devices, slot,
// timings) to the system stage through /run/cairn/boot.json, and reads
// CLOCK_BOOTTIME.
package bootinfo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Path is where the early stage leaves Info (on /run, which it moves into
// the new root).
const Path = "/run/cairn/boot.json"

// Info is the early stage's hand-over.
type Info struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
	Disk    string `json:"disk"`   // e.g. /dev/vda
	Root    string `json:"root"`   // root slot partition, e.g. /dev/vda2
	Verity  string `json:"verity"` // /dev/dm-N
	ESP     string `json:"esp,omitempty"`
	State   string `json:"state,omitempty"`
	// Guest CLOCK_BOOTTIME milestones in milliseconds.
	EarlyStartMs   float64 `json:"early_start_ms"`
	ModulesDoneMs  float64 `json:"modules_done_ms"`
	RootMountedMs  float64 `json:"root_mounted_ms"`
	SwitchRootMs   float64 `json:"switch_root_ms"`
	ModulesLoaded  int     `json:"modules_loaded"`
	StateGrownFrom uint64  `json:"state_grown_from_lba,omitempty"`
}

// Now returns CLOCK_BOOTTIME.
func Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Ms converts d to fractional milliseconds.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Write stores i at path.
func Write(path string, i Info) error {
	b, err := json.MarshalIndent(i, "", "  ")
	if err != nil {
		return fmt.Errorf("bootinfo: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bootinfo: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bootinfo: %w", err)
	}
	return nil
}

// Read loads Info from path.
func Read(path string) (Info, error) {
	var i Info
	b, err := os.ReadFile(path)
	if err != nil {
		return i, fmt.Errorf("bootinfo: %w", err)
	}
	if err := json.Unmarshal(b, &i); err != nil {
		return i, fmt.Errorf("bootinfo: %s: %w", path, err)
	}
	return i, nil
}
