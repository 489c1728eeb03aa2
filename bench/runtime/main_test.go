package main

// Unit tests of the pure parts only: statistics and parsers. Nothing here
// starts a container or times anything (the benchmark is `go run`).

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestSummarise(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want Stat
	}{
		{"empty", nil, Stat{}},
		{"one", []float64{7}, Stat{N: 1, Median: 7, P95: 7, Mean: 7, Min: 7, Max: 7}},
		{"even", []float64{4, 1, 3, 2}, Stat{N: 4, Median: 2.5, P95: 4, Mean: 2.5, Min: 1, Max: 4}},
		{"odd unsorted", []float64{9, 1, 5}, Stat{N: 3, Median: 5, P95: 9, Mean: 5, Min: 1, Max: 9}},
		{"twenty", seq(1, 20), Stat{N: 20, Median: 10.5, P95: 19, Mean: 10.5, Min: 1, Max: 20}},
		{"hundred", seq(1, 100), Stat{N: 100, Median: 50.5, P95: 95, Mean: 50.5, Min: 1, Max: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			if got := summarise(tc.in); got != tc.want {
				t.Errorf("summarise(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Errorf("summarise modified its input")
			}
		})
	}
}

func seq(a, b int) []float64 {
	var out []float64
	for i := a; i <= b; i++ {
		out = append(out, float64(i))
	}
	return out
}

func TestPercentile(t *testing.T) {
	s := seq(1, 10)
	for _, tc := range []struct {
		p    float64
		want float64
	}{{0, 1}, {10, 1}, {11, 2}, {50, 5}, {95, 10}, {100, 10}, {150, 10}} {
		if got := percentile(s, tc.p); got != tc.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil) = %v", got)
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct{ a, b, want float64 }{{8, 10, 0.8}, {0, 10, 0}, {10, 0, 0}, {-1, 2, 0}} {
		if got := ratio(tc.a, tc.b); got != tc.want {
			t.Errorf("ratio(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestSummariseRSS(t *testing.T) {
	if got := summariseRSS(nil, "m"); got != (RSS{Method: "m"}) {
		t.Errorf("empty: %+v", got)
	}
	if got := summariseRSS([]int64{300, 100, 200, 400}, "m"); got != (RSS{N: 4, MedianKiB: 250, MaxKiB: 400, Method: "m"}) {
		t.Errorf("even: %+v", got)
	}
	if got := summariseRSS([]int64{5}, ""); got != (RSS{N: 1, MedianKiB: 5, MaxKiB: 5}) {
		t.Errorf("one: %+v", got)
	}
}

const procStatus = `Name:	true
Umask:	0022
State:	S (sleeping)
VmPeak:	    7400 kB
VmHWM:	    5028 kB
VmRSS:	    4990 kB
Threads:	5
`

func TestParseStatusKiB(t *testing.T) {
	for _, tc := range []struct {
		name, in, field string
		want            int64
		err             string
	}{
		{"hwm", procStatus, "VmHWM", 5028, ""},
		{"rss", procStatus, "VmRSS", 4990, ""},
		{"prefix is not a match", "VmHWMx:\t1 kB\n", "VmHWM", 0, "not found"},
		{"missing", "Name:\tx\n", "VmHWM", 0, "not found"},
		{"no unit", "VmHWM:\t12\n", "VmHWM", 0, "unexpected"},
		{"other unit", "VmHWM:\t12 MB\n", "VmHWM", 0, "unexpected"},
		{"negative", "VmHWM:\t-12 kB\n", "VmHWM", 0, "bad number"},
		{"garbage", "VmHWM:\tx kB\n", "VmHWM", 0, "bad number"},
		{"overflow", "VmHWM:\t99999999999999999999999 kB\n", "VmHWM", 0, "bad number"},
		{"empty", "", "VmHWM", 0, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatusKiB(strings.NewReader(tc.in), tc.field)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("= %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// mountinfo of the hybrid test host (trimmed), and a unified one.
const (
	hybridMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	unifiedMountinfo = `22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	legacyMountinfo = `32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
`
	hugetlbV1 = `50 31 0:40 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb
`
)

func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		mode, v2 string
		v1       []string
	}{
		{"hybrid", hybridMountinfo, "hybrid", "/sys/fs/cgroup/unified", []string{"cpu", "memory", "pids"}},
		{"unified", unifiedMountinfo, "unified", "/sys/fs/cgroup", nil},
		{"legacy", legacyMountinfo, "legacy", "", []string{"cpu", "cpuacct"}},
		{"none", "22 1 254:0 / / rw - ext4 /dev/vda rw\n", "none", "", nil},
		{"hybrid with hugetlb v1", hybridMountinfo + hugetlbV1, "hybrid", "/sys/fs/cgroup/unified", []string{"cpu", "hugetlb", "memory", "pids"}},
		{"escaped mount point", "41 31 0:38 / /mnt/a\\040b rw - cgroup2 cgroup2 rw\n", "unified", "/mnt/a b", nil},
		{"hostile lines", "garbage\n - \n1 2 3 - cgroup2\n\x00 - - -\n", "none", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMountinfo(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			l := layoutOf(m)
			if l.Mode != tc.mode || l.V2Mount != tc.v2 || !slices.Equal(l.V1, tc.v1) {
				t.Errorf("layout = %+v, want mode %s v2 %q v1 %v", l, tc.mode, tc.v2, tc.v1)
			}
		})
	}
}

func TestHugetlbPlan(t *testing.T) {
	parse := func(s string) cgroupLayout {
		m, err := parseMountinfo(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return layoutOf(m)
	}
	for _, tc := range []struct {
		name   string
		layout cgroupLayout
		v2ctl  []string
		move   bool
		why    string
	}{
		{"hybrid with hugetlb on v2", parse(hybridMountinfo), []string{"hugetlb"}, true, "refuses"},
		{"hybrid, v2 empty", parse(hybridMountinfo), nil, false, "no controllers"},
		{"hybrid, hugetlb already on v1", parse(hybridMountinfo + hugetlbV1), []string{"hugetlb"}, false, "not fixable"},
		{"hybrid, other controllers on v2", parse(hybridMountinfo), []string{"hugetlb", "io"}, false, "not fixable"},
		{"unified", parse(unifiedMountinfo), []string{"cpu", "hugetlb", "io", "memory", "pids"}, false, "unified"},
		{"legacy", parse(legacyMountinfo), nil, false, "legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			move, why := hugetlbPlan(tc.layout, tc.v2ctl)
			if move != tc.move || !strings.Contains(why, tc.why) {
				t.Errorf("plan = %v %q, want %v containing %q", move, why, tc.move, tc.why)
			}
		})
	}
}

func TestParseProcCgroups(t *testing.T) {
	const table = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t5\t1\nhugetlb\t10\t1\t1\n"
	for _, tc := range []struct {
		name, in, ctl string
		want          int
		bad           bool
	}{
		{"v1", table, "hugetlb", 10, false},
		{"v2", strings.Replace(table, "hugetlb\t10", "hugetlb\t0", 1), "hugetlb", 0, false},
		{"other", table, "cpu", 1, false},
		{"missing", table, "rdma", 0, true},
		{"header only", "#subsys_name hierarchy num_cgroups enabled\n", "hugetlb", 0, true},
		{"bad number", "hugetlb\tx\t1\t1\n", "hugetlb", 0, true},
		{"negative", "hugetlb\t-1\t1\t1\n", "hugetlb", 0, true},
		{"short line", "hugetlb 1\n", "hugetlb", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcCgroups(strings.NewReader(tc.in), tc.ctl)
			if (err != nil) != tc.bad || got != tc.want {
				t.Errorf("= %d, %v; want %d (error %v)", got, err, tc.want, tc.bad)
			}
		})
	}
}

func TestWriteMarkdown(t *testing.T) {
	r := &Report{
		Host: map[string]string{"kernel": "6.1", "cpus": "2"}, N: 3, Namespaces: []string{"network"},
		Results: []*Result{
			{Name: "cairn-api", Stat: summarise([]float64{1, 2, 3}), RSS: RSS{N: 1, MedianKiB: 2048, MaxKiB: 2048}},
			{Name: "cairn-runtime", Skipped: "no binary\nfound"},
		},
		Ratios: map[string]float64{"cairn-api/crun": 0.5},
		Target: "t",
	}
	var b bytes.Buffer
	writeMarkdown(&b, r)
	out := b.String()
	for _, want := range []string{"| cairn-api | 3 | 2.00 | 3.00 | 1.00 | 3.00 | 2.00 | 0 | 2.0 / 2.0 |", "skipped: no binary found |", "cairn-api/crun: **0.50**"} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	for _, s := range []string{hybridMountinfo, unifiedMountinfo, legacyMountinfo, hugetlbV1, "a - b c\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseMountinfo(strings.NewReader(s))
		if err != nil {
			return
		}
		l := layoutOf(m)
		_, _ = hugetlbPlan(l, strings.Fields(s))
	})
}

func FuzzParseStatusKiB(f *testing.F) {
	f.Add(procStatus, "VmHWM")
	f.Add("VmHWM:\t1 kB\n", "VmHWM")
	f.Fuzz(func(t *testing.T, s, field string) {
		if n, err := parseStatusKiB(strings.NewReader(s), field); err == nil && n < 0 {
			t.Fatalf("negative result %d", n)
		}
		_, _ = parseProcCgroups(strings.NewReader(s), field)
	})
}

func TestParseTimeMaxRSS(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"3412\n", 3412, false},
		{"Command exited with non-zero status 1\n10240\n", 10240, false},
		{"  99  \n\n", 99, false},
		{"", 0, true},
		{"0\n", 0, true},
		{"-5\n", 0, true},
		{"3412 kB\n", 0, true},
		{"Command terminated by signal 9\n", 0, true},
	} {
		got, err := parseTimeMaxRSS(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseTimeMaxRSS(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
