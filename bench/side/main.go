// Command side runs Cairn and its peer (bench/peer: Debian 12 minbase with
// systemd and podman, the same kernel) side by side under the same QEMU
// settings (OVMF → systemd-boot, TCG, 1 vCPU, the same memory, virtio disk,
// user network with a forwarded port) and reports, with medians, min and max
// over -n boots each, alternating:
//
//   - QEMU start → first HTTP 200 from the web container (host clock),
//   - the kernel's share (kernel start → first user-space process, guest
//     CLOCK_BOOTTIME, printed on both consoles) and the time without it,
//   - memory in use when the service first answers (MemTotal - MemAvailable,
//     read from the web container's /meminfo on both),
//   - the disk image's apparent and allocated size, zstd -3 size, and the
//     root file system's size,
//   - the kernel floors: memory in use of the same kernel under the same
//     QEMU settings and OVMF with an initramfs holding only a static Go
//     /init (floorinit) that reads /proc/meminfo 3 s after its start,
//     booted once with Cairn's kernel arguments and once with the peer's;
//     also each system's memory in use above the floor with its own
//     arguments (-floor=false skips them),
//
// and the ratios Cairn/peer against the targets. With -runtime-bin and
// -update it also runs the runtime and update benchmarks and includes their
// reports. It writes bench/results/side-DATE.{md,json} and the latest table
// into docs/performance.md.
//
//	go run ./bench/side -n 5                 (what `make bench` runs)
//	go run ./bench/side -peer-only           (build or find the cached peer)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"cairn.dev/cairn/bench/internal/figures"

	"cairn.dev/cairn/bench/peer"
	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/qemu"
)

// System is one side of the comparison.
type System struct {
	Name          string  `json:"name"`
	Image         string  `json:"image"`
	ImageApparent int64   `json:"image_apparent_bytes"`
	ImageAlloc    int64   `json:"image_allocated_bytes"`
	ImageZstd     int64   `json:"image_zstd_bytes"`
	RootFS        int64   `json:"root_fs_bytes"`
	RootFSNote    string  `json:"root_fs_note"`
	Summary       Summary `json:"summary"`
}

// Report is the JSON output.
type Report struct {
	Date    string            `json:"date"`
	Host    string            `json:"host"`
	QEMU    string            `json:"qemu"`
	Runs    int               `json:"runs_per_system"`
	Mem     string            `json:"guest_mem"`
	Cairn   System            `json:"cairn"`
	Peer    System            `json:"peer"`
	Floors  []*Floor          `json:"kernel_floors,omitempty"` // the kernel alone, with Cairn's and with the peer's arguments
	PeerMet *peer.Result      `json:"peer_build"`
	Ratios  []Ratio           `json:"ratios"`
	Samples []Sample          `json:"samples"`
	Extra   map[string]string `json:"extra_reports,omitempty"` // runtime, update: their Markdown
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("side", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 5, "boots per system")
	osFile := fs.String("os", "os/examples/web.yaml", "Cairn OS `file` with the web example")
	cairn := fs.String("cairn", "bin/cairn", "the cairn `binary`")
	outDir := fs.String("out", "out/bench-side.d", "build `directory` for the Cairn image")
	mem := fs.String("mem", qemu.DefaultMem, "guest memory, both systems")
	timeout := fs.Duration("timeout", 6*time.Minute, "limit per boot")
	peerOnly := fs.Bool("peer-only", false, "build (or find) the peer image and exit")
	only := fs.String("only", "", "measure one system only: cairn or peer (no ratios, docs untouched)")
	resultsDir := fs.String("results", "bench/results", "`directory` for side-DATE.md/.json")
	docs := fs.String("docs", "docs/performance.md", "`file` whose side-by-side section gets the latest table (\"\" to skip)")
	runtimeBin := fs.String("runtime-bin", "", "bench/runtime `binary` to run as well (\"\" skips it)")
	runtimeN := fs.Int("runtime-n", 200, "runs per runtime for -runtime-bin")
	floorOn := fs.Bool("floor", true, "also boot the kernel alone (the memory floors) with Cairn's and with the peer's kernel arguments -n times each, after each round (needs the Cairn image)")
	goBin := fs.String("go", "go", "go `command` that builds the kernel floor's /init")
	updateCmd := fs.String("update", "", "command line of the update benchmark to run as well, e.g. \"go run ./bench/update\"")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("-n %d: want at least 1", *n)
	}
	if *only != "" && *only != "cairn" && *only != "peer" {
		return fmt.Errorf("-only %q: want cairn or peer", *only)
	}
	start := time.Now()
	r := Report{Date: time.Now().UTC().Format("2006-01-02"), Host: hostNote(), QEMU: qemuVersion(ctx), Runs: *n, Mem: *mem,
		Extra: map[string]string{}}
	var systems []*System
	if *only != "cairn" {
		pr, err := peer.Build(ctx, peer.Options{Log: stderr})
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "side: peer image %s (cached: %v)\n", pr.Image, pr.Cached)
		if *peerOnly {
			return nil
		}
		r.PeerMet = pr
		r.Peer = System{Name: "peer (Debian 12 + systemd + podman)", Image: pr.Image, RootFS: pr.RootFSUsed,
			RootFSNote: "ext4 blocks in use before the first boot"}
		if err := sizes(&r.Peer); err != nil {
			return err
		}
		systems = append(systems, &r.Peer)
	}
	if *only != "peer" {
		r.Cairn = System{Name: "Cairn", RootFSNote: "erofs + dm-verity tree"}
		if err := buildCairn(ctx, *cairn, *osFile, *outDir, &r.Cairn); err != nil {
			return err
		}
		if err := sizes(&r.Cairn); err != nil {
			return err
		}
		systems = append([]*System{&r.Cairn}, systems...)
	}
	var kit *floorKit
	if *floorOn && *only != "peer" {
		var err error
		if kit, r.Floors, err = prepareFloors(ctx, r.Cairn.Image, *goBin, filepath.Join(*outDir, "floor")); err != nil {
			return err
		}
		for _, f := range r.Floors {
			fmt.Fprintf(stderr, "side: %s: %s, initramfs %d bytes, cmdline %q\n", f.Name, f.Kernel, f.InitramfsBytes, f.Cmdline)
		}
	}
	for i := range *n {
		order := systems
		if i%2 == 1 && len(systems) == 2 { // alternate who goes first
			order = []*System{systems[1], systems[0]}
		}
		for _, sys := range order {
			s, err := bootOnce(ctx, sys.Name, sys.Image, *mem, *timeout)
			s.System, s.Run = sys.Name, i+1
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: %w", ctx.Err())
				}
				s.Error = err.Error()
				fmt.Fprintf(stderr, "run %d %s: FAILED: %v\n", i+1, sys.Name, err)
			} else {
				fmt.Fprintf(stderr, "run %d %-40s: →HTTP %6.0f ms  kernel %5.0f ms  mem %6.0f KiB %s\n",
					i+1, sys.Name, s.WallToHTTP, s.KernelShare, s.MemUsedKiB, s.MemError)
			}
			r.Samples = append(r.Samples, s)
		}
		floors := r.Floors
		if i%2 == 1 && len(floors) == 2 { // alternate these too
			floors = []*Floor{floors[1], floors[0]}
		}
		for _, f := range floors {
			s, err := bootFloor(ctx, kit, f, r.Cairn.Image, *mem, *timeout)
			s.Run = i + 1
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: %w", ctx.Err())
				}
				s.Error = err.Error()
				fmt.Fprintf(stderr, "run %d %s: FAILED: %v\n", i+1, f.Name, err)
			} else {
				fmt.Fprintf(stderr, "run %d %-40s: kernel %5.0f ms  read at %5.0f ms  mem %6.0f KiB (MemTotal %.0f, AnonPages %.0f)\n",
					i+1, f.Name, s.KernelShare, s.ReadAt, s.MemUsedKiB, s.MemTotalKiB, s.Meminfo["AnonPages"])
			}
			r.Samples = append(r.Samples, s)
		}
	}
	for _, sys := range systems {
		sys.Summary = summarise(r.Samples, sys.Name)
	}
	for _, f := range r.Floors {
		summariseFloor(f, r.Samples, r.Peer.Summary.MemUsedKiB.Median)
	}
	if *only == "" {
		r.Ratios = ratios(r.Cairn, r.Peer, floorKiB(r.Floors, "cairn"), floorKiB(r.Floors, "peer"))
	}
	if *runtimeBin != "" {
		md, err := runCapture(ctx, stderr, *runtimeBin, "-n", fmt.Sprint(*runtimeN), "-warmup", "10",
			"-json", filepath.Join(*resultsDir, "runtime-"+r.Date+".json"))
		if err != nil {
			fmt.Fprintf(stderr, "side: runtime benchmark: %v\n", err)
			md = "runtime benchmark failed: " + err.Error()
		}
		r.Extra["runtime"] = md
	}
	if *updateCmd != "" {
		f := strings.Fields(*updateCmd)
		md, err := runCapture(ctx, stderr, f[0], f[1:]...)
		if err != nil {
			fmt.Fprintf(stderr, "side: update benchmark: %v\n", err)
			md = "update benchmark failed: " + err.Error()
		}
		r.Extra["update"] = md
	}
	var md bytes.Buffer
	writeMarkdown(&md, &r, time.Since(start))
	if _, err := stdout.Write(md.Bytes()); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if *resultsDir != "" {
		base := filepath.Join(*resultsDir, "side-"+r.Date)
		if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		if err := os.WriteFile(base+".md", md.Bytes(), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		fmt.Fprintf(stderr, "side: wrote %s.{md,json}\n", base)
	}
	if *docs != "" && *only == "" {
		if err := updateDocs(*docs, r, md.String()); err != nil {
			return err
		}
	}
	return nil
}

// buildCairn builds the OS file and fills in the image and root sizes.
func buildCairn(ctx context.Context, cairn, osFile, out string, sys *System) error {
	cmd := exec.CommandContext(ctx, cairn, "build", "-o", out, osFile)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s build %s: %w\n%s", cairn, osFile, err, b)
	}
	name := strings.TrimSuffix(filepath.Base(osFile), filepath.Ext(osFile))
	ms, err := filepath.Glob(filepath.Join(out, name+"*.manifest.json"))
	if err != nil || len(ms) == 0 {
		return fmt.Errorf("no manifest for %s in %s", name, out)
	}
	m, err := manifest.Read(ms[0])
	if err != nil {
		return err
	}
	for _, a := range m.Artifacts {
		switch a.Kind {
		case "disk":
			sys.Image = filepath.Join(out, a.Name)
		case "root":
			sys.RootFS = a.Size
		}
	}
	if sys.Image == "" {
		return fmt.Errorf("%s: no disk artifact", ms[0])
	}
	return nil
}

func sizes(sys *System) error {
	s, err := peer.FileSizes(sys.Image)
	if err != nil {
		return err
	}
	sys.ImageApparent, sys.ImageAlloc = s.Apparent, s.Allocated
	sys.ImageZstd, err = figures.ZstdSize(sys.Image)
	return err
}

// runCapture runs a benchmark command, streaming its stderr, and returns its
// stdout (a Markdown report).
func runCapture(ctx context.Context, stderr io.Writer, name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w", name, err)
	}
	return out.String(), nil
}

func hostNote() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown host"
	}
	model := ""
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			model = strings.TrimSpace(v)
			break
		}
	}
	return fmt.Sprintf("%d-core host (%s)", strings.Count(string(b), "\nprocessor")+1, model)
}

func qemuVersion(ctx context.Context) string {
	b, err := exec.CommandContext(ctx, qemu.DefaultBinary, "--version").Output()
	if err != nil {
		return "unknown"
	}
	l, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(l)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "side:", err)
		}
		os.Exit(1)
	}
}
