package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"cairn.dev/cairn/init/bootcount"
)

func TestBadName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"cairn-2.0+2-1.efi", "cairn-2.0+0-1.efi"},
		{"cairn-2.0+3.efi", "cairn-2.0+0.efi"},
		{"cairn-2.0+0-3.efi", "cairn-2.0+0-3.efi"},
		{"cairn-2.0+1-2.efi", "cairn-2.0+0-2.efi"},
		{"cairn-2.0.efi", ""},
		{"cairn-2.0+x.efi", ""},
	} {
		got, err := BadName(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("%s: %q %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

// step is one poll of a scripted health check.
type health struct {
	services, repo []error // by poll; the last value repeats
	polls          int
	repoCalls      int
}

func at[T any](s []T, i int) T {
	var zero T
	if len(s) == 0 {
		return zero
	}
	return s[min(i, len(s)-1)]
}

func (h *health) Health() Health {
	return Health{
		Services: func(context.Context) error {
			err := at(h.services, h.polls)
			h.polls++
			return err
		},
		Repository: func(context.Context) error {
			h.repoCalls++
			return at(h.repo, h.polls-1)
		},
	}
}

func TestAssess(t *testing.T) {
	down := errors.New("service web: health check failed")
	offline := errors.New("repository: connection refused")
	tests := []struct {
		name      string
		vars      bootcount.Vars
		services  []error
		repo      []error
		want      Outcome
		wantFiles []string
	}{
		{"not counted", bootcount.Vars{EntrySelected: "cairn-2.0.efi"}, nil, nil,
			Outcome{}, []string{"cairn-2.0+2-1.efi"}},
		{"healthy at once", trialVars, nil, nil,
			Outcome{Trial: true, Committed: true, Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0.efi"}, []string{"cairn-2.0.efi"}},
		{"healthy after a while", trialVars, []error{down, down, down, nil}, nil,
			Outcome{Trial: true, Committed: true, Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0.efi"}, []string{"cairn-2.0.efi"}},
		{"never healthy", trialVars, []error{down}, nil,
			Outcome{Trial: true, RolledBack: true, Stage: StageHealth, Reason: down.Error(), Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0+0-1.efi"},
			[]string{"cairn-2.0+0-1.efi"}},
		{"flapping", trialVars, []error{nil, nil, down, nil, nil, down}, nil,
			Outcome{Trial: true, RolledBack: true, Stage: StageHealth, Reason: down.Error(), Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0+0-1.efi"},
			[]string{"cairn-2.0+0-1.efi"}},
		{"repository unreachable", trialVars, nil, []error{offline},
			Outcome{Trial: true, RolledBack: true, Stage: StageRepository, Reason: offline.Error(), Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0+0-1.efi"},
			[]string{"cairn-2.0+0-1.efi"}},
		{"repository back in time", trialVars, nil, []error{offline, offline, offline, offline, nil},
			Outcome{Trial: true, Committed: true, Entry: "cairn-2.0+2-1.efi", NewEntry: "cairn-2.0.efi"}, []string{"cairn-2.0.efi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esp := t.TempDir()
			dir := filepath.Join(esp, "EFI", "Linux")
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "cairn-2.0+2-1.efi"), []byte("uki"), 0o644)
			clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			h := &health{services: tt.services, repo: tt.repo}
			tr := &Trial{ESP: esp, Vars: tt.vars, HealthyFor: 2 * time.Minute, Timeout: 10 * time.Minute, Poll: 30 * time.Second, Clock: clock}
			got, err := tr.Assess(context.Background(), h.Health())
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
			ents, _ := os.ReadDir(dir)
			var files []string
			for _, e := range ents {
				files = append(files, e.Name())
			}
			if !slices.Equal(files, tt.wantFiles) {
				t.Fatalf("ESP %v, want %v", files, tt.wantFiles)
			}
			if got.Committed && h.repoCalls == 0 {
				t.Fatal("blessed without asking the repository")
			}
			if got.Committed {
				// Blessed only after HealthyFor of uninterrupted health.
				if el := clock.Now().Sub(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); el < tr.HealthyFor {
					t.Fatalf("blessed after %v", el)
				}
			}
		})
	}
}

var trialVars = bootcount.Vars{EntrySelected: "cairn-2.0+2-1.efi", BootCountPath: `\EFI\Linux\cairn-2.0+2-1.efi`}

func TestAssessErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		vars bootcount.Vars
	}{
		{"escaping path", bootcount.Vars{BootCountPath: `\EFI\..\..\x+1.efi`}},
		{"no counter", bootcount.Vars{BootCountPath: `\EFI\Linux\cairn-2.0.efi`}},
		{"entry missing", bootcount.Vars{BootCountPath: `\EFI\Linux\cairn-9+1-2.efi`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			esp := t.TempDir()
			tr := &Trial{ESP: esp, Vars: tt.vars, Timeout: time.Minute, Clock: &fakeClock{}}
			if out, err := tr.Assess(context.Background(), Health{}); err == nil {
				t.Fatalf("accepted: %+v", out)
			}
		})
	}
	// Cancelled while waiting: no decision, no rename.
	esp := t.TempDir()
	os.MkdirAll(filepath.Join(esp, "EFI", "Linux"), 0o755)
	os.WriteFile(filepath.Join(esp, "EFI", "Linux", "cairn-2.0+2-1.efi"), nil, 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Trial{ESP: esp, Vars: trialVars, Timeout: time.Hour, Clock: &fakeClock{}}
	out, err := tr.Assess(ctx, Health{Services: func(context.Context) error { cancel(); return errors.New("down") }})
	if err == nil || out.Committed || out.RolledBack {
		t.Fatalf("%+v %v", out, err)
	}
	if _, err := os.Stat(filepath.Join(esp, "EFI", "Linux", "cairn-2.0+2-1.efi")); err != nil {
		t.Fatal("entry renamed after cancellation")
	}
}

func TestMarkBadIdempotent(t *testing.T) {
	esp := t.TempDir()
	dir := filepath.Join(esp, "EFI", "Linux")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "cairn-2.0+1-2.efi"), nil, 0o644)
	for range 2 {
		n, err := MarkBad(esp, `\EFI\Linux\cairn-2.0+1-2.efi`)
		if err != nil || n != "cairn-2.0+0-2.efi" {
			t.Fatal(n, err)
		}
	}
	if _, err := MarkBad(esp, `\EFI\Linux\cairn-3.0+1-2.efi`); err == nil {
		t.Fatal("marked a missing entry")
	}
}
