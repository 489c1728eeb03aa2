// Package window parses weekly maintenance windows, "[DAYS ]HH:MM-HH:MM"
// such as "Sat,Sun 02:00-04:00". It is the one parser of that syntax: the
// OS file's validation (os/schema, linked into PID 1) and the update
// agent's reboot policy both use it, so it imports nothing but fmt and
// strings.
package window

import (
	"fmt"
	"strings"
)

// Window is a weekly window: on the listed days (of the window's start),
// from Start to End local time. End at or before Start means the window
// runs past midnight into the next day.
type Window struct {
	Days       [7]bool // indexed by time.Weekday
	Start, End int     // minutes after midnight, 0..1439
}

var dayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// maxLen bounds the text Parse accepts.
const maxLen = 128

// Parse parses "[DAYS ]HH:MM-HH:MM". DAYS is a comma-separated list of
// three-letter English day names or ranges of them (Mon-Fri, Fri-Mon);
// without DAYS every day has the window. Examples: "Sat,Sun 02:00-04:00",
// "Mon-Fri 23:30-00:30", "03:00-03:15". The error message names s but not
// the field it comes from.
func Parse(s string) (Window, error) {
	var w Window
	if len(s) > maxLen {
		return Window{}, fmt.Errorf("%d bytes, at most %d", len(s), maxLen)
	}
	fields := strings.Fields(s)
	var span string
	switch len(fields) {
	case 1:
		span = fields[0]
		for i := range w.Days {
			w.Days[i] = true
		}
	case 2:
		span = fields[1]
		for _, part := range strings.Split(fields[0], ",") {
			if !w.addDays(part) {
				return Window{}, fmt.Errorf("%q: %q is not a day or range of days such as Sat or Mon-Fri", s, part)
			}
		}
	default:
		return Window{}, fmt.Errorf("%q is not \"[DAYS ]HH:MM-HH:MM\" such as \"Sat,Sun 02:00-04:00\"", s)
	}
	a, b, ok := strings.Cut(span, "-")
	var okA, okB bool
	w.Start, okA = parseClock(a)
	w.End, okB = parseClock(b)
	if !ok || !okA || !okB {
		return Window{}, fmt.Errorf("%q: %q is not HH:MM-HH:MM", s, span)
	}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("%q is empty (it starts when it ends)", s)
	}
	return w, nil
}

// addDays marks the day ("Sat") or range of days ("Fri-Mon") part.
func (w *Window) addDays(part string) bool {
	a, b, isRange := strings.Cut(part, "-")
	from, ok := parseDay(a)
	if !ok {
		return false
	}
	to := from
	if isRange {
		if to, ok = parseDay(b); !ok {
			return false
		}
	}
	for d := from; ; d = (d + 1) % 7 {
		w.Days[d] = true
		if d == to {
			return true
		}
	}
}

func parseDay(s string) (int, bool) {
	l := strings.ToLower(s)
	for i, n := range dayNames {
		if l == n {
			return i, true
		}
	}
	return 0, false
}

// parseClock parses HH:MM, 00:00 to 23:59, into minutes after midnight.
func parseClock(s string) (int, bool) {
	if len(s) != 5 || s[2] != ':' {
		return 0, false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	h := int(s[0]-'0')*10 + int(s[1]-'0')
	m := int(s[3]-'0')*10 + int(s[4]-'0')
	if h > 23 || m > 59 {
		return 0, false
	}
	return h*60 + m, true
}

// String formats w as Parse reads it (days as a list).
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
