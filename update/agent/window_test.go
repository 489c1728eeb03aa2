package agent

import (
	"context"
	"strings"
	"testing"
	"time"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s: %v", name, err)
	}
	return loc
}

// The grammar is update/window's (its tests); ParseWindow adds the zone.
func TestParseWindow(t *testing.T) {
	w, err := ParseWindow("Mon-Fri 23:30-00:30", nil)
	if err != nil || w.String() != "Mon,Tue,Wed,Thu,Fri 23:30-00:30" || w.Loc != time.UTC {
		t.Fatalf("%v %v %v", w, w.Loc, err)
	}
	berlin := mustLoc(t, "Europe/Berlin")
	if w, err := ParseWindow("Sat 02:00-04:00", berlin); err != nil || w.Loc != berlin || w.Start != 120 || w.End != 240 {
		t.Fatalf("%v %v %v", w, w.Loc, err)
	}
	for _, s := range []string{"", "Sat 2:00-4:00", "Caturday 02:00-04:00", strings.Repeat("Sat,", 40) + "Sun 02:00-04:00"} {
		if w, err := ParseWindow(s, time.UTC); err == nil {
			t.Errorf("%q: accepted as %v", s, w)
		}
	}
}

func TestWindowNext(t *testing.T) {
	berlin := mustLoc(t, "Europe/Berlin")
	ny := mustLoc(t, "America/New_York")
	at := func(loc *time.Location, s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name       string
		window     string
		loc        *time.Location
		now        string
		start, end string // local wall time
		length     time.Duration
	}{
		// 2026-03-07 is a Saturday.
		{"inside", "Sat,Sun 02:00-04:00", time.UTC, "2026-03-07 03:00", "2026-03-07 02:00", "2026-03-07 04:00", 2 * time.Hour},
		{"before", "Sat,Sun 02:00-04:00", time.UTC, "2026-03-07 01:59", "2026-03-07 02:00", "2026-03-07 04:00", 2 * time.Hour},
		{"at the end", "Sat,Sun 02:00-04:00", time.UTC, "2026-03-07 04:00", "2026-03-08 02:00", "2026-03-08 04:00", 2 * time.Hour},
		{"next week", "Sat,Sun 02:00-04:00", time.UTC, "2026-03-08 05:00", "2026-03-14 02:00", "2026-03-14 04:00", 2 * time.Hour},
		{"across midnight, after midnight", "Fri 23:00-01:00", time.UTC, "2026-03-07 00:30", "2026-03-06 23:00", "2026-03-07 01:00", 2 * time.Hour},
		{"across midnight, ahead", "Fri 23:00-01:00", time.UTC, "2026-03-07 01:00", "2026-03-13 23:00", "2026-03-14 01:00", 2 * time.Hour},
		{"time zone", "Sat 02:00-04:00", ny, "2026-03-07 01:00", "2026-03-07 02:00", "2026-03-07 04:00", 2 * time.Hour},
		// Europe/Berlin springs forward on 2026-03-29 (Sunday) at 02:00 to
		// 03:00: the window of that night is only one hour long.
		{"spring forward", "Sun 02:00-04:00", berlin, "2026-03-28 12:00", "2026-03-29 03:00", "2026-03-29 04:00", time.Hour},
		{"spring forward, inside", "Sun 02:00-04:00", berlin, "2026-03-29 03:30", "2026-03-29 03:00", "2026-03-29 04:00", time.Hour},
		// A window that lies entirely in the skipped hour moves with the
		// clock (time.Date's normalisation), like cron: it is not lost.
		{"window in the gap", "Sun 02:10-02:50", berlin, "2026-03-28 12:00", "2026-03-29 03:10", "2026-03-29 03:50", 40 * time.Minute},
		// Berlin falls back on 2026-10-25 at 03:00 to 02:00: three hours.
		{"fall back", "Sun 01:00-03:00", berlin, "2026-10-24 12:00", "2026-10-25 01:00", "2026-10-25 03:00", 3 * time.Hour},
		// New York springs forward on 2026-03-08 at 02:00.
		{"across midnight into DST", "Sat 23:00-03:00", ny, "2026-03-07 12:00", "2026-03-07 23:00", "2026-03-08 03:00", 3 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := ParseWindow(tt.window, tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			now := at(tt.loc, tt.now)
			s, e, ok := w.Next(now)
			if !ok || !s.Equal(at(tt.loc, tt.start)) || !e.Equal(at(tt.loc, tt.end)) {
				t.Fatalf("Next(%v) = %v..%v %v, want %s..%s", now, s.In(tt.loc), e.In(tt.loc), ok, tt.start, tt.end)
			}
			if e.Sub(s) != tt.length {
				t.Fatalf("window of %v, want %v", e.Sub(s), tt.length)
			}
			if w.Contains(now) != !s.After(now) {
				t.Fatal("Contains disagrees with Next")
			}
		})
	}
}

// Next is consistent over a whole year in a DST zone: it returns a window
// that has not ended, that is open now or opens later, and no window opens
// between now and the one it returns.
func TestWindowNextYear(t *testing.T) {
	loc := mustLoc(t, "Europe/Berlin")
	w, err := ParseWindow("Sat,Sun 02:00-04:00", loc)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
	for range 365 * 24 * 4 {
		s, e, ok := w.Next(now)
		if !ok || !e.After(now) || !e.After(s) || e.Sub(s) > 3*time.Hour {
			t.Fatalf("Next(%v) = %v..%v", now, s, e)
		}
		// An independent oracle: the wall clock shows Sat or Sun, 02:xx or 03:xx.
		l := now.In(loc)
		open := (l.Weekday() == time.Saturday || l.Weekday() == time.Sunday) && (l.Hour() == 2 || l.Hour() == 3)
		if open != !s.After(now) {
			t.Fatalf("at %v: oracle says open=%v, Next says %v..%v", l, open, s, e)
		}
		if d := s.In(loc).Weekday(); d != time.Saturday && d != time.Sunday {
			t.Fatalf("window on %v", d)
		}
		now = now.Add(15 * time.Minute)
	}
}

func TestInWindowWait(t *testing.T) {
	w, _ := ParseWindow("Sun 02:00-04:00", time.UTC)
	clock := &fakeClock{t: time.Date(2026, 3, 6, 12, 0, 0, 0, time.UTC)} // Friday
	var status []string
	if err := (InWindow{w}).Wait(context.Background(), clock, func(s string) { status = append(status, s) }); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 3, 8, 2, 0, 0, 0, time.UTC); !clock.Now().Equal(want) || len(status) != 1 {
		t.Fatalf("woke at %v (%v)", clock.Now(), status)
	}
}

func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"Sat,Sun 02:00-04:00", "Mon-Fri 23:30-00:30", "03:00-03:15", "Fri-Mon 01:00-02:00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseWindow(s, time.UTC)
		if err != nil {
			return
		}
		// What parses prints back to something that parses the same.
		w2, err := ParseWindow(w.String(), time.UTC)
		if err != nil || w2.String() != w.String() || w2.Days != w.Days {
			t.Fatalf("%q -> %q -> %v %v", s, w.String(), w2, err)
		}
		now := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)
		if st, e, ok := w.Next(now); ok && (!e.After(now) || !e.After(st)) {
			t.Fatalf("%q: Next = %v..%v", s, st, e)
		}
	})
}
