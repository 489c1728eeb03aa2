package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func fakeRoot(t *testing.T, controllers string) string {
	t.Helper()
	root := t.TempDir()
	for name, v := range map[string]string{"cgroup.controllers": controllers, "cgroup.subtree_control": ""} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }

func TestCreateWritesLimits(t *testing.T) {
	root := fakeRoot(t, "cpuset cpu io memory hugetlb pids")
	m, err := New(root, "cairn/web")
	if err != nil {
		t.Fatal(err)
	}
	r := &specs.LinuxResources{
		Memory:  &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Swap: ptr[int64](96 << 20), Reservation: ptr[int64](16 << 20)},
		CPU:     &specs.LinuxCPU{Shares: ptr[uint64](1024), Quota: ptr[int64](50000), Period: ptr[uint64](100000)},
		Pids:    &specs.LinuxPids{Limit: ptr[int64](32)},
		BlockIO: &specs.LinuxBlockIO{Weight: ptr[uint16](500), ThrottleReadBpsDevice: []specs.LinuxThrottleDevice{{Rate: 1 << 20}}},
	}
	r.BlockIO.ThrottleReadBpsDevice[0].Major, r.BlockIO.ThrottleReadBpsDevice[0].Minor = 8, 0
	if err := m.Create(r); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"memory.max":      "67108864",
		"memory.low":      "16777216",
		"memory.swap.max": "33554432",
		"cpu.weight":      "39",
		"cpu.max":         "50000 100000",
		"pids.max":        "32",
		"io.weight":       "default 4950",
		"io.max":          "8:0 rbps=1048576",
	}
	for f, v := range want {
		if got := read(t, filepath.Join(m.Dir(), f)); got != v {
			t.Errorf("%s = %q want %q", f, got, v)
		}
	}
	for _, d := range []string{root, filepath.Join(root, "cairn")} {
		got := read(t, filepath.Join(d, "cgroup.subtree_control"))
		if got != "+cpu +io +memory +pids" {
			t.Errorf("%s subtree_control = %q", d, got)
		}
	}
}

func TestCreateRefusesMissingController(t *testing.T) {
	root := fakeRoot(t, "hugetlb") // this host's hybrid unified hierarchy
	m, err := New(root, "cairn/x")
	if err != nil {
		t.Fatal(err)
	}
	err = m.Create(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](1 << 20)}})
	if err == nil || !strings.Contains(err.Error(), `"memory" not available`) {
		t.Fatalf("err = %v", err)
	}
	// Without limits the cgroup is still created (kill, procs).
	if err := m.Create(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Dir()); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(nil); err == nil {
		t.Fatal("second Create of the same cgroup must fail")
	}
}

func TestNewRejectsBadPaths(t *testing.T) {
	for _, p := range []string{"", "/", "..", "a/../../b", "a/./b", "a//b"} {
		if _, err := New("/x", p); err == nil {
			t.Errorf("New(%q) accepted", p)
		}
	}
	if m, err := New("/x", "cairn/a"); err != nil || m.Dir() != "/x/cairn/a" {
		t.Fatalf("New = %v, %v", m, err)
	}
}

func TestFilesRejectsBadUnified(t *testing.T) {
	for _, k := range []string{"../memory.max", "a/b", "cgroup.procs", ""} {
		if _, err := Files(&specs.LinuxResources{Unified: map[string]string{k: "1"}}); err == nil {
			t.Errorf("unified key %q accepted", k)
		}
	}
	f, err := Files(&specs.LinuxResources{Unified: map[string]string{"memory.high": "1000"}, Pids: &specs.LinuxPids{Limit: ptr[int64](-1)}})
	if err != nil || f["memory.high"] != "1000" || f["pids.max"] != "max" {
		t.Fatalf("Files = %v, %v", f, err)
	}
}

func TestStatsAndOOM(t *testing.T) {
	root := fakeRoot(t, "memory pids cpu")
	m, _ := New(root, "c1")
	if err := m.Create(nil); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"cpu.stat":       "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_throttled 2\n",
		"memory.current": "4096\n",
		"memory.peak":    "8192\n",
		"memory.max":     "max\n",
		"memory.events":  "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
		"pids.current":   "2\n",
		"io.stat":        "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
	}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(m.Dir(), f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{CPUUsageUsec: 1500, CPUUserUsec: 1000, CPUSystemUsec: 500, CPUThrottled: 2, MemoryCurrent: 4096, MemoryPeak: 8192,
		OOMEvents: 1, OOMKills: 1, PidsCurrent: 2, IOReadBytes: 101, IOWriteBytes: 202}
	if *s != want {
		t.Fatalf("Stats = %+v\nwant %+v", *s, want)
	}
	if oom, err := m.OOMKilled(); err != nil || !oom {
		t.Fatalf("OOMKilled = %v, %v", oom, err)
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"hybrid", "30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "/sys/fs/cgroup/unified"},
		{"unified", "31 30 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup"},
		{"escaped", `31 30 0:27 / /mnt/a\040b rw - cgroup2 none rw` + "\n", "/mnt/a b"},
		{"none", "30 25 0:26 / / rw - ext4 /dev/vda rw\n", ""},
	} {
		got, err := parseMountinfo(strings.NewReader(tc.in))
		if tc.want == "" {
			if err != ErrNoCgroup2 {
				t.Errorf("%s: err = %v", tc.name, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestHostCgroup2(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	root, err := Detect("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no cgroup2: %v", err)
	}
	m, err := New(root, "cairn-test-"+strings.ReplaceAll(t.Name(), "/", "-"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Destroy() })
	if err := m.Create(nil); err != nil {
		t.Fatal(err)
	}
	f, err := m.Open()
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if procs, err := m.Procs(); err != nil || len(procs) != 0 {
		t.Fatalf("Procs = %v, %v", procs, err)
	}
	if err := m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Dir()); !os.IsNotExist(err) {
		t.Fatalf("cgroup still there: %v", err)
	}
}

func FuzzParseFlatKeyed(f *testing.F) {
	f.Add([]byte("oom 1\noom_kill 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ParseFlatKeyed(b)
		_, _ = parseIOStat(b)
	})
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("31 30 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseMountinfo(strings.NewReader(s))
	})
}
