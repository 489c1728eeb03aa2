package agent

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lib", "cairn", "update", "state.json")
	if s, err := LoadState(p); err != nil || s.Phase != PhaseIdle {
		t.Fatal(s, err)
	}
	want := State{Phase: PhaseRolledBack, Version: "2.0", FromVersion: "1.0", Stage: StageHealth, Reason: "web unhealthy",
		Bad: []string{"2.0"}, Pending: &Report{ID: "m", OS: "hello", Channel: "stable", ToVersion: "2.0", Outcome: ReportRolledBack},
		Updated: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := SaveState(p, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(p)
	if err != nil || got.String() != want.String() || got.Pending == nil || *got.Pending != *want.Pending || !got.Updated.Equal(want.Updated) {
		t.Fatalf("%+v %v", got, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	// A corrupt file reads as idle, with an error to log.
	os.WriteFile(p, []byte(`{"phase":"rebooting"`), 0o644)
	if s, err := LoadState(p); err == nil || s.Phase != PhaseIdle {
		t.Fatal(s, err)
	}
}

func TestStateString(t *testing.T) {
	for _, tt := range []struct {
		s    State
		want string
	}{
		{State{Phase: PhaseIdle}, "idle"},
		{State{Phase: PhaseChecking}, "checking"},
		{State{Phase: PhaseDownloading, Version: "2.0", Percent: 42}, "downloading 2.0 42%"},
		{State{Phase: PhaseWritten, Version: "2.0"}, "written 2.0"},
		{State{Phase: PhaseWaiting, Version: "2.0"}, "waiting for lease 2.0"},
		{State{Phase: PhaseWaiting, Version: "2.0", Reason: "waiting for window Sun 02:00-04:00 (opens 2026-03-08T02:00:00Z)"},
			"waiting for window Sun 02:00-04:00 (opens 2026-03-08T02:00:00Z) to reboot into 2.0"},
		{State{Phase: PhaseRebooting, Version: "2.0"}, "rebooting 2.0"},
		{State{Phase: PhaseOnTrial, Version: "2.0"}, "on trial 2.0"},
		{State{Phase: PhaseCommitted, Version: "2.0"}, "committed 2.0"},
		{State{Phase: PhaseRolledBack, Version: "3.0", Stage: "health", Reason: "web unhealthy"}, "rolled back from 3.0 because of health: web unhealthy"},
		{State{Phase: PhaseFailed, Stage: "check", Reason: "refused"}, "check failed: refused"},
		{State{Phase: PhaseFailed, Version: "2.0", Stage: "install:root", Reason: "short"}, "update to 2.0 failed at install:root: short"},
	} {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("%q, want %q", got, tt.want)
		}
	}
}

func TestDecodeStateHostile(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `{"phase":"idle"} {}`, `{"phase":"exploded"}`, `{"phase":"idle","extra":1}`,
		`{"phase":"downloading","percent":101}`, `{"phase":"downloading","percent":-1}`,
		`{"phase":"idle","bad":"2.0"}`, `{"phase":"idle","updated":"yesterday"}`,
		`{"phase":"idle","pending_report":{"id":1}}`,
		`{"phase":"idle","reason":"` + strings.Repeat("x", maxStateBytes) + `"}`,
	} {
		if s, err := DecodeState([]byte(in)); err == nil {
			t.Errorf("%.60q: accepted %+v", in, s)
		}
	}
	s, err := DecodeState([]byte(`{"phase":"idle","bad":[` + strings.Repeat(`"1",`, 100) + `"2"]}`))
	if err != nil || len(s.Bad) != maxBad || s.Bad[maxBad-1] != "2" {
		t.Fatalf("%v %v", s.Bad, err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"phase":"rolled back","version":"2","stage":"health","bad":["2"],"pending_report":{"id":"m","os":"x","channel":"s","to_version":"2","outcome":"rolled_back"},"updated":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"phase":"downloading","percent":42}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			return
		}
		if s.Percent < 0 || s.Percent > 100 || len(s.Bad) > maxBad || s.String() == "" {
			t.Fatalf("%+v", s)
		}
	})
}

func TestSeed(t *testing.T) {
	seen := map[float64]bool{}
	var sum float64
	const n = 2000
	for i := range n {
		s := Seed("machine-" + string(rune('a'+i%26)) + strings.Repeat("x", i/26))
		if s < 0 || s >= 1 || seen[s] {
			t.Fatalf("seed %v", s)
		}
		seen[s] = true
		sum += s
	}
	if mean := sum / n; math.Abs(mean-0.5) > 0.05 {
		t.Fatalf("seeds are not spread: mean %v", mean)
	}
	if a, b := Seed("m"), Seed("m"); a != b {
		t.Fatal("seed not stable")
	}
	if a, b := FleetLockID("m"), FleetLockID("m"); a != b || len(a) != 32 || a == FleetLockID("n") {
		t.Fatalf("fleetlock id %q %q", a, b)
	}
}
