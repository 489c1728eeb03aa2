package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"cairn.dev/cairn/update/agent"
)

// WriteResult compares the agent's slot write with dd.
type WriteResult struct {
	Image       string  `json:"image"`
	Bytes       int64   `json:"bytes"`
	Runs        int     `json:"runs"`
	AgentMillis int64   `json:"agent_ms"` // median
	DDMillis    int64   `json:"dd_ms"`    // median
	AgentMiBps  float64 `json:"agent_mib_per_s"`
	DDMiBps     float64 `json:"dd_mib_per_s"`
	Ratio       float64 `json:"agent_over_dd"` // agent time / dd time
}

// slotOffset puts the slot 1 MiB into the scratch "disk", as a partition.
const slotOffset = 1 << 20

// measureWrite writes image into a slot of a scratch disk file the way
// agent.Install writes a full download (a stream of 32 KiB reads, written
// with WriteAt through an agent.Region, one fsync at the end), and with
// `dd bs=1M conv=fsync,notrunc` into the same place, runs times each,
// alternating, and returns the medians.
func measureWrite(ctx context.Context, image, scratch string, runs int) (*WriteResult, error) {
	fi, err := os.Stat(image)
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	diskPath := filepath.Join(scratch, "disk")
	var agentTimes, ddTimes []time.Duration
	for i := 0; i < runs; i++ {
		for _, fn := range []func() (time.Duration, error){
			func() (time.Duration, error) { return agentWrite(image, diskPath, size) },
			func() (time.Duration, error) { return ddWrite(ctx, image, diskPath, size) },
		} {
			// A fresh, empty disk file for every run: both start from
			// unallocated blocks.
			if err := os.Remove(diskPath); err != nil && !os.IsNotExist(err) {
				return nil, err
			}
			if err := os.WriteFile(diskPath, nil, 0o644); err != nil {
				return nil, err
			}
			if err := os.Truncate(diskPath, slotOffset+size+slotOffset); err != nil {
				return nil, err
			}
			d, err := fn()
			if err != nil {
				return nil, err
			}
			if len(agentTimes) == len(ddTimes) {
				agentTimes = append(agentTimes, d)
			} else {
				ddTimes = append(ddTimes, d)
			}
		}
	}
	a, d := median(agentTimes), median(ddTimes)
	mib := float64(size) / (1 << 20)
	return &WriteResult{
		Image: image, Bytes: size, Runs: runs,
		AgentMillis: a.Milliseconds(), DDMillis: d.Milliseconds(),
		AgentMiBps: mib / a.Seconds(), DDMiBps: mib / d.Seconds(),
		Ratio: a.Seconds() / d.Seconds(),
	}, nil
}

func agentWrite(image, diskPath string, size int64) (time.Duration, error) {
	src, err := os.Open(image)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	f, err := os.OpenFile(diskPath, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	slot := &agent.Region{F: f, Off: slotOffset, Len: size}
	start := time.Now()
	w := io.NewOffsetWriter(slot, 0)
	buf := make([]byte, 32<<10) // what an HTTP body hands io.Copy
	n, err := io.CopyBuffer(onlyWriter{w}, onlyReader{src}, buf)
	if err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("agent write: %d of %d bytes", n, size)
	}
	if err := slot.Sync(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func ddWrite(ctx context.Context, image, diskPath string, size int64) (time.Duration, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "dd", "if="+image, "of="+diskPath, "bs=1M", "oflag=seek_bytes",
		fmt.Sprintf("seek=%d", slotOffset), "conv=fsync,notrunc", "status=none")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("dd: %w: %s", err, out)
	}
	return time.Since(start), nil
}

// onlyWriter and onlyReader hide ReadFrom/WriteTo, so io.CopyBuffer really
// moves the data in buffer-sized pieces, as from a network body.
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
