package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/bench/peer"
)

func TestParseEarly(t *testing.T) {
	tests := []struct {
		line string
		want float64
		ok   bool
	}{
		{"cairn: early: start t=1.648", 1.648, true},
		{"[    2.1] peer: early: start t=2.31", 2.31, true},
		{"peer: early: start t=", 0, false},
		{"peer: early: start t=-1", 0, false},
		{"peer: early: start t=9999999", 0, false},
		{"other: early: start t=1", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseEarly(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseEarly(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

const meminfo = `MemTotal:         485432 kB
MemFree:          300000 kB
MemAvailable:     400000 kB
Buffers:            1000 kB
`

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		total, avl float64
		wantErr    string
	}{
		{"ok", meminfo, 485432, 400000, ""},
		{"missing", "MemTotal: 1 kB\n", 0, 0, "missing"},
		{"unit", "MemTotal: 1 MB\nMemAvailable: 1 kB\n", 0, 0, "meminfo line 1: field MemTotal"},
		{"number", "MemTotal: 1 kB\nMemAvailable: x kB\n", 0, 0, "meminfo line 2: field MemAvailable"},
		{"negative", "MemTotal: -1 kB\nMemAvailable: 1 kB\n", 0, 0, "line 1"},
		{"avail > total", "MemTotal: 1 kB\nMemAvailable: 2 kB\n", 0, 0, "> MemTotal"},
		{"html", "<html>404</html>", 0, 0, "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fields := map[string]float64{}
			tot, avl, err := ParseMeminfo(strings.NewReader(tc.in), fields)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || tot != tc.total || avl != tc.avl {
				t.Fatalf("got %v %v %v", tot, avl, err)
			}
			if fields["MemFree"] != 300000 || fields["Buffers"] != 1000 || len(fields) != 2 {
				t.Fatalf("breakdown %v", fields)
			}
		})
	}
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte(meminfo))
	f.Add([]byte("MemTotal: 18446744073709551615 kB\nMemAvailable: 0 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tot, avl, err := ParseMeminfo(bytes.NewReader(b), map[string]float64{})
		if err == nil && (avl > tot || tot < 0 || avl < 0) {
			t.Fatalf("accepted total %v avail %v", tot, avl)
		}
	})
}

func TestStatAndRatios(t *testing.T) {
	if s := stat([]float64{5, 1, 3, 2}); s.Median != 2.5 || s.Min != 1 || s.Max != 5 || s.N != 4 {
		t.Fatalf("stat even: %+v", s)
	}
	if s := stat([]float64{5, 1, 3}); s.Median != 3 {
		t.Fatalf("stat odd: %+v", s)
	}
	samples := []Sample{
		{System: "c", WallToHTTP: 1000, KernelShare: 400, WallExKernel: 600, MemUsedKiB: 20 << 10, Meminfo: map[string]float64{"AnonPages": 1024}},
		{System: "c", Error: "boom"},
		{System: "p", WallToHTTP: 5000, KernelShare: 600, WallExKernel: 4400, MemUsedKiB: 100 << 10},
		{System: "p", WallToHTTP: 6000, KernelShare: 600, WallExKernel: 5400, MemError: "404"},
	}
	c := System{Name: "c", Summary: summarise(samples, "c"), ImageZstd: 10 << 20}
	p := System{Name: "p", Summary: summarise(samples, "p"), ImageZstd: 100 << 20}
	if c.Summary.Failed != 1 || p.Summary.MemUsedKiB.N != 1 || p.Summary.WallToHTTP.N != 2 {
		t.Fatalf("summaries %+v %+v", c.Summary, p.Summary)
	}
	byFig := map[string]Ratio{}
	for _, r := range ratios(c, p, 0, 0) {
		byFig[r.Figure] = r
	}
	ex := byFig["… without the kernel's share (median)"]
	if ex.Ratio != 600.0/4900 || ex.Met == nil || !*ex.Met {
		t.Fatalf("boot ratio %+v", ex)
	}
	mem := byFig["memory in use when the service answers (median)"]
	if mem.Ratio != 0.2 || !*mem.Met {
		t.Fatalf("mem ratio %+v", mem)
	}
	z := byFig["disk image, zstd -3"]
	if z.Ratio != 0.1 || !*z.Met {
		t.Fatalf("zstd ratio %+v", z)
	}
	if _, ok := byFig[aboveFloorFigure]; ok {
		t.Fatalf("above-floor row without a floor")
	}
	root := byFig["root file system"]
	if root.Ratio != 0 || root.Met != nil {
		t.Fatalf("root ratio without data %+v", root)
	}
	var md bytes.Buffer
	writeMarkdown(&md, &Report{Cairn: c, Peer: p, Ratios: ratios(c, p, 0, 0), Samples: samples}, 0)
	for _, want := range []string{"| AnonPages | 1.0 MiB | – |", "| disk image, zstd -3 | 10.0 MiB | 100.0 MiB | 0.100 | ≤ 0.20 (met) |", "| c | failed boots | 1 |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
}

func TestUpdateDocs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "perf.md")
	if err := os.WriteFile(p, []byte("# Performance\n\ntext\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, md := range []string{"## first\n", "## second\n"} {
		if err := updateDocs(p, Report{Date: "2026-01-0" + string(rune('1'+i))}, md); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(p)
	s := string(b)
	if strings.Count(s, docsBegin) != 1 || strings.Contains(s, "first") || !strings.Contains(s, "### second") || !strings.HasPrefix(s, "# Performance\n\ntext\n") {
		t.Fatalf("docs:\n%s", s)
	}
}

// TestFetchMeminfo: memory is read from the web example's GET /meminfo on
// the base URL it answers on; a failing endpoint is an error, not zeros.
func TestFetchMeminfo(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /meminfo", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, meminfo) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	fields := map[string]float64{}
	tot, avl, err := fetchMeminfo(context.Background(), srv.URL, fields)
	if err != nil || tot != 485432 || avl != 400000 || len(fields) == 0 {
		t.Fatalf("fetchMeminfo = %v, %v, %v (fields %v)", tot, avl, err, fields)
	}
	bad := httptest.NewServer(http.NotFoundHandler())
	defer bad.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := fetchMeminfo(ctx, bad.URL, nil); err == nil || !strings.Contains(err.Error(), "meminfo") {
		t.Errorf("404: error %v", err)
	}
}

func TestStripJSON(t *testing.T) {
	for in, want := range map[string]string{
		"\n## T\n\n| a |\n\n```json\n{}\n```\n": "#### T\n\n| a |",
		"\n| x |\n\n{\n \"a\": 1\n}\n":          "| x |",
		"\nplain\n":                             "plain",
	} {
		if got := stripJSON(in); got != want {
			t.Errorf("stripJSON(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFloorCmdlines(t *testing.T) {
	tests := []struct {
		name string
		fn   func(string) string
		in   string
		want string
	}{
		{"cairn", floorCmdline, "console=ttyS0 panic=1 quiet percpu_alloc=page cairn.slot=A cairn.version=1.0.0 cairn.root=PARTUUID=x", "console=ttyS0 panic=1 quiet percpu_alloc=page"},
		{"cairn, OS file args", floorCmdline, "console=ttyS0  quiet cairn.slot=A mitigations=off", "console=ttyS0 quiet mitigations=off"},
		{"cairn, empty", floorCmdline, "", ""},
		{"peer", peerFloorCmdline, peer.Cmdline, "console=ttyS0 panic=1 quiet"},
		{"peer, disk keys", peerFloorCmdline, "root=/dev/vda2 ro rootfstype=ext4 rootflags=noatime rootwait resume=UUID=y quiet rootdelay=2 mitigations=off", "quiet mitigations=off"},
		{"peer, not a root key", peerFloorCmdline, "rootless=1 rwx console=ttyS0", "rootless=1 rwx console=ttyS0"},
		{"peer, empty", peerFloorCmdline, "", ""},
	}
	for _, tc := range tests {
		if got := tc.fn(tc.in); got != tc.want {
			t.Errorf("%s: %q → %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestArgsDiff(t *testing.T) {
	tests := []struct {
		a, b         string
		onlyA, onlyB []string
	}{
		{"console=ttyS0 panic=1 quiet percpu_alloc=page", "console=ttyS0 panic=1 quiet", []string{"percpu_alloc=page"}, nil},
		{"quiet a=1", "a=2 quiet", []string{"a=1"}, []string{"a=2"}},
		{"quiet", "quiet", nil, nil},
		{"", "x", nil, []string{"x"}},
	}
	for _, tc := range tests {
		a, b := argsDiff(tc.a, tc.b)
		if !slices.Equal(a, tc.onlyA) || !slices.Equal(b, tc.onlyB) {
			t.Errorf("argsDiff(%q, %q) = %q, %q; want %q, %q", tc.a, tc.b, a, b, tc.onlyA, tc.onlyB)
		}
	}
	fs := newFloors("console=ttyS0 panic=1 quiet percpu_alloc=page cairn.slot=A", peer.Cmdline)
	if c, p := floorOf(fs, "cairn"), floorOf(fs, "peer"); c == nil || p == nil || c.Name != floorCairnName || p.Name != floorPeerName ||
		!slices.Equal(c.OwnArgs, []string{"percpu_alloc=page"}) || p.OwnArgs != nil || p.Cmdline != "console=ttyS0 panic=1 quiet" {
		t.Fatalf("newFloors: %+v %+v", c, p)
	}
	if floorOf(fs, "other") != nil || floorKiB(fs, "cairn") != 0 {
		t.Fatalf("floorOf/floorKiB without samples")
	}
}

func TestFloorsDiffNote(t *testing.T) {
	mk := func(cmdline string, kib float64, n int) *Floor {
		return &Floor{Cmdline: cmdline, MemUsedKiB: Stat{Median: kib, N: n}}
	}
	base := "console=ttyS0 panic=1 quiet"
	tests := []struct {
		name string
		c, p *Floor
		want string
	}{
		{"less", mk(base+" percpu_alloc=page", 22<<10, 1), mk(base, 27.5*1024, 1),
			"The two floors differ only in the kernel arguments (only Cairn's have `percpu_alloc=page`): with Cairn's the kernel alone has 5.5 MiB less in use."},
		{"both sides, more", mk(base+" a=1", 30<<10, 2), mk(base+" b=2 c", 29<<10, 2),
			"The two floors differ only in the kernel arguments (only Cairn's have `a=1`; only the peer's have `b=2` `c`): with Cairn's the kernel alone has 1.0 MiB more in use."},
		{"not measured", mk(base+" a=1", 0, 0), mk(base, 20<<10, 1), "The two floors differ only in the kernel arguments (only Cairn's have `a=1`)."},
		{"same args", mk(base, 1, 1), mk(base, 1, 1), "Both floors boot with the same kernel arguments (`console=ttyS0 panic=1 quiet`)."},
		{"missing", nil, mk(base, 1, 1), ""},
	}
	for _, tc := range tests {
		if got := floorsDiffNote(tc.c, tc.p); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseFloorConsole(t *testing.T) {
	good := []string{"BdsDxe: loading Boot0001", "", floorStart + "1.234", floorBegin + "4.250",
		"MemTotal:         475832 kB", "MemAvailable:     447000 kB", floorEnd, "reboot: Power down"}
	tests := []struct {
		name    string
		lines   []string
		start   float64
		readAt  float64
		meminfo string
		wantErr string
	}{
		{"ok", good, 1.234, 4.25, "MemTotal:         475832 kB\nMemAvailable:     447000 kB\n", ""},
		{"no end", good[:6], 0, 0, "", "no complete meminfo"},
		{"no start", append([]string{}, good[3:]...), 0, 0, "", "no start line"},
		{"bad time", []string{floorStart + "x", floorBegin + "1", floorEnd}, 0, 0, "", "bad console line"},
		{"negative time", []string{floorStart + "1", floorBegin + "-1", floorEnd}, 0, 0, "", "bad console line"},
		{"end before begin", []string{floorStart + "1", floorEnd, floorBegin + "2", "MemTotal: 1 kB", floorEnd}, 1, 2, "MemTotal: 1 kB\n", ""},
		{"empty", nil, 0, 0, "", "no complete meminfo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc, err := parseFloorConsole(tc.lines)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || fc.start != tc.start || fc.readAt != tc.readAt || fc.meminfo != tc.meminfo {
				t.Fatalf("got %+v, %v", fc, err)
			}
		})
	}
}

func TestFloorNote(t *testing.T) {
	tests := []struct {
		cairn, peerFloor, peer, target float64
		want                           []string
	}{
		{22.0, 27.5, 57.6, 0.5, []string{"27.5 MiB in use with the peer's kernel arguments: 0.48 × the peer's 57.6 MiB; with Cairn's arguments 22.0 MiB;",
			"the 0.50 target (28.8 MiB) leaves 6.8 MiB above the kernel for Cairn."}},
		{30, 30, 50, 0.5, []string{"0.60 × the peer's 50.0 MiB", "the 0.50 target (25.0 MiB) is 5.0 MiB below the kernel's own floor with Cairn's arguments"}},
		{0, 20, 50, 0.5, nil},
		{20, 0, 50, 0.5, nil},
		{20, 20, 0, 0.5, nil},
	}
	for _, tc := range tests {
		got := floorNote(tc.cairn, tc.peerFloor, tc.peer, tc.target)
		if tc.want == nil {
			if got != "" {
				t.Errorf("floorNote(%v, %v, %v) = %q, want none", tc.cairn, tc.peerFloor, tc.peer, got)
			}
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("floorNote(%v, %v, %v, %v) = %q, lacks %q", tc.cairn, tc.peerFloor, tc.peer, tc.target, got, w)
			}
		}
	}
}

// TestFloorReport: each floor's samples are summarised apart, each system's
// memory above the floor with its own arguments is the above-the-floor row,
// and both floors appear in the Markdown and the breakdown.
func TestFloorReport(t *testing.T) {
	samples := []Sample{
		{System: "c", WallToHTTP: 1000, MemUsedKiB: 40 << 10, MemTotalKiB: 475832},
		{System: "p", WallToHTTP: 5000, MemUsedKiB: 60 << 10, MemTotalKiB: 475836},
		{System: floorCairnName, KernelShare: 1500, ReadAt: 4500, MemUsedKiB: 21 << 10, MemTotalKiB: 475832, Meminfo: map[string]float64{"AnonPages": 512}},
		{System: floorCairnName, KernelShare: 1700, ReadAt: 4700, MemUsedKiB: 23 << 10, MemTotalKiB: 475832, Meminfo: map[string]float64{"AnonPages": 1536}},
		{System: floorCairnName, Error: "boom"},
		{System: floorPeerName, KernelShare: 1600, ReadAt: 4600, MemUsedKiB: 27 << 10, MemTotalKiB: 475828, Meminfo: map[string]float64{"AnonPages": 1024, "Percpu": 4096}},
		{System: floorPeerName, KernelShare: 1600, ReadAt: 4600, MemUsedKiB: 29 << 10, MemTotalKiB: 475828, Meminfo: map[string]float64{"AnonPages": 1024, "Percpu": 4096}},
	}
	c := System{Name: "c", Summary: summarise(samples, "c")}
	p := System{Name: "p", Summary: summarise(samples, "p")}
	floors := newFloors("console=ttyS0 panic=1 quiet percpu_alloc=page cairn.slot=A", peer.Cmdline)
	for _, f := range floors {
		f.InitBytes, f.InitramfsBytes = 1<<20, 512<<10
		summariseFloor(f, samples, p.Summary.MemUsedKiB.Median)
	}
	fc, fp := floorOf(floors, "cairn"), floorOf(floors, "peer")
	tests := []struct {
		f                          *Floor
		failed                     int
		used, anon, kern, fraction float64
	}{
		{fc, 1, 22 << 10, 1024, 1600, 22.0 / 60},
		{fp, 0, 28 << 10, 1024, 1600, 28.0 / 60},
	}
	for _, tc := range tests {
		f := tc.f
		if f.Failed != tc.failed || f.MemUsedKiB.Median != tc.used || f.MemUsedKiB.N != 2 || f.AnonPagesKiB.Median != tc.anon ||
			f.KernelShare.Median != tc.kern || f.PeerFraction != tc.fraction {
			t.Errorf("floor summary %+v", f)
		}
	}
	if summarise(samples, "c").MemUsedKiB.N != 1 {
		t.Fatalf("floor samples leak into Cairn's summary")
	}
	if floorKiB(floors, "cairn") != 22<<10 || floorKiB(floors, "peer") != 28<<10 {
		t.Fatalf("floorKiB %v %v", floorKiB(floors, "cairn"), floorKiB(floors, "peer"))
	}
	if rs := ratios(c, p, 22<<10, 0); slices.ContainsFunc(rs, func(r Ratio) bool { return r.Figure == aboveFloorFigure }) {
		t.Fatalf("above-floor row with one floor only")
	}
	rs := ratios(c, p, floorKiB(floors, "cairn"), floorKiB(floors, "peer"))
	var mem, above int
	for i, r := range rs {
		switch r.Figure {
		case memFigure:
			mem = i
		case aboveFloorFigure:
			above = i
			if r.Cairn != 18 || r.Peer != 32 || r.Ratio != 18.0/32 || r.Target != 0 || r.Met != nil {
				t.Fatalf("above-floor row %+v", r)
			}
		}
	}
	if above != mem+1 || rs[mem].Target != 0.5 {
		t.Fatalf("rows: mem %d above %d (%+v)", mem, above, rs[mem])
	}
	var md bytes.Buffer
	writeMarkdown(&md, &Report{Runs: 2, Cairn: c, Peer: p, Floors: floors, Ratios: rs, Samples: samples}, 0)
	for _, want := range []string{
		"| " + aboveFloorFigure + " | 18.0 MiB | 32.0 MiB | 0.562 |  |",
		"| kernel alone, Cairn's arguments | kernel command line | `console=ttyS0 panic=1 quiet percpu_alloc=page` | | | |",
		"| kernel alone, peer's arguments | kernel command line | `console=ttyS0 panic=1 quiet` | | | |",
		"| kernel alone, Cairn's arguments | memory in use, kernel alone (floor) | 22.0 MiB | 21.0 MiB | 23.0 MiB | 2 |",
		"| kernel alone, peer's arguments | memory in use, kernel alone (floor) | 28.0 MiB | 27.0 MiB | 29.0 MiB | 2 |",
		"| kernel alone, Cairn's arguments | AnonPages (the Go /init's own) | 1.0 MiB | 0.5 MiB | 1.5 MiB | 2 |",
		"| kernel alone, Cairn's arguments | failed boots | 1 |",
		"has 28.0 MiB in use with the peer's kernel arguments: 0.47 × the peer's 60.0 MiB; with Cairn's arguments 22.0 MiB; the 0.50 target (30.0 MiB) leaves 8.0 MiB above the kernel for Cairn. " +
			"The two floors differ only in the kernel arguments (only Cairn's have `percpu_alloc=page`): with Cairn's the kernel alone has 6.0 MiB less in use.",
		"MemTotal (median): c 475832 kB, p 475836 kB, kernel alone, Cairn's arguments 475832 kB, kernel alone, peer's arguments 475828 kB.",
		"| field | c | p | kernel alone, Cairn's arguments | kernel alone, peer's arguments |",
		"| AnonPages | – | – | 1.0 MiB | 1.0 MiB |",
		"| Percpu | – | – | – | 4.0 MiB |",
		"and 2 of the kernel alone with each system's kernel arguments after each round",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), "| kernel alone, peer's arguments | failed boots") {
		t.Errorf("failed-boots row for a floor without failures")
	}
}
