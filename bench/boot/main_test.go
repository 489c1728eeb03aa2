package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func TestParseLines(t *testing.T) {
	for line, want := range map[string]float64{
		"cairn: early: start t=1.723":         1.723,
		"[    1.9] cairn: early: start t=2":   2,
		"cairn: early: start t=":              -1,
		"cairn: early: start t=-1.5":          -1,
		"cairn: early: start t=1e9":           1, // regexp stops at "1"
		"cairn: early: start t=99999999999.0": -1,
		"cairn: early: root ok":               -1,
	} {
		got, ok := parseEarly(line)
		if want < 0 {
			if ok {
				t.Errorf("parseEarly(%q) accepted: %v", line, got)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("parseEarly(%q) = %v, %v; want %v", line, got, ok, want)
		}
	}
	v, slot, ms, ok := parseReady("CAIRN-READY version=1.2.3 slot=B boot_ms=3456")
	if !ok || v != "1.2.3" || slot != "B" || ms != 3456 {
		t.Errorf("parseReady = %q %q %v %v", v, slot, ms, ok)
	}
	for _, bad := range []string{"CAIRN-READY version=1 slot=C boot_ms=1", "CAIRN-READY version=1 slot=A boot_ms=", "CAIRN-READY version=1 slot=A boot_ms=99999999999"} {
		if _, _, _, ok := parseReady(bad); ok {
			t.Errorf("parseReady(%q) accepted", bad)
		}
	}
}

func FuzzParseConsole(f *testing.F) {
	f.Add("cairn: early: start t=1.5")
	f.Add("CAIRN-READY version=1 slot=A boot_ms=2000")
	f.Fuzz(func(t *testing.T, line string) {
		if v, ok := parseEarly(line); ok && (v < 0 || v > 1e6) {
			t.Fatalf("early %v out of range", v)
		}
		if _, slot, ms, ok := parseReady(line); ok && (ms < 0 || (slot != "A" && slot != "B")) {
			t.Fatalf("ready %v %q", ms, slot)
		}
	})
}

func TestSummarise(t *testing.T) {
	tests := []struct {
		in   []float64
		want Stat
	}{
		{nil, Stat{}},
		{[]float64{3}, Stat{3, 3, 3, 1}},
		{[]float64{5, 1, 3}, Stat{3, 1, 5, 3}},
		{[]float64{4, 1, 3, 2}, Stat{2.5, 1, 4, 4}},
	}
	for _, tt := range tests {
		if got := summarise(tt.in); got != tt.want {
			t.Errorf("summarise(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestReportMarkdown(t *testing.T) {
	samples := []Sample{
		{Mode: "uefi", KernelToPID1: 2000, PID1ToReady: 800, WallToReady: 7500},
		{Mode: "uefi", KernelToPID1: 2200, PID1ToReady: 900, WallToReady: 8000},
		{Mode: "direct", KernelToPID1: 1700, PID1ToReady: 700, WallToReady: 3000},
		{Mode: "direct", Error: "timeout"},
	}
	r := Report{Image: "x.img", Runs: 2, Host: "2-core host", Samples: samples, Summary: summary(samples, []string{"uefi", "direct"})}
	var b bytes.Buffer
	writeMarkdown(&b, r, []string{"uefi", "direct"})
	out := b.String()
	for _, want := range []string{
		"| uefi | QEMU start → READY (wall) | 7750 ms | 7500 ms | 8000 ms | 2 |",
		"| direct | kernel start → PID 1 (guest) | 1700 ms | 1700 ms | 1700 ms | 1 |",
		"1 boot(s) failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

func TestRunFlags(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{}, {"-n", "0", "x"}, {"-modes", "bios", "x"}, {"/nonexistent.img"}} {
		if err := run(ctx, args, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
