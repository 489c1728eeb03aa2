package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"cairn.dev/cairn/bench/peer"
	"cairn.dev/cairn/qemu"
)

// earlyRe matches the first line of user space on both systems: Cairn's
// PID 1 prints "cairn: early: start t=<s>", the peer's initramfs hook
// "peer: early: start t=<s>" (both CLOCK_BOOTTIME seconds).
var earlyRe = regexp.MustCompile(`(?:cairn|peer): early: start t=([0-9]+(?:\.[0-9]+)?)`)

// Sample is one boot of one system.
type Sample struct {
	System       string             `json:"system"`
	Run          int                `json:"run"`
	WallToHTTP   float64            `json:"qemu_start_to_http_ms"`
	KernelShare  float64            `json:"kernel_to_pid1_ms"`
	WallExKernel float64            `json:"qemu_start_to_http_minus_kernel_ms"`
	UserToHTTP   float64            `json:"user_space_start_to_http_ms"`  // host clock: early line seen → HTTP 200
	Firmware     float64            `json:"firmware_and_loader_ms"`       // host time of the early line minus the kernel share
	ReadAt       float64            `json:"meminfo_read_at_ms,omitempty"` // kernel floor: guest CLOCK_BOOTTIME when /proc/meminfo was read
	MemUsedKiB   float64            `json:"mem_used_kib"`                 // MemTotal - MemAvailable when the service first answered
	MemTotalKiB  float64            `json:"mem_total_kib"`
	Meminfo      map[string]float64 `json:"meminfo_kib,omitempty"` // breakdownFields, same moment
	Error        string             `json:"error,omitempty"`
	MemError     string             `json:"mem_error,omitempty"`
}

// parseEarly returns the seconds of an early-start line.
func parseEarly(line string) (float64, bool) {
	m := earlyRe.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil || v < 0 || v > 1e6 {
		return 0, false
	}
	return v, true
}

// breakdownFields are the /proc/meminfo fields kept with each sample, to
// show where the memory in use goes.
var breakdownFields = []string{"AnonPages", "Shmem", "Slab", "SUnreclaim", "KernelStack", "PageTables", "Percpu", "Cached", "Buffers", "MemFree"}

// ParseMeminfo reads MemTotal and MemAvailable (kB) from /proc/meminfo text,
// and the breakdownFields present into fields (if not nil). Errors name the
// line.
func ParseMeminfo(r io.Reader, fields map[string]float64) (total, avail float64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	var haveT, haveA bool
	for n := 1; sc.Scan(); n++ {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if fields != nil && slices.Contains(breakdownFields, k) {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if x, err := strconv.ParseUint(f[0], 10, 63); err == nil {
					fields[k] = float64(x)
				}
			}
		}
		if k != "MemTotal" && k != "MemAvailable" {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("meminfo line %d: field %s: want \"<n> kB\"", n, k)
		}
		x, err := strconv.ParseUint(f[0], 10, 63)
		if err != nil {
			return 0, 0, fmt.Errorf("meminfo line %d: field %s: %w", n, k, err)
		}
		if k == "MemTotal" {
			total, haveT = float64(x), true
		} else {
			avail, haveA = float64(x), true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("meminfo: %w", err)
	}
	if !haveT || !haveA {
		return 0, 0, fmt.Errorf("meminfo: MemTotal or MemAvailable missing")
	}
	if avail > total {
		return 0, 0, fmt.Errorf("meminfo: MemAvailable %v kB > MemTotal %v kB", avail, total)
	}
	return total, avail, nil
}

// fetchMeminfo reads the guest's /proc/meminfo from the web example's
// GET /meminfo (a container sees the machine's /proc/meminfo: no lxcfs on
// either side). It is polled like the first answer, so that one slow
// request does not lose the sample.
func fetchMeminfo(ctx context.Context, base string, fields map[string]float64) (total, avail float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := peer.PollHTTP(ctx, base+"/meminfo"); err != nil {
		return 0, 0, fmt.Errorf("meminfo: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/meminfo", nil)
	if err != nil {
		return 0, 0, fmt.Errorf("meminfo: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("meminfo: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("meminfo: GET %s/meminfo: %s", base, resp.Status)
	}
	return ParseMeminfo(io.LimitReader(resp.Body, 64<<10), fields)
}

// bootOnce boots img (snapshot: writes are discarded) and measures it.
func bootOnce(ctx context.Context, system, img string, mem string, timeout time.Duration) (Sample, error) {
	s := Sample{System: system}
	port, err := peer.FreePort()
	if err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Config{Image: img, Mem: mem, Snapshot: true, NoReboot: true,
		Ports: []qemu.PortForward{{Host: port, Guest: peer.Containers[0].Port}}})
	if err != nil {
		return s, err
	}
	defer func() {
		vm.Kill()
		_ = vm.Wait()
	}()
	con := vm.Console()
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	go func() {
		select {
		case <-vm.Done():
			pcancel()
		case <-pctx.Done():
		}
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	at, err := peer.PollHTTP(pctx, base+"/")
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, strings.Join(con.Tail(25), "\n"))
	}
	s.WallToHTTP = float64(at.Sub(con.Started()).Microseconds()) / 1000
	s.Meminfo = map[string]float64{}
	if total, avail, err := fetchMeminfo(ctx, base, s.Meminfo); err != nil {
		s.MemError = err.Error()
	} else {
		s.MemTotalKiB, s.MemUsedKiB = total, total-avail
	}
	l, err := con.WaitForLine(ctx, earlyRe, time.Second)
	if err != nil {
		return s, fmt.Errorf("no early-start line: %w", err)
	}
	early, _ := parseEarly(l.Text)
	s.KernelShare = early * 1000
	s.WallExKernel = s.WallToHTTP - s.KernelShare
	earlyWall := float64(l.Time.Sub(con.Started()).Microseconds()) / 1000
	s.UserToHTTP = s.WallToHTTP - earlyWall
	s.Firmware = earlyWall - s.KernelShare
	return s, nil
}
