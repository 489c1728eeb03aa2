package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Stats is a snapshot of a cgroup's accounting. Fields whose controller is
// not enabled stay zero.
type Stats struct {
	CPUUsageUsec  uint64 `json:"cpu_usage_usec"`
	CPUUserUsec   uint64 `json:"cpu_user_usec"`
	CPUSystemUsec uint64 `json:"cpu_system_usec"`
	CPUThrottled  uint64 `json:"cpu_nr_throttled"`
	MemoryCurrent uint64 `json:"memory_current"`
	MemoryPeak    uint64 `json:"memory_peak"`
	MemoryMax     uint64 `json:"memory_max"` // 0: unlimited
	OOMEvents     uint64 `json:"oom"`
	OOMKills      uint64 `json:"oom_kill"`
	PidsCurrent   uint64 `json:"pids_current"`
	PidsMax       uint64 `json:"pids_max"` // 0: unlimited
	IOReadBytes   uint64 `json:"io_rbytes"`
	IOWriteBytes  uint64 `json:"io_wbytes"`
}

// Stats reads the cgroup's accounting files.
func (m *Manager) Stats() (*Stats, error) {
	dir := m.Dir()
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("cgroup stats: %w", err)
	}
	s := &Stats{}
	if kv, err := readFlat(filepath.Join(dir, "cpu.stat")); err == nil {
		s.CPUUsageUsec, s.CPUUserUsec, s.CPUSystemUsec, s.CPUThrottled = kv["usage_usec"], kv["user_usec"], kv["system_usec"], kv["nr_throttled"]
	}
	s.MemoryCurrent, _ = readUint(filepath.Join(dir, "memory.current"))
	s.MemoryPeak, _ = readUint(filepath.Join(dir, "memory.peak"))
	s.MemoryMax, _ = readUint(filepath.Join(dir, "memory.max"))
	if kv, err := readFlat(filepath.Join(dir, "memory.events")); err == nil {
		s.OOMEvents, s.OOMKills = kv["oom"], kv["oom_kill"]
	}
	s.PidsCurrent, _ = readUint(filepath.Join(dir, "pids.current"))
	s.PidsMax, _ = readUint(filepath.Join(dir, "pids.max"))
	if b, err := os.ReadFile(filepath.Join(dir, "io.stat")); err == nil {
		s.IOReadBytes, s.IOWriteBytes = parseIOStat(b)
	}
	return s, nil
}

// OOMKilled reports whether the kernel OOM-killed a process of the cgroup
// (memory.events oom_kill > 0). A missing file (no memory controller) is
// false, nil.
func (m *Manager) OOMKilled() (bool, error) {
	kv, err := readFlat(filepath.Join(m.Dir(), "memory.events"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return kv["oom_kill"] > 0, nil
}

func readUint(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, nil
	}
	return strconv.ParseUint(v, 10, 64)
}

func readFlat(p string) (map[string]uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return ParseFlatKeyed(b), nil
}

// ParseFlatKeyed parses a cgroup "key value" file (cpu.stat,
// memory.events); malformed lines are skipped.
func ParseFlatKeyed(b []byte) map[string]uint64 {
	kv := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			kv[f[0]] = v
		}
	}
	return kv
}

// parseIOStat sums rbytes and wbytes over the devices of an io.stat file
// ("8:0 rbytes=1 wbytes=2 rios=3 ...").
func parseIOStat(b []byte) (r, w uint64) {
	for _, line := range strings.Split(string(b), "\n") {
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				r += n
			case "wbytes":
				w += n
			}
		}
	}
	return r, w
}
