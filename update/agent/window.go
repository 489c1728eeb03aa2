package agent

import (
	"fmt"
	"time"

	"cairn.dev/cairn/update/window"
)

// Window is a weekly maintenance window (update/window's grammar) in the
// time zone Loc: on the listed days (of the window's start), from Start to
// End local time. End at or before Start means the window runs past
// midnight into the next day.
type Window struct {
	window.Window
	Loc *time.Location
}

// ParseWindow parses a window in update/window's syntax, "[DAYS ]HH:MM-HH:MM"
// such as "Sat,Sun 02:00-04:00", in loc (nil: UTC).
func ParseWindow(s string, loc *time.Location) (Window, error) {
	if loc == nil {
		loc = time.UTC
	}
	w, err := window.Parse(s)
	if err != nil {
		return Window{Loc: loc}, fmt.Errorf("window: %w", err)
	}
	return Window{Window: w, Loc: loc}, nil
}

// occurrence returns the window that starts on the local date y-m-d. It
// is built from wall-clock times with time.Date, so a DST change inside it
// makes it an hour shorter or longer, as the clock on the wall says, and a
// time in a skipped hour moves forward with the clock (02:30 on the night
// the clock jumps from 02:00 to 03:00 is 03:30), like cron. ok is false
// when the day is not listed or the window would be empty.
func (w Window) occurrence(y int, m time.Month, d int) (start, end time.Time, ok bool) {
	day := time.Date(y, m, d, 12, 0, 0, 0, w.Loc) // noon: never in a DST gap
	if !w.Days[day.Weekday()] {
		return start, end, false
	}
	start = wallTime(y, m, d, w.Start, w.Loc, -1)
	ed := d
	if w.End <= w.Start {
		ed++
	}
	end = wallTime(y, m, ed, w.End, w.Loc, +1)
	return start, end, end.After(start)
}

// wallTime is the instant the clock in loc shows minute (of the day) on
// y-m-d. When the clock shows it twice (the hour repeated when DST ends),
// dir -1 picks the first and +1 the last instant, so a window opens at
// the first and closes at the last. A time the clock skips is moved
// forward by the jump (time.Date's normalisation).
func wallTime(y int, m time.Month, d, minute int, loc *time.Location, dir int) time.Time {
	t := time.Date(y, m, d, minute/60, minute%60, 0, 0, loc)
	want := t.In(loc)
	best := t
	// DST shifts are at most two hours; 15-minute steps cover every zone.
	for k := 1; k <= 8; k++ {
		c := t.Add(time.Duration(dir*k) * 15 * time.Minute).In(loc)
		if c.Year() == want.Year() && c.YearDay() == want.YearDay() && c.Hour() == want.Hour() && c.Minute() == want.Minute() {
			best = c
		}
	}
	return best
}

// Next returns the window that contains now, or else the next one to open.
// ok is false only for a window with no days.
func (w Window) Next(now time.Time) (start, end time.Time, ok bool) {
	if w.Loc == nil {
		w.Loc = time.UTC
	}
	local := now.In(w.Loc)
	y, m, d := local.Date()
	// A window that started yesterday may still be open; eight days ahead
	// covers every weekday.
	for i := -1; i <= 8; i++ {
		s, e, valid := w.occurrence(y, m, d+i)
		// Occurrences are shorter than a day, so they do not overlap and
		// the first that has not ended is open now or opens next.
		if valid && e.After(now) {
			return s, e, true
		}
	}
	return start, end, false
}

// Contains reports whether now is inside an occurrence of the window.
func (w Window) Contains(now time.Time) bool {
	s, _, ok := w.Next(now)
	return ok && !s.After(now)
}
