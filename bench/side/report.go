package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"cairn.dev/cairn/bench/internal/figures"

	"cairn.dev/cairn/bench/peer"
)

// Stat summarises one metric.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// Summary is one system's boot figures.
type Summary struct {
	WallToHTTP   Stat `json:"qemu_start_to_http_ms"`
	KernelShare  Stat `json:"kernel_to_pid1_ms"`
	WallExKernel Stat `json:"qemu_start_to_http_minus_kernel_ms"`
	MemUsedKiB   Stat `json:"mem_used_kib"`
	UserToHTTP   Stat `json:"user_space_start_to_http_ms"`
	Firmware     Stat `json:"firmware_and_loader_ms"`
	Failed       int  `json:"failed_boots"`
}

// Ratio is one Cairn/peer comparison.
type Ratio struct {
	Figure string  `json:"figure"`
	Unit   string  `json:"unit"`
	Cairn  float64 `json:"cairn"`
	Peer   float64 `json:"peer"`
	Ratio  float64 `json:"ratio"`
	Target float64 `json:"target,omitempty"` // at most; 0: none
	Met    *bool   `json:"met,omitempty"`
}

func stat(xs []float64) Stat {
	med, lo, hi, ok := figures.Spread(xs)
	if !ok {
		return Stat{}
	}
	return Stat{Median: med, Min: lo, Max: hi, N: len(xs)}
}

func summarise(samples []Sample, system string) Summary {
	var sum Summary
	var wall, kern, ex, mem, user, fw []float64
	for _, s := range samples {
		if s.System != system {
			continue
		}
		if s.Error != "" {
			sum.Failed++
			continue
		}
		wall, kern, ex = append(wall, s.WallToHTTP), append(kern, s.KernelShare), append(ex, s.WallExKernel)
		user, fw = append(user, s.UserToHTTP), append(fw, s.Firmware)
		if s.MemError == "" {
			mem = append(mem, s.MemUsedKiB)
		}
	}
	sum.WallToHTTP, sum.KernelShare, sum.WallExKernel, sum.MemUsedKiB = stat(wall), stat(kern), stat(ex), stat(mem)
	sum.UserToHTTP, sum.Firmware = stat(user), stat(fw)
	return sum
}

// ratios compares Cairn with the peer; with the median memory in use of
// the kernel floors with Cairn's and with the peer's kernel arguments (both
// > 0) it adds each system's memory above the floor with its own arguments.
func ratios(c, p System, cairnFloorKiB, peerFloorKiB float64) []Ratio {
	mk := func(fig, unit string, cv, pv, target float64) Ratio {
		r := Ratio{Figure: fig, Unit: unit, Cairn: cv, Peer: pv, Target: target}
		if pv > 0 && cv > 0 {
			r.Ratio = cv / pv
			if target > 0 {
				met := r.Ratio <= target
				r.Met = &met
			}
		}
		return r
	}
	rs := []Ratio{
		mk("QEMU start → first HTTP 200 (median)", "ms", c.Summary.WallToHTTP.Median, p.Summary.WallToHTTP.Median, 0),
		mk("… without the kernel's share (median)", "ms", c.Summary.WallExKernel.Median, p.Summary.WallExKernel.Median, 0.25),
		mk("kernel start → first user-space process (median)", "ms", c.Summary.KernelShare.Median, p.Summary.KernelShare.Median, 0),
		mk("first user-space process → HTTP 200, host clock (median)", "ms", c.Summary.UserToHTTP.Median, p.Summary.UserToHTTP.Median, 0),
		mk("firmware + systemd-boot, host clock (median)", "ms", c.Summary.Firmware.Median, p.Summary.Firmware.Median, 0),
		mk(memFigure, "MiB", c.Summary.MemUsedKiB.Median/1024, p.Summary.MemUsedKiB.Median/1024, 0.5),
		mk("disk image, zstd -3", "MiB", mib(c.ImageZstd), mib(p.ImageZstd), 0.2),
		mk("disk image, allocated (sparse)", "MiB", mib(c.ImageAlloc), mib(p.ImageAlloc), 0),
		mk("disk image, apparent", "MiB", mib(c.ImageApparent), mib(p.ImageApparent), 0),
		mk("root file system", "MiB", mib(c.RootFS), mib(p.RootFS), 0),
	}
	if cairnFloorKiB > 0 && peerFloorKiB > 0 && c.Summary.MemUsedKiB.N > 0 && p.Summary.MemUsedKiB.N > 0 {
		above := mk(aboveFloorFigure, "MiB", (c.Summary.MemUsedKiB.Median-cairnFloorKiB)/1024, (p.Summary.MemUsedKiB.Median-peerFloorKiB)/1024, 0)
		i := slices.IndexFunc(rs, func(r Ratio) bool { return r.Figure == memFigure })
		rs = slices.Insert(rs, i+1, above)
	}
	return rs
}

const (
	memFigure        = "memory in use when the service answers (median)"
	aboveFloorFigure = "memory in use above the kernel floor with the system's own kernel arguments (median)"
)

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func writeMarkdown(w io.Writer, r *Report, took time.Duration) {
	fmt.Fprintf(w, "## Cairn and a systemd + podman peer, side by side\n\n")
	floorRuns := ""
	if len(r.Floors) > 0 {
		floorRuns = fmt.Sprintf(", and %d of the kernel alone with each system's kernel arguments after each round", r.Runs)
	}
	fmt.Fprintf(w, "%s, %s, %s, -accel tcg, 1 vCPU, %s, OVMF → systemd-boot, virtio disk (snapshot), user network; %d boots per system, alternating%s; whole run %.1f min.\n",
		r.Date, r.Host, r.QEMU, r.Mem, r.Runs, floorRuns, took.Minutes())
	if r.PeerMet != nil {
		fmt.Fprintf(w, "Peer: Debian 12 minbase + %s, kernel %s; the web image preloaded in podman's storage; warmed by one boot at build time (cache key %s). Memory is read from the web example's GET /meminfo on both systems; no other container runs.\n",
			strings.Join(peer.Packages, ", "), r.PeerMet.Kernel, r.PeerMet.Key)
	}
	fmt.Fprintln(w)
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "| figure | Cairn | peer | Cairn/peer | target |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
		for _, x := range r.Ratios {
			target := ""
			if x.Target > 0 {
				verdict := "not measured"
				if x.Met != nil {
					verdict = map[bool]string{true: "met", false: "NOT met"}[*x.Met]
				}
				target = fmt.Sprintf("≤ %.2f (%s)", x.Target, verdict)
			}
			ratio := "–"
			if x.Ratio > 0 {
				ratio = fmt.Sprintf("%.3f", x.Ratio)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", x.Figure, num(x.Cairn, x.Unit), num(x.Peer, x.Unit), ratio, target)
		}
		fmt.Fprintln(w)
		if len(r.Floors) > 0 {
			memTarget := 0.0
			for _, x := range r.Ratios {
				if x.Figure == memFigure {
					memTarget = x.Target
				}
			}
			note := floorNote(floorKiB(r.Floors, "cairn")/1024, floorKiB(r.Floors, "peer")/1024, r.Peer.Summary.MemUsedKiB.Median/1024, memTarget)
			if d := floorsDiffNote(floorOf(r.Floors, "cairn"), floorOf(r.Floors, "peer")); d != "" {
				note = strings.TrimSpace(note + " " + d)
			}
			if note != "" {
				fmt.Fprintf(w, "%s\n\n", note)
			}
		}
	}
	fmt.Fprintln(w, "| system | figure | median | min | max | n |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, sys := range []System{r.Cairn, r.Peer} {
		if sys.Name == "" {
			continue
		}
		s := sys.Summary
		for _, row := range []struct {
			name string
			st   Stat
			unit string
			div  float64
		}{
			{"QEMU start → HTTP 200", s.WallToHTTP, "ms", 1},
			{"kernel share", s.KernelShare, "ms", 1},
			{"→ HTTP 200 without kernel share", s.WallExKernel, "ms", 1},
			{"first user-space process → HTTP 200 (host clock)", s.UserToHTTP, "ms", 1},
			{"firmware + systemd-boot (host clock of the early line − kernel share)", s.Firmware, "ms", 1},
			{"memory in use", s.MemUsedKiB, "MiB", 1024},
		} {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d |\n", sys.Name, row.name,
				num(row.st.Median/row.div, row.unit), num(row.st.Min/row.div, row.unit), num(row.st.Max/row.div, row.unit), row.st.N)
		}
		if s.Failed > 0 {
			fmt.Fprintf(w, "| %s | failed boots | %d | | | |\n", sys.Name, s.Failed)
		}
		fmt.Fprintf(w, "| %s | image apparent / allocated / zstd -3 | %.0f / %.1f / %.1f MiB | | | |\n", sys.Name, mib(sys.ImageApparent), mib(sys.ImageAlloc), mib(sys.ImageZstd))
		fmt.Fprintf(w, "| %s | root file system (%s) | %.1f MiB | | | |\n", sys.Name, sys.RootFSNote, mib(sys.RootFS))
	}
	for _, f := range r.Floors {
		fmt.Fprintf(w, "| %s | kernel command line | `%s` | | | |\n", f.Name, f.Cmdline)
		for _, row := range []struct {
			name string
			st   Stat
			unit string
			div  float64
		}{
			{"kernel start → /init (guest clock)", f.KernelShare, "ms", 1},
			{"kernel start → /proc/meminfo read (guest clock)", f.ReadAt, "ms", 1},
			{"memory in use, kernel alone (floor)", f.MemUsedKiB, "MiB", 1024},
			{"AnonPages (the Go /init's own)", f.AnonPagesKiB, "MiB", 1024},
		} {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d |\n", f.Name, row.name,
				num(row.st.Median/row.div, row.unit), num(row.st.Min/row.div, row.unit), num(row.st.Max/row.div, row.unit), row.st.N)
		}
		if f.Failed > 0 {
			fmt.Fprintf(w, "| %s | failed boots | %d | | | |\n", f.Name, f.Failed)
		}
		fmt.Fprintf(w, "| %s | initramfs (zstd newc: /init %.1f MiB, static Go) | %.1f MiB | | | |\n", f.Name, mib(f.InitBytes), mib(f.InitramfsBytes))
	}
	if mt := memTotals(r); mt != "" {
		fmt.Fprintf(w, "\nMemTotal (median): %s.\n", mt)
	}
	writeBreakdown(w, r)
	for _, k := range []string{"runtime", "update"} {
		if md, ok := r.Extra[k]; ok {
			fmt.Fprintf(w, "\n### %s benchmark\n\n%s\n", k, stripJSON("\n"+md))
		}
	}
}

// stripJSON drops the trailing JSON (fenced or not) of a sub-benchmark's
// Markdown and demotes its headings (the JSON is kept in extra_reports).
func stripJSON(md string) string {
	for _, sep := range []string{"```json", "\n{"} {
		if i := strings.Index(md, sep); i >= 0 {
			md = md[:i]
		}
	}
	return strings.TrimSpace(strings.ReplaceAll(md, "\n## ", "\n#### "))
}

func num(v float64, unit string) string {
	if v == 0 {
		return "–"
	}
	if unit == "ms" {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

const (
	docsBegin = "<!-- bench/side: begin (generated by `make bench`) -->"
	docsEnd   = "<!-- bench/side: end -->"
)

// updateDocs replaces the generated section of the docs file (or appends
// one).
func updateDocs(path string, r Report, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	s := string(b)
	section := docsBegin + "\n\n" + fmt.Sprintf("Latest side-by-side run: %s; raw results in `bench/results/side-%s.json`.\n\n", r.Date, r.Date) +
		strings.Replace(md, "## ", "### ", 1) + "\n" + docsEnd
	i, j := strings.Index(s, docsBegin), strings.Index(s, docsEnd)
	if i >= 0 && j > i {
		s = s[:i] + section + s[j+len(docsEnd):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + section + "\n"
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	return nil
}

// writeBreakdown prints the median of each /proc/meminfo breakdown field
// per system, to show where the memory in use goes.
func writeBreakdown(w io.Writer, r *Report) {
	var systems []string
	for _, sys := range []System{r.Cairn, r.Peer} {
		if sys.Name != "" {
			systems = append(systems, sys.Name)
		}
	}
	if len(systems) == 0 {
		return
	}
	when := "when the service answers"
	for _, f := range r.Floors {
		systems = append(systems, f.Name)
	}
	if len(r.Floors) > 0 {
		when += " (the kernel floors: when their /init reads it)"
	}
	fmt.Fprintf(w, "\n/proc/meminfo %s (median, MiB):\n\n| field |", when)
	for _, name := range systems {
		fmt.Fprintf(w, " %s |", name)
	}
	fmt.Fprint(w, "\n|---|")
	for range systems {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, f := range breakdownFields {
		fmt.Fprintf(w, "| %s |", f)
		for _, name := range systems {
			var xs []float64
			for _, s := range r.Samples {
				if v, ok := s.Meminfo[f]; ok && s.System == name && s.Error == "" {
					xs = append(xs, v)
				}
			}
			fmt.Fprintf(w, " %s |", num(stat(xs).Median/1024, "MiB"))
		}
		fmt.Fprintln(w)
	}
}

// memTotals lists each measured system's median MemTotal, to show that the
// machines' memory maps match.
func memTotals(r *Report) string {
	var names []string
	for _, sys := range []System{r.Cairn, r.Peer} {
		if sys.Name != "" {
			names = append(names, sys.Name)
		}
	}
	for _, f := range r.Floors {
		names = append(names, f.Name)
	}
	var parts []string
	for _, name := range names {
		var xs []float64
		for _, s := range r.Samples {
			if s.System == name && s.Error == "" && s.MemError == "" && s.MemTotalKiB > 0 {
				xs = append(xs, s.MemTotalKiB)
			}
		}
		if len(xs) > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f kB", name, stat(xs).Median))
		}
	}
	return strings.Join(parts, ", ")
}
