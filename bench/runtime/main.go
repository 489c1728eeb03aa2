// Command runtime measures container start→exit latency of Cairn's runtime
// against Debian's runc and crun (issue 4, "Performance"). Every iteration
// runs the same busybox /bin/true bundle once per runtime, rotating the
// order, each container with its own network namespace:
//
//	cairn-api      runtime/container in this process, as PID 1 uses it:
//	               parse config.json, Create, Start, Wait, Delete
//	cairn-runtime  the OCI CLI: `cairn-runtime run --bundle B ID` (skipped
//	               with a note when no binary supports it)
//	runc, crun     `<rt> --root R run --bundle B ID`, wall time of the command
//
// The bundle is Cairn's default spec (Docker's isolation: namespaces incl.
// network and cgroup, Docker's capability set and seccomp profile, masked
// and read-only paths, no_new_privs) with ociVersion 1.0.2 for crun 1.8.1.
// It prints n, median, p95, min, max, the ratios Cairn/crun and Cairn/runc,
// and the peak RSS per started container, as Markdown followed by JSON.
//
// Peak RSS comes from separate untimed runs (-rss-n): for the CLIs GNU
// time's %M (wait4 maxrss, covering `runc init`, crun's container child,
// cairn-runtime's stage); for cairn-api the stage's VmHWM while it waits on
// the exec fifo. This process's own wait4 figures are useless for that: a
// Go child starts with CLONE_VM|CLONE_VFORK and execve records the old
// mm's (our) high-water RSS in the child's maxrss.
//
// crun 1.8.1 refuses hybrid cgroup hosts whose cgroup2 tree has
// controllers; when the only one is hugetlb, the bench moves it to a v1
// mount for the run and moves it back at the end (also on SIGINT/SIGTERM).
//
// Needs root. Run from the repository root (bin/cairn-init, called as
// cairn-runtime, is the CLI candidate; -cairn-runtime PATH picks another):
//
//	go run ./bench/runtime -n 200 -json out/bench-runtime.json
//	make bench-runtime
package main

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/container"
)

// Result is one runtime's outcome.
type Result struct {
	Name    string    `json:"name"`
	Method  string    `json:"method"`
	Version string    `json:"version,omitempty"`
	Skipped string    `json:"skipped,omitempty"`
	Errors  int       `json:"errors"`
	Error   string    `json:"first_error,omitempty"`
	Stat    Stat      `json:"stat"`
	RSS     RSS       `json:"peak_rss"`
	Samples []float64 `json:"samples_ms,omitempty"`
}

// CgroupReport is what the bench found and changed in the host's cgroups.
type CgroupReport struct {
	Mode          string   `json:"mode"`
	V2Mount       string   `json:"v2_mount,omitempty"`
	V2Controllers []string `json:"v2_controllers"`
	Plan          string   `json:"plan"`
	Action        string   `json:"action"`
	Undo          string   `json:"undo,omitempty"`
	CairnCgroup   string   `json:"cairn_cgroup_example,omitempty"`
	Leftovers     []string `json:"leftover_cgroups_removed,omitempty"`
}

// Report is the JSON output.
type Report struct {
	Date       string             `json:"date"`
	Host       map[string]string  `json:"host"`
	N          int                `json:"n"`
	Warmup     int                `json:"warmup"`
	Seccomp    bool               `json:"bundle_seccomp"`
	Namespaces []string           `json:"bundle_namespaces"`
	Cgroups    CgroupReport       `json:"cgroups"`
	Results    []*Result          `json:"results"`
	Ratios     map[string]float64 `json:"median_ratios"`
	Target     string             `json:"target"`
	Notes      []string           `json:"notes"`
}

type config struct {
	n, warmup, rssN int
	jsonOut         string
	busybox         string
	runc, crun      string
	cairnRuntime    string
	timeBin         string
	seccomp         bool
	samples         bool
	timeout         time.Duration
}

func main() {
	container.MaybeStage()
	var c config
	fs := flag.NewFlagSet("bench/runtime", flag.ExitOnError)
	fs.IntVar(&c.n, "n", 200, "timed runs per runtime")
	fs.IntVar(&c.warmup, "warmup", 10, "untimed warm-up runs per runtime")
	fs.IntVar(&c.rssN, "rss-n", 10, "untimed runs per runtime that measure peak RSS")
	fs.StringVar(&c.timeBin, "time", "/usr/bin/time", "GNU time, for the CLIs' peak RSS")
	fs.StringVar(&c.jsonOut, "json", "", "also write the JSON report to `FILE`")
	fs.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox for the rootfs")
	fs.StringVar(&c.runc, "runc", "runc", "runc binary (\"\" or \"none\" skips it)")
	fs.StringVar(&c.crun, "crun", "crun", "crun binary (\"\" or \"none\" skips it)")
	fs.StringVar(&c.cairnRuntime, "cairn-runtime", "auto", "cairn-runtime CLI: a path, \"auto\" (PATH, bin/cairn-runtime, bin/cairn-init as argv[0] cairn-runtime) or \"none\"")
	fs.BoolVar(&c.seccomp, "seccomp", true, "include Docker's default seccomp profile in the bundle (for every runtime)")
	fs.BoolVar(&c.samples, "samples", false, "include every sample in the JSON")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "limit for one container run")
	_ = fs.Parse(os.Args[1:])
	if c.n < 1 || c.warmup < 0 || c.rssN < 0 {
		fmt.Fprintln(os.Stderr, "bench/runtime: -n must be ≥ 1, -warmup and -rss-n ≥ 0")
		os.Exit(2)
	}
	// A closed stdout (| head) must not kill us before the cleanup.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	rep, err := run(ctx, c, os.Stderr)
	stop()
	if rep != nil { // cleanup is done: print even after a cleanup error
		if werr := writeReport(os.Stdout, rep, c.jsonOut); werr != nil {
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/runtime:", err)
		os.Exit(1)
	}
}

// writeReport prints the Markdown and the JSON and writes the JSON to
// jsonOut if set.
func writeReport(w io.Writer, rep *Report, jsonOut string) error {
	writeMarkdown(w, rep)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n```json\n%s\n```\n", js)
	if jsonOut != "" {
		if err := os.WriteFile(jsonOut, append(js, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// run does the measurements and returns the report (nil if there is
// nothing to report) after undoing every change to the host.
func run(ctx context.Context, c config, logw io.Writer) (rep *Report, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("must run as root (namespaces, mounts, cgroups)")
	}
	logf := func(format string, a ...any) { fmt.Fprintf(logw, "bench/runtime: "+format+"\n", a...) }
	if err := checkStatic(c.busybox); err != nil {
		return nil, fmt.Errorf("%w (apt-get install busybox-static)", err)
	}
	tmp, err := os.MkdirTemp("", "cairn-bench-runtime-")
	if err != nil {
		return nil, err
	}
	// Cleanup uses its own context: the run's may be cancelled by a signal.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), time.Minute)
	}
	prefix := fmt.Sprintf("cbr%d-", os.Getpid()) // every container id and cgroup of this run
	var runners []runner
	report := &Report{
		Date: time.Now().UTC().Format(time.RFC3339), Host: hostInfo(), N: c.n, Warmup: c.warmup, Seccomp: c.seccomp,
		Ratios: map[string]float64{},
	}
	var move *hugetlbMove
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		var errs []error
		for _, r := range runners {
			if e := r.Close(cctx); e != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.Name(), e))
			}
		}
		removed, e := sweepCgroups(prefix)
		if e != nil {
			errs = append(errs, e)
		}
		if len(removed) > 0 {
			logf("removed %d leftover cgroups: %s", len(removed), strings.Join(removed, " "))
		}
		if move != nil {
			t0, createdDir := time.Now(), move.createdDir
			if e := move.undo(time.Minute); e != nil {
				errs = append(errs, fmt.Errorf("undo hugetlb move: %w (undo by hand: umount %s && rmdir %s)", e, hugetlbDir, hugetlbDir))
				report.Cgroups.Undo = "FAILED: " + e.Error()
			} else {
				_, ctl, _ := readLayout()
				report.Cgroups.Undo = fmt.Sprintf("unmounted %s%s; hugetlb back on cgroup2 after %v (cgroup2 controllers %v)",
					hugetlbDir, map[bool]string{true: " and removed the directory", false: ""}[createdDir], time.Since(t0).Round(time.Millisecond), ctl)
				logf("undid the hugetlb move: %s", report.Cgroups.Undo)
			}
		}
		if e := os.RemoveAll(tmp); e != nil {
			errs = append(errs, e)
		}
		if e := errors.Join(errs...); e != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", e))
		}
	}()

	// Bundle.
	bundle := filepath.Join(tmp, "bundle")
	spec, err := makeBundle(bundle, c.busybox, c.seccomp)
	if err != nil {
		return nil, err
	}
	for _, ns := range spec.Linux.Namespaces {
		report.Namespaces = append(report.Namespaces, string(ns.Type))
	}

	// cairn-api; the probe also tells which cgroup its containers get.
	api, err := newAPIRunner(filepath.Join(tmp, "cairn-state"), prefix+"cairn", bundle)
	if err != nil {
		return nil, err
	}
	runners = append(runners, api)
	apiRes := &Result{Name: api.Name(), Method: "runtime/container in-process: parse config.json, Create, Start, Wait, Delete"}
	pctx, cancel := context.WithTimeout(ctx, c.timeout)
	_, report.Cgroups.CairnCgroup, err = api.stageRSS(pctx, prefix+"api-probe")
	cancel()
	if err != nil {
		api.Cleanup(context.Background(), prefix+"api-probe")
		return nil, fmt.Errorf("cairn-api does not run the bundle: %w", err)
	}
	if report.Cgroups.CairnCgroup == "" {
		report.Notes = append(report.Notes, "cairn-api ran WITHOUT a cgroup (no cgroup2 mount found): not full isolation")
	}

	// The OCI CLIs.
	var cairnCLIs []string
	cairnNote := "disabled by flag"
	switch c.cairnRuntime {
	case "none", "":
	case "auto":
		cairnCLIs = findCairnRuntime(tmp)
		if len(cairnCLIs) == 0 {
			cairnNote = "no binary found (cairn-runtime in PATH, bin/cairn-runtime, bin/cairn-init)"
			report.Notes = append(report.Notes, "cairn-runtime (OCI CLI) skipped: "+cairnNote)
		}
	default:
		cairnCLIs = []string{c.cairnRuntime}
	}

	// crun and hybrid cgroups.
	l, ctl, err := readLayout()
	if err != nil {
		return nil, err
	}
	plan, why := hugetlbPlan(l, ctl)
	report.Cgroups = CgroupReport{Mode: l.Mode, V2Mount: l.V2Mount, V2Controllers: ctl, Plan: why, Action: "none", CairnCgroup: report.Cgroups.CairnCgroup}
	if _, lerr := exec.LookPath(c.crun); plan && lerr == nil && c.crun != "none" {
		if move, err = applyHugetlbMove(); err != nil {
			return nil, err
		}
		_, after, _ := readLayout()
		report.Cgroups.Action = fmt.Sprintf("mounted a v1 hugetlb hierarchy at %s (mkdir: %v); cgroup2 controllers now %v", hugetlbDir, move.createdDir, after)
		report.Cgroups.Undo = "not done (interrupted?)"
		logf("%s", report.Cgroups.Action)
	}

	results := map[string]*Result{api.Name(): apiRes}
	active := []runner{api}
	// addCLI probes bin with each set of global flags (stateRoot stands
	// for a fresh state directory) and activates the first that runs the
	// bundle.
	const stateRoot = "\x00state"
	addCLI := func(res *Result, bin string, variants ...[]string) bool {
		results[res.Name] = res
		path, err := exec.LookPath(bin)
		if err != nil {
			res.Skipped = fmt.Sprintf("%s not found (apt-get install -y %s)", bin, res.Name)
			return false
		}
		if res.Version == "" {
			res.Version = versionOf(ctx, path)
		}
		for k, v := range variants {
			global := slices.Clone(v)
			state := ""
			if i := slices.Index(global, stateRoot); i >= 0 {
				state = filepath.Join(tmp, fmt.Sprintf("%s-state-%d", res.Name, len(runners)))
				if err := os.Mkdir(state, 0o700); err != nil {
					res.Skipped = err.Error()
					return false
				}
				global[i] = state
			}
			r, err := newCLIRunner(res.Name, path, global, state, bundle, tmp)
			if err != nil {
				res.Skipped = err.Error()
				return false
			}
			runners = append(runners, r)
			if _, err := runOnce(ctx, r, fmt.Sprintf("%s%s-probe%d", prefix, res.Name, k), c.timeout); err != nil {
				res.Skipped = "probe run failed: " + err.Error()
				continue
			}
			res.Skipped = ""
			res.Method = fmt.Sprintf("`%s %s run --bundle B ID`, wall time", res.Name, strings.ReplaceAll(strings.Join(v, " "), stateRoot, "R"))
			active = append(active, r)
			return true
		}
		return false
	}
	for _, cl := range []struct{ name, bin string }{{"runc", c.runc}, {"crun", c.crun}} {
		res := &Result{Name: cl.name, Method: "`" + cl.name + " --root R run --bundle B ID`, wall time"}
		if cl.bin == "" || cl.bin == "none" {
			res.Skipped = "disabled by flag"
			results[cl.name] = res
			continue
		}
		addCLI(res, cl.bin, []string{"--root", stateRoot})
	}
	cliRes := &Result{Name: "cairn-runtime", Method: "`cairn-runtime --root R run --bundle B ID`, wall time"}
	results[cliRes.Name] = cliRes
	if len(cairnCLIs) == 0 {
		cliRes.Skipped = cairnNote
	}
	var fails []string
	for _, p := range cairnCLIs {
		cliRes.Version = ""
		// Its own cgroup parent (swept at the end) and state root if it
		// knows those flags, else its defaults.
		if addCLI(cliRes, p, []string{"--root", stateRoot, "--cgroup-parent", prefix + "cli"}, []string{"--root", stateRoot}, nil) {
			cliRes.Version = strings.TrimSpace(p + " " + cliRes.Version)
			fails = nil
			break
		}
		fails = append(fails, p+": "+cliRes.Skipped)
	}
	if len(fails) > 0 {
		cliRes.Skipped = "no candidate runs the bundle: " + strings.Join(fails, "; ")
		report.Notes = append(report.Notes, "cairn-runtime (OCI CLI) skipped (a bin/cairn-init older than its cairn-runtime mode? `make build`): "+strings.Join(fails, "; "))
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	// Warm-up, then timed runs; the order rotates every iteration.
	rss := map[string][]int64{}
	durs := map[string][]float64{}
	failed := map[string]int{}
	total := c.warmup + c.n
	for i := range total {
		for j := range active {
			r := active[(i+j)%len(active)]
			if results[r.Name()].Skipped != "" {
				continue
			}
			id := fmt.Sprintf("%s%s-%d", prefix, r.Name(), i)
			s, err := runOnce(ctx, r, id, c.timeout)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("interrupted: %w", ctx.Err())
			}
			res := results[r.Name()]
			if err != nil {
				res.Errors++
				if res.Error == "" {
					res.Error = err.Error()
				}
				failed[r.Name()]++
				logf("%s: %v", r.Name(), err)
				if failed[r.Name()] >= 5 {
					res.Skipped = "stopped after 5 consecutive failures"
				}
				continue
			}
			failed[r.Name()] = 0
			if i < c.warmup {
				continue
			}
			durs[r.Name()] = append(durs[r.Name()], float64(s.dur.Microseconds())/1000)
		}
		if (i+1)%25 == 0 || i+1 == total {
			logf("iteration %d/%d (%d warm-up)", i+1, total, c.warmup)
		}
	}

	// Peak RSS per started container, untimed (see cliRunner, stageRSS).
	timeBin, _ := exec.LookPath(c.timeBin)
	for k := range c.rssN {
		for _, r := range active {
			res := results[r.Name()]
			if res.Skipped != "" {
				continue
			}
			id := fmt.Sprintf("%s%s-rss-%d", prefix, r.Name(), k)
			rctx, cancel := context.WithTimeout(ctx, c.timeout)
			var kib int64
			var err error
			switch r := r.(type) {
			case *apiRunner:
				kib, _, err = r.stageRSS(rctx, id)
			case *cliRunner:
				if timeBin == "" {
					cancel()
					continue
				}
				kib, err = r.peakRSS(rctx, timeBin, id, tmp)
			}
			cancel()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if err != nil {
				logf("%s RSS run: %v", r.Name(), err)
				cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
				r.Cleanup(cctx, id)
				ccancel()
				continue
			}
			rss[r.Name()] = append(rss[r.Name()], kib)
		}
	}

	// Every runtime removes its cgroups; whatever carries this run's prefix
	// now (except cairn-api's parent group) leaked.
	removed, err := sweepCgroups(prefix)
	if err != nil {
		logf("cgroup sweep: %v", err)
	}
	for _, p := range removed {
		if b := filepath.Base(p); b != prefix+"cairn" && b != prefix+"cli" { // parents
			report.Cgroups.Leftovers = append(report.Cgroups.Leftovers, p)
		}
	}
	if n := len(report.Cgroups.Leftovers); n > 0 {
		report.Notes = append(report.Notes, fmt.Sprintf("%d cgroups of this run were left behind and removed: %s", n, strings.Join(report.Cgroups.Leftovers, " ")))
	}

	for _, name := range []string{"cairn-api", "cairn-runtime", "crun", "runc"} {
		res := results[name]
		if res == nil {
			continue
		}
		res.Stat = summarise(durs[name])
		if c.samples {
			res.Samples = durs[name]
		}
		switch {
		case name == "cairn-api":
			res.RSS = summariseRSS(rss[name], "the stage's VmHWM (/proc/PID/status) while it waits on the exec fifo, i.e. after all its set-up; untimed runs")
		case timeBin == "":
			res.RSS = RSS{Method: "not measured: no " + c.timeBin + " (apt-get install time)"}
		default:
			res.RSS = summariseRSS(rss[name], "GNU time %M (wait4 maxrss of the command and the children it reaped; floor ≈ 1 MB, time's own); untimed runs")
		}
		report.Results = append(report.Results, res)
	}
	med := func(n string) float64 { return results[n].Stat.Median }
	for _, cn := range []string{"cairn-api", "cairn-runtime"} {
		for _, o := range []string{"crun", "runc"} {
			if r := ratio(med(cn), med(o)); r > 0 {
				report.Ratios[cn+"/"+o] = r
			}
		}
	}
	if r, ok := report.Ratios["cairn-api/crun"]; ok {
		verdict := "met"
		if r > 0.8 {
			verdict = "NOT met"
		}
		report.Target = fmt.Sprintf("cairn-api median ≤ 0.8 × crun median: %.2f × → %s", r, verdict)
	} else {
		report.Target = "not evaluated (no crun or cairn-api median)"
	}
	report.Notes = append(report.Notes,
		"Samples are wall times of one whole container life (create+start+exit+delete); runtimes alternate every iteration, rotating the order.",
		"Netns, pid/mount/ipc/uts namespaces die with each container; cgroups are removed by each runtime (leftovers with this run's prefix are swept at the end).",
	)
	if l.Mode == "hybrid" {
		report.Notes = append(report.Notes, "Hybrid cgroup host: runc and crun create per-controller v1 cgroups, Cairn one cgroup2 group ("+l.V2Mount+") without controllers (no limits in the bundle); on a unified host all three use cgroup2.")
	}
	// The deferred cleanup adds the undo of the hugetlb move.
	return report, nil
}

// runOnce runs one container with a time limit and cleans up after a failure.
func runOnce(ctx context.Context, r runner, id string, limit time.Duration) (sample, error) {
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	s, err := r.Run(rctx, id)
	if err != nil {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		r.Cleanup(cctx, id)
		ccancel()
	}
	return s, err
}

// findCairnRuntime lists candidates for the OCI CLI: cairn-runtime in
// PATH, bin/cairn-runtime, and bin/cairn-init called as cairn-runtime
// (argv[0] mode, through a symlink in tmp). The caller probes each with a
// real run: a cairn-init without the mode exits with "must run as PID 1".
func findCairnRuntime(tmp string) []string {
	var cands []string
	if p, err := exec.LookPath("cairn-runtime"); err == nil {
		cands = append(cands, p)
	}
	if st, err := os.Stat("bin/cairn-runtime"); err == nil && !st.IsDir() {
		p, _ := filepath.Abs("bin/cairn-runtime")
		cands = append(cands, p)
	}
	if st, err := os.Stat("bin/cairn-init"); err == nil && !st.IsDir() {
		abs, _ := filepath.Abs("bin/cairn-init")
		link := filepath.Join(tmp, "cairn-runtime")
		if err := os.Symlink(abs, link); err == nil {
			cands = append(cands, link)
		}
	}
	return cands
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func versionOf(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	return firstLine(string(out))
}

// checkStatic fails unless path is a statically linked ELF (no PT_INTERP).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("busybox %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("busybox %s is dynamically linked", path)
		}
	}
	return nil
}

func hostInfo() map[string]string {
	h := map[string]string{"cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h["kernel"] = unix.ByteSliceToString(u.Release[:])
	}
	return h
}

func writeMarkdown(w io.Writer, r *Report) {
	fmt.Fprintf(w, "## Container start→exit: busybox /bin/true, own netns (n=%d per runtime, %d warm-up)\n\n", r.N, r.Warmup)
	fmt.Fprintf(w, "Host: kernel %s, %s CPUs. Bundle: Cairn's default spec (namespaces %s; default caps (Docker's without CAP_MKNOD), masked/read-only paths, no_new_privs; seccomp: %v), ociVersion %s.\n\n",
		r.Host["kernel"], r.Host["cpus"], strings.Join(r.Namespaces, ","), r.Seccomp, bundleOCIVersion)
	fmt.Fprintln(w, "| runtime | n | median ms | p95 ms | min ms | max ms | mean ms | errors | peak RSS median / max (MiB) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, res := range r.Results {
		if res.Skipped != "" && res.Stat.N == 0 {
			fmt.Fprintf(w, "| %s | – | skipped: %s | | | | | | |\n", res.Name, oneLine(res.Skipped))
			continue
		}
		s := res.Stat
		rss := "–"
		if res.RSS.N > 0 {
			rss = fmt.Sprintf("%.1f / %.1f", float64(res.RSS.MedianKiB)/1024, float64(res.RSS.MaxKiB)/1024)
		}
		fmt.Fprintf(w, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %s |\n", res.Name, s.N, s.Median, s.P95, s.Min, s.Max, s.Mean, res.Errors, rss)
	}
	fmt.Fprintln(w)
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "- median ratio %s: **%.2f**\n", k, r.Ratios[k])
	}
	fmt.Fprintf(w, "- target: %s\n", r.Target)
	fmt.Fprintf(w, "- cgroups: %s host; %s; action: %s\n", r.Cgroups.Mode, r.Cgroups.Plan, r.Cgroups.Action)
	if r.Cgroups.Undo != "" {
		fmt.Fprintf(w, "  - undo: %s\n", r.Cgroups.Undo)
	}
	if r.Cgroups.CairnCgroup != "" {
		fmt.Fprintf(w, "  - a cairn-api container's cgroup: %s\n", r.Cgroups.CairnCgroup)
	}
	for _, res := range r.Results {
		if res.Skipped != "" && res.Stat.N == 0 {
			continue
		}
		desc := res.Method
		if res.Version != "" {
			desc = res.Version + " — " + desc
		}
		fmt.Fprintf(w, "- %s: %s\n", res.Name, desc)
		if res.RSS.Method != "" && res.RSS.N > 0 {
			fmt.Fprintf(w, "  - RSS: %s\n", res.RSS.Method)
		}
		if res.Error != "" {
			fmt.Fprintf(w, "  - first error: %s\n", oneLine(res.Error))
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
