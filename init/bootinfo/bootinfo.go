//go:build linux

// Package bootinfo carries what the early stage learned (devices, slot,
// timings) to the system stage through /run/cairn/boot.env, and reads
// CLOCK_BOOTTIME.
package bootinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Path is where the early stage leaves Info (on /run, which it moves into
// the new root).
const Path = "/run/cairn/boot.env"

// Info is the early stage's hand-over.
type Info struct {
	Slot    string
	Version string
	Disk    string // e.g. /dev/vda
	Root    string // root slot partition, e.g. /dev/vda2
	Verity  string // /dev/dm-N
	ESP     string
	State   string
	// Guest CLOCK_BOOTTIME milestones in milliseconds.
	EarlyStartMs   float64
	ModulesDoneMs  float64
	RootMountedMs  float64
	SwitchRootMs   float64
	ModulesLoaded  int
	StateGrownFrom uint64
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

// The file holds one KEY=VALUE line per field (keys from fields).
// It is a tiny format on purpose: the system stage reads it before READY, and
// encoding/json's first use costs tens of milliseconds under TCG.

// fields lists Info's fields with their keys, in order.
func (i *Info) fields() []struct {
	key string
	ptr any
} {
	return []struct {
		key string
		ptr any
	}{
		{"slot", &i.Slot}, {"version", &i.Version}, {"disk", &i.Disk}, {"root", &i.Root},
		{"verity", &i.Verity}, {"esp", &i.ESP}, {"state", &i.State},
		{"early_start_ms", &i.EarlyStartMs}, {"modules_done_ms", &i.ModulesDoneMs},
		{"root_mounted_ms", &i.RootMountedMs}, {"switch_root_ms", &i.SwitchRootMs},
		{"modules_loaded", &i.ModulesLoaded}, {"state_grown_from_lba", &i.StateGrownFrom},
	}
}

// Marshal encodes i.
func (i Info) Marshal() []byte {
	var b bytes.Buffer
	for _, f := range i.fields() {
		var v string
		switch p := f.ptr.(type) {
		case *string:
			v = strings.ReplaceAll(*p, "\n", " ") // one line per field
		case *float64:
			v = strconv.FormatFloat(*p, 'f', -1, 64)
		case *int:
			v = strconv.Itoa(*p)
		case *uint64:
			v = strconv.FormatUint(*p, 10)
		}
		b.WriteString(f.key + "=" + v + "\n")
	}
	return b.Bytes()
}

// Unmarshal decodes data written by Marshal. Unknown keys are ignored, so an
// older system stage can read a newer early stage's file.
func Unmarshal(data []byte) (Info, error) {
	var i Info
	byKey := map[string]any{}
	for _, f := range i.fields() {
		byKey[f.key] = f.ptr
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Info{}, fmt.Errorf("line %d: %q is not KEY=VALUE", n, line)
		}
		var err error
		switch p := byKey[k].(type) {
		case *string:
			*p = v
		case *float64:
			*p, err = strconv.ParseFloat(v, 64)
		case *int:
			*p, err = strconv.Atoi(v)
		case *uint64:
			*p, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return Info{}, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Info{}, err
	}
	return i, nil
}

// Write stores i at path.
func Write(path string, i Info) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("bootinfo: %w", err)
	}
	if err := os.WriteFile(path, i.Marshal(), 0o644); err != nil {
		return fmt.Errorf("bootinfo: %w", err)
	}
	return nil
}

// Read loads Info from path.
func Read(path string) (Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("bootinfo: %w", err)
	}
	i, err := Unmarshal(b)
	if err != nil {
		return Info{}, fmt.Errorf("bootinfo: %s: %w", path, err)
	}
	return i, nil
}
