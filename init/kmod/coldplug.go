package kmod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Modaliases returns the distinct modalias strings of the devices listed in
// sysfs/bus/*/devices/* and sysfs/class/input/* (input devices are class
// devices with a modalias; evdev binds through it). Other class devices
// (tty, mem, net, block, ...) carry no modalias, and skipping them and the
// thousands of directories under /sys/devices matters under TCG.
func Modaliases(sysfs string) ([]string, error) {
	return modaliases(context.Background(), sysfs)
}

// modaliases is Modaliases, stopping early when ctx is done.
func modaliases(ctx context.Context, sysfs string) ([]string, error) {
	seen := map[string]bool{}
	var dirs []string
	buses, err := os.ReadDir(filepath.Join(sysfs, "bus"))
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	for _, b := range buses {
		dirs = append(dirs, filepath.Join(sysfs, "bus", b.Name(), "devices"))
	}
	dirs = append(dirs, filepath.Join(sysfs, "class", "input"))
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kmod: %w", err)
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(d, e.Name(), "modalias"))
			if err != nil {
				continue
			}
			if a := string(bytes.TrimSpace(b)); a != "" {
				seen[a] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for a := range seen {
		out = append(out, a)
	}
	sort.Strings(out)
	return out, nil
}

// ColdplugStats summarises a Coldplug run.
type ColdplugStats struct {
	Rounds  int
	Modules []string // modules requested by coldplug, in order
	// RoundTimes is the duration of each round (scan + loads), ScanTimes
	// the sysfs scan part of it.
	RoundTimes, ScanTimes []time.Duration
}

// Coldplug matches the modaliases of the devices in sysfs (normally /sys)
// against the index and
// loads the matches, repeating until a round finds no new module (bus drivers
// create new devices: virtio_pci -> virtio devices -> virtio_blk). Load
// failures of single modules are returned joined, after all rounds.
func (s *Set) Coldplug(ctx context.Context, sysfs string) (ColdplugStats, error) {
	var (
		st   ColdplugStats
		errs []error
	)
	for st.Rounds < 16 {
		st.Rounds++
		t0 := time.Now()
		done := func() { st.RoundTimes = append(st.RoundTimes, time.Since(t0).Round(time.Millisecond)) }
		aliases, err := modaliases(ctx, sysfs)
		if err != nil {
			return st, err
		}
		st.ScanTimes = append(st.ScanTimes, time.Since(t0).Round(time.Millisecond))
		var want []string
		for _, a := range aliases {
			for _, m := range s.ix.Match(a) {
				if !s.Requested(m) && !s.ix.Builtin(m) {
					want = append(want, m)
				}
			}
		}
		if len(want) == 0 {
			done()
			return st, errors.Join(errs...)
		}
		st.Modules = append(st.Modules, want...)
		_, err = s.load(ctx, want, false)
		done()
		if err != nil {
			if ctx.Err() != nil {
				return st, err
			}
			errs = append(errs, err)
		}
	}
	errs = append(errs, errors.New("kmod: coldplug did not settle after 16 rounds"))
	return st, errors.Join(errs...)
}
