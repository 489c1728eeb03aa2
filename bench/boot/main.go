// Command boot measures Cairn boot times under QEMU (TCG). It boots one image
// N times per mode, alternating UEFI (OVMF → systemd-boot → UKI) and direct
// (-kernel/-initrd/-append from the UKI) so host-load drift hits both alike,
// and reads the guest's console markers:
//
//	cairn: early: start t=<seconds of CLOCK_BOOTTIME>   (first line of PID 1)
//	CAIRN-READY version=<v> slot=<A|B> boot_ms=<ms of CLOCK_BOOTTIME>
//
// With -os FILE it first builds the image with bin/cairn (one warm-up build,
// then -builds timed builds with a warm cache) and reports the build time,
// the raw and zstd-compressed image sizes and the root file system size.
//
// It reports, per mode, the median/min/max of kernel start → PID 1 (guest
// clock), PID 1 → READY (guest clock) and QEMU start → READY (host wall
// clock), as a Markdown table followed by JSON. Disk writes are discarded
// (snapshot) and every UEFI boot gets a fresh OVMF variable store.
//
//	go run ./bench/boot -n 5 out/hello.img
//	go run ./bench/boot -n 5 -os os/examples/hello.yaml   (what `make bench` runs)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"time"

	"cairn.dev/cairn/bench/internal/figures"

	"cairn.dev/cairn/qemu"
)

var (
	earlyRe = regexp.MustCompile(`cairn: early: start t=([0-9]+(?:\.[0-9]+)?)`)
	readyRe = regexp.MustCompile(`CAIRN-READY version=(\S+) slot=([AB]) boot_ms=([0-9]+)`)
)

// Sample is one boot.
type Sample struct {
	Mode         string  `json:"mode"`
	Run          int     `json:"run"`
	KernelToPID1 float64 `json:"kernel_to_pid1_ms"` // guest clock
	PID1ToReady  float64 `json:"pid1_to_ready_ms"`  // guest clock
	WallToReady  float64 `json:"qemu_start_to_ready_ms"`
	Version      string  `json:"version"`
	Slot         string  `json:"slot"`
	Error        string  `json:"error,omitempty"`
}

// Stat summarises one metric of one mode.
type Stat struct {
	Median float64 `json:"median_ms"`
	Min    float64 `json:"min_ms"`
	Max    float64 `json:"max_ms"`
	N      int     `json:"n"`
}

// Report is the JSON output.
type Report struct {
	Image   string                     `json:"image"`
	Build   *BuildStats                `json:"build,omitempty"`
	Runs    int                        `json:"runs_per_mode"`
	Host    string                     `json:"host_note"`
	Summary map[string]map[string]Stat `json:"summary"` // mode → metric → stat
	Samples []Sample                   `json:"samples"`
}

// parseEarly returns the guest seconds of an early-start line.
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

// parseReady returns version, slot and boot_ms of a READY line.
func parseReady(line string) (version, slot string, ms float64, ok bool) {
	m := readyRe.FindStringSubmatch(line)
	if m == nil {
		return "", "", 0, false
	}
	v, err := strconv.ParseUint(m[3], 10, 32)
	if err != nil {
		return "", "", 0, false
	}
	return m[1], m[2], float64(v), true
}

func summarise(xs []float64) Stat {
	med, lo, hi, ok := figures.Spread(xs)
	if !ok {
		return Stat{}
	}
	return Stat{Median: med, Min: lo, Max: hi, N: len(xs)}
}

var metrics = []struct {
	key, title string
	get        func(Sample) float64
}{
	{"kernel_to_pid1", "kernel start → PID 1 (guest)", func(s Sample) float64 { return s.KernelToPID1 }},
	{"pid1_to_ready", "PID 1 → READY (guest)", func(s Sample) float64 { return s.PID1ToReady }},
	{"qemu_start_to_ready", "QEMU start → READY (wall)", func(s Sample) float64 { return s.WallToReady }},
}

func summary(samples []Sample, modes []string) map[string]map[string]Stat {
	out := map[string]map[string]Stat{}
	for _, mode := range modes {
		out[mode] = map[string]Stat{}
		for _, m := range metrics {
			var xs []float64
			for _, s := range samples {
				if s.Mode == mode && s.Error == "" {
					xs = append(xs, m.get(s))
				}
			}
			out[mode][m.key] = summarise(xs)
		}
	}
	return out
}

func writeMarkdown(w io.Writer, r Report, modes []string) {
	fmt.Fprintf(w, "Boot times of `%s`, %d runs per mode, interleaved (QEMU TCG; %s).\n\n", r.Image, r.Runs, r.Host)
	fmt.Fprintln(w, "| mode | metric | median | min | max | n |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, mode := range modes {
		for _, m := range metrics {
			s := r.Summary[mode][m.key]
			fmt.Fprintf(w, "| %s | %s | %.0f ms | %.0f ms | %.0f ms | %d |\n", mode, m.title, s.Median, s.Min, s.Max, s.N)
		}
	}
	failed := 0
	for _, s := range r.Samples {
		if s.Error != "" {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(w, "\n%d boot(s) failed; see \"error\" in the JSON samples.\n", failed)
	}
}

// bootOnce boots the image once and measures it.
func bootOnce(ctx context.Context, cfg qemu.Config, timeout time.Duration) (Sample, error) {
	var s Sample
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		return s, err
	}
	defer func() {
		vm.Kill()
		_ = vm.Wait()
	}()
	con := vm.Console()
	l, err := con.WaitForLine(ctx, earlyRe, 0)
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, strings.Join(con.Tail(20), "\n"))
	}
	early, _ := parseEarly(l.Text)
	l, err = con.WaitForLine(ctx, readyRe, 0)
	if err != nil {
		return s, fmt.Errorf("%w\n%s", err, strings.Join(con.Tail(20), "\n"))
	}
	ver, slot, readyMS, _ := parseReady(l.Text)
	s.KernelToPID1 = early * 1000
	s.PID1ToReady = readyMS - early*1000
	s.WallToReady = float64(l.Time.Sub(con.Started()).Microseconds()) / 1000
	s.Version, s.Slot = ver, slot
	return s, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("boot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 5, "boots per mode")
	modesFlag := fs.String("modes", "uefi,direct", "comma-separated modes to compare: uefi, direct")
	timeout := fs.Duration("timeout", 5*time.Minute, "limit per boot")
	mem := fs.String("mem", qemu.DefaultMem, "guest memory")
	jsonOut := fs.String("json", "", "also write the JSON report to `FILE`")
	osFile := fs.String("os", "", "build this OS `file` first and measure the build and the image sizes")
	cairn := fs.String("cairn", "bin/cairn", "the cairn `binary` used with -os")
	outDir := fs.String("out", "out", "output `directory` for -os builds")
	builds := fs.Int("builds", 3, "timed warm-cache builds with -os")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: boot [flags] IMAGE\n       boot [flags] -os FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var bs *BuildStats
	switch {
	case *osFile != "" && fs.NArg() == 0:
		var err error
		if bs, err = measureBuild(ctx, *cairn, *osFile, *outDir, *builds, stderr); err != nil {
			return err
		}
	case *osFile == "" && fs.NArg() == 1:
	default:
		fs.Usage()
		return errors.New("want exactly one IMAGE, or -os FILE")
	}
	if *n < 1 {
		return fmt.Errorf("-n %d: want at least 1", *n)
	}
	modes := strings.Split(*modesFlag, ",")
	for _, m := range modes {
		if m != "uefi" && m != "direct" {
			return fmt.Errorf("unknown mode %q (want uefi or direct)", m)
		}
	}
	img := fs.Arg(0)
	if bs != nil {
		img = bs.Image
	}
	if _, err := os.Stat(img); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	r := Report{Image: img, Build: bs, Runs: *n, Host: hostNote()}
	for i := range *n {
		for _, mode := range modes {
			cfg := qemu.Config{Image: img, Direct: mode == "direct", Mem: *mem, Snapshot: true, NoReboot: true}
			s, err := bootOnce(ctx, cfg, *timeout)
			s.Mode, s.Run = mode, i+1
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: %w", ctx.Err())
				}
				s.Error = err.Error()
				fmt.Fprintf(stderr, "run %d %s: FAILED: %v\n", i+1, mode, err)
			} else {
				fmt.Fprintf(stderr, "run %d %-6s: kernel→PID1 %5.0f ms  PID1→READY %5.0f ms  wall→READY %6.0f ms\n",
					i+1, mode, s.KernelToPID1, s.PID1ToReady, s.WallToReady)
			}
			r.Samples = append(r.Samples, s)
		}
	}
	r.Summary = summary(r.Samples, modes)
	if bs != nil {
		writeBuildMarkdown(stdout, bs)
	}
	writeMarkdown(stdout, r, modes)
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	fmt.Fprintf(stdout, "\n```json\n%s\n```\n", js)
	if *jsonOut != "" {
		if err := os.WriteFile(*jsonOut, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write JSON: %w", err)
		}
	}
	return nil
}

// hostNote describes the measuring host (CPU count), since TCG timings are
// only comparable within one run on one machine.
func hostNote() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown host"
	}
	return fmt.Sprintf("%d-core host", strings.Count(string(b), "\nprocessor")+1)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "boot:", err)
		}
		os.Exit(1)
	}
}
