package agent

import (
	"fmt"
	"strings"
	"time"
)

// Window is a weekly maintenance window: on the listed days (of the
// window's start), from Start to End local time in Loc. End at or before
// Start means the window runs past midnight into the next day.
type Window struct {
	Days       [7]bool // indexed by time.Weekday
	Start, End int     // minutes after midnight, 0..1439
	Loc        *time.Location
}

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// maxWindowLen bounds the text ParseWindow accepts.
const maxWindowLen = 128

// ParseWindow parses "[DAYS ]HH:MM-HH:MM" in loc (nil: UTC). DAYS is a
// comma-separated list of three-letter English day names or ranges of them
// (Mon-Fri, Fri-Mon); without DAYS every day has the window. Examples:
// "Sat,Sun 02:00-04:00", "Mon-Fri 23:30-00:30", "03:00-03:15".
func ParseWindow(s string, loc *time.Location) (Window, error) {
	var w Window
	if loc == nil {
		loc = time.UTC
	}
	w.Loc = loc
	if len(s) > maxWindowLen {
		return w, fmt.Errorf("window: %d bytes, limit %d", len(s), maxWindowLen)
	}
	fields := strings.Fields(s)
	var days, span string
	switch len(fields) {
	case 1:
		span = fields[0]
		for i := range w.Days {
			w.Days[i] = true
		}
	case 2:
		days, span = fields[0], fields[1]
		if err := w.parseDays(days); err != nil {
			return w, err
		}
	default:
		return w, fmt.Errorf("window %q: want \"[DAYS ]HH:MM-HH:MM\"", s)
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return w, fmt.Errorf("window %q: time span %q is not HH:MM-HH:MM", s, span)
	}
	var err error
	if w.Start, err = parseClock(a); err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	if w.End, err = parseClock(b); err != nil {
		return w, fmt.Errorf("window %q: %w", s, err)
	}
	if w.Start == w.End {
		return w, fmt.Errorf("window %q: empty (starts when it ends)", s)
	}
	return w, nil
}

func (w *Window) parseDays(s string) error {
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, err := parseDay(a)
		if err != nil {
			return fmt.Errorf("window: %w", err)
		}
		to := from
		if isRange {
			if to, err = parseDay(b); err != nil {
				return fmt.Errorf("window: %w", err)
			}
		}
		for d := from; ; d = (d + 1) % 7 {
			w.Days[d] = true
			if d == to {
				break
			}
		}
	}
	return nil
}

func parseDay(s string) (int, error) {
	l := strings.ToLower(s)
	for i, n := range dayNames {
		if l == n {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%q is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", s)
}

func parseClock(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not HH:MM", s)
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, fmt.Errorf("%q is not a time of day", s)
	}
	return h*60 + m, nil
}

// String formats w as ParseWindow reads it (days as a list).
func (w Window) String() string {
	var days []string
	all := true
	for i := 1; i <= 7; i++ { // Monday first
		d := i % 7
		if w.Days[d] {
			days = append(days, strings.ToUpper(dayNames[d][:1])+dayNames[d][1:])
		} else {
			all = false
		}
	}
	span := fmt.Sprintf("%02d:%02d-%02d:%02d", w.Start/60, w.Start%60, w.End/60, w.End%60)
	if all {
		return span
	}
	return strings.Join(days, ",") + " " + span
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
