package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"cairn.dev/cairn/bench/internal/figures"
)

// Stat summarises the samples of one runtime (milliseconds).
type Stat struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	P95    float64 `json:"p95_ms"`
	Mean   float64 `json:"mean_ms"`
	Min    float64 `json:"min_ms"`
	Max    float64 `json:"max_ms"`
}

// summarise returns n, median, p95 (nearest rank), mean, min and max of xs.
// An empty input gives the zero Stat.
func summarise(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	med, lo, hi, _ := figures.Spread(s)
	return Stat{N: n, Median: med, P95: percentile(s, 95), Mean: sum / float64(n), Min: lo, Max: hi}
}

// percentile returns the nearest-rank p-th percentile of sorted values:
// the smallest value with at least p % of the samples at or below it.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// ratio returns a/b, or 0 when either is not positive (no data).
func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return a / b
}

// RSS summarises peak resident set sizes in KiB.
type RSS struct {
	N         int    `json:"n"`
	MedianKiB int64  `json:"median_kib"`
	MaxKiB    int64  `json:"max_kib"`
	Method    string `json:"method"`
}

func summariseRSS(kib []int64, method string) RSS {
	if len(kib) == 0 {
		return RSS{Method: method}
	}
	s := slices.Clone(kib)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return RSS{N: len(s), MedianKiB: med, MaxKiB: s[len(s)-1], Method: method}
}

// parseStatusKiB returns the value in KiB of a field ("VmHWM") of a
// /proc/PID/status file.
func parseStatusKiB(r io.Reader, field string) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status field %s: unexpected value %q", field, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("status field %s: bad number %q", field, f[0])
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	return 0, errors.New("status field " + field + " not found")
}

// parseTimeMaxRSS reads the output of GNU time -f %M: the last non-empty
// line is the peak RSS in KiB (earlier lines may be notes such as "Command
// exited with non-zero status 1").
func parseTimeMaxRSS(out string) (int64, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	n, err := strconv.ParseInt(last, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("time -f %%M: unexpected output %q", out)
	}
	return n, nil
}
