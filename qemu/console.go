package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ErrConsoleClosed is returned by WaitFor when the console ends (QEMU exited)
// before a matching line appeared.
var ErrConsoleClosed = errors.New("console closed before the line appeared")

// maxLineLen bounds one console line; longer lines are split. The guest is not
// trusted to print newlines.
const maxLineLen = 64 << 10

// MaxLines bounds the lines a Console keeps: a long `cairn run` must not grow
// without limit. The oldest lines are dropped first.
const MaxLines = 100_000

// Pattern matches a console line. *regexp.Regexp implements it.
type Pattern interface {
	MatchString(line string) bool
	String() string
}

// Substr is a Pattern matching lines that contain the string.
type Substr string

// MatchString reports whether line contains s.
func (s Substr) MatchString(line string) bool { return strings.Contains(line, string(s)) }

func (s Substr) String() string { return string(s) }

// Line is one console line with the host time it was completed.
type Line struct {
	Text string
	Time time.Time
}

// Console splits a serial console stream into lines, keeps all of them for
// failure reports, streams the raw bytes to an optional writer and lets callers
// wait for a line matching a pattern. Each successful WaitFor consumes the
// lines up to and including the match, so consecutive waits see the console in
// order ("expect" semantics).
type Console struct {
	mu      sync.Mutex
	lines   []Line
	partial []byte
	cursor  int // index of the first line not yet consumed by WaitFor
	closed  bool
	changed chan struct{} // closed and replaced on every new line / close
	out     io.Writer
	outErr  error
	started time.Time
}

// NewConsole returns a Console that copies raw bytes to out (may be nil).
func NewConsole(out io.Writer) *Console {
	return &Console{out: out, changed: make(chan struct{}), started: time.Now()}
}

// Started is the time the console was created (≈ QEMU start).
func (c *Console) Started() time.Time { return c.started }

// Write implements io.Writer: it feeds console bytes. It never fails; an error
// from the streaming writer only stops the streaming.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.out != nil && c.outErr == nil {
		if _, err := c.out.Write(p); err != nil {
			c.outErr = err
		}
	}
	now := time.Now()
	added := false
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			c.partial = append(c.partial, rest...)
			for len(c.partial) >= maxLineLen {
				c.addLocked(c.partial[:maxLineLen], now)
				c.partial = append([]byte(nil), c.partial[maxLineLen:]...)
				added = true
			}
			break
		}
		c.partial = append(c.partial, rest[:i]...)
		c.addLocked(c.partial, now)
		c.partial = c.partial[:0]
		added = true
		rest = rest[i+1:]
	}
	if added {
		c.notifyLocked()
	}
	c.mu.Unlock()
	return len(p), nil
}

func (c *Console) addLocked(b []byte, now time.Time) {
	for len(b) > maxLineLen {
		c.lines = append(c.lines, Line{Text: string(b[:maxLineLen]), Time: now})
		b = b[maxLineLen:]
	}
	s := strings.TrimRight(string(b), "\r")
	// Serial consoles also carry \r without \n and escape sequences; keep the
	// text after the last carriage return, like a terminal would show it.
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		s = s[i+1:]
	}
	c.lines = append(c.lines, Line{Text: s, Time: now})
	if over := len(c.lines) - MaxLines; over > 0 {
		c.lines = append(c.lines[:0], c.lines[over:]...)
		c.cursor = max(0, c.cursor-over)
	}
}

func (c *Console) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Close marks the end of the stream: a pending partial line is completed and
// waiters get ErrConsoleClosed.
func (c *Console) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if len(c.partial) > 0 {
		c.addLocked(c.partial, time.Now())
		c.partial = nil
	}
	c.closed = true
	c.notifyLocked()
	return nil
}

// Feed copies r into the console until EOF or a read error, then closes it.
func (c *Console) Feed(r io.Reader) error {
	defer c.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			_, _ = c.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("console: %w", err)
		}
	}
}

// Lines returns a copy of every complete line seen so far.
func (c *Console) Lines() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Line(nil), c.lines...)
}

// Tail returns the last n lines as text (fewer if the console has fewer),
// including a trailing partial line.
func (c *Console) Tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	start := max(len(c.lines)-n, 0)
	for _, l := range c.lines[start:] {
		out = append(out, l.Text)
	}
	if len(c.partial) > 0 {
		out = append(out, string(c.partial))
		if len(out) > n {
			out = out[1:]
		}
	}
	return out
}

// Log returns the whole console as text.
func (c *Console) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, l := range c.lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	b.Write(c.partial)
	return b.String()
}

// WaitFor waits until a line matching p appears after the previous match, and
// returns it. timeout <= 0 means no timeout beyond ctx.
func (c *Console) WaitFor(ctx context.Context, p Pattern, timeout time.Duration) (string, error) {
	l, err := c.WaitForLine(ctx, p, timeout)
	return l.Text, err
}

// WaitForLine is WaitFor returning the line's host timestamp too.
func (c *Console) WaitForLine(ctx context.Context, p Pattern, timeout time.Duration) (Line, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	for {
		c.mu.Lock()
		for i := c.cursor; i < len(c.lines); i++ {
			if p.MatchString(c.lines[i].Text) {
				c.cursor = i + 1
				l := c.lines[i]
				c.mu.Unlock()
				return l, nil
			}
		}
		c.cursor = len(c.lines)
		closed, ch := c.closed, c.changed
		c.mu.Unlock()
		if closed {
			return Line{}, fmt.Errorf("waiting for %q: %w", p.String(), ErrConsoleClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Line{}, fmt.Errorf("waiting for %q: %w", p.String(), ctx.Err())
		}
	}
}
