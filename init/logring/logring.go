// Package logring is PID 1's log: lines go to the console and to a bounded
// in-memory ring, which a Persister appends to a size-rotated file.
package logring

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Ring keeps the most recent lines up to a byte budget. Each line gets a
// sequence number so readers can ask for what they have not seen yet.
type Ring struct {
	mu       sync.Mutex
	lines    []string
	first    uint64 // sequence number of lines[0]
	size     int
	maxBytes int
	dropped  uint64
}

// NewRing returns a ring holding at most maxBytes of line text.
func NewRing(maxBytes int) *Ring {
	return &Ring{maxBytes: maxBytes}
}

// Add appends one line (without trailing newline), evicting the oldest.
func (r *Ring) Add(line string) {
	line = strings.TrimRight(line, "\n")
	if len(line) >= r.maxBytes {
		line = line[:max(r.maxBytes-1, 0)]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.size += len(line) + 1
	for r.size > r.maxBytes && len(r.lines) > 0 {
		r.size -= len(r.lines[0]) + 1
		r.lines[0] = ""
		r.lines = r.lines[1:]
		r.first++
		r.dropped++
	}
	// Compact the backing array now and then.
	if cap(r.lines) > 2*len(r.lines)+64 {
		r.lines = append([]string(nil), r.lines...)
	}
}

// Since returns the lines with sequence number >= seq, the sequence number
// to ask for next time, and how many lines were evicted before being read.
func (r *Ring) Since(seq uint64) (lines []string, next uint64, missed uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.first + uint64(len(r.lines))
	if seq < r.first {
		missed = r.first - seq
		seq = r.first
	}
	if seq > end {
		seq = end
	}
	return append([]string(nil), r.lines[seq-r.first:]...), end, missed
}

// Logger writes "cairn: <component>: <msg>" lines to the console and ring.
type Logger struct {
	mu      sync.Mutex
	console io.Writer
	ring    *Ring
	now     func() time.Duration // for the ring's timestamp (CLOCK_BOOTTIME)
}

// NewLogger returns a Logger. now gives the time stamp for ring lines.
func NewLogger(console io.Writer, ring *Ring, now func() time.Duration) *Logger {
	return &Logger{console: console, ring: ring, now: now}
}

// Ring returns the logger's ring.
func (l *Logger) Ring() *Ring { return l.ring }

// Printf logs a line for component.
func (l *Logger) Printf(component, format string, args ...any) {
	l.Line(fmt.Sprintf("cairn: %s: %s", component, fmt.Sprintf(format, args...)))
}

// Line logs a preformatted line exactly as given (console protocol lines
// such as CAIRN-READY).
func (l *Logger) Line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.console != nil {
		_, _ = io.WriteString(l.console, s+"\n")
	}
	l.ring.Add(stamp(l.now()) + s)
}

// RingOnly stores a line in the ring without printing it (kernel messages:
// the kernel prints those on the console itself, per loglevel).
func (l *Logger) RingOnly(s string) {
	l.ring.Add(stamp(l.now()) + s)
}

// Func returns a printf-style function for component.
func (l *Logger) Func(component string) func(format string, args ...any) {
	return func(format string, args ...any) { l.Printf(component, format, args...) }
}

func stamp(d time.Duration) string {
	return fmt.Sprintf("[%5d.%06d] ", d/time.Second, (d%time.Second)/time.Microsecond)
}
