package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeConsole wires a Console to an io.Pipe, like QEMU's stdout.
func fakeConsole(t *testing.T, out io.Writer) (*Console, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	c := NewConsole(out)
	go func() { _ = c.Feed(pr) }()
	t.Cleanup(func() { _ = pw.Close() })
	return c, pw
}

func TestWaitForInOrder(t *testing.T) {
	var streamed bytes.Buffer
	c, pw := fakeConsole(t, &streamed)
	go func() {
		fmt.Fprint(pw, "SeaBIOS\r\n")
		time.Sleep(10 * time.Millisecond)
		fmt.Fprint(pw, "cairn: early: start t=1.5")
		time.Sleep(10 * time.Millisecond)
		fmt.Fprint(pw, "0\ncairn: early: root ok\nCAIRN-READY version=1 slot=A boot_ms=2300\n")
	}()
	ctx := context.Background()
	l, err := c.WaitFor(ctx, Substr("cairn: early: start"), 5*time.Second)
	if err != nil || l != "cairn: early: start t=1.50" {
		t.Fatalf("WaitFor = %q, %v", l, err)
	}
	re := regexp.MustCompile(`^CAIRN-READY .*boot_ms=(\d+)$`)
	l, err = c.WaitFor(ctx, re, 5*time.Second)
	if err != nil || !strings.HasSuffix(l, "boot_ms=2300") {
		t.Fatalf("WaitFor(re) = %q, %v", l, err)
	}
	// The early start line was consumed: waiting for it again must not match it.
	if _, err := c.WaitFor(ctx, Substr("cairn: early: start"), 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second WaitFor of a consumed line: err = %v, want deadline exceeded", err)
	}
	pw.Close()
	if _, err := c.WaitFor(ctx, Substr("never"), 5*time.Second); !errors.Is(err, ErrConsoleClosed) {
		t.Fatalf("WaitFor after close: %v, want ErrConsoleClosed", err)
	}
	if want := "SeaBIOS\r\ncairn: early: start t=1.50\ncairn: early: root ok\nCAIRN-READY version=1 slot=A boot_ms=2300\n"; streamed.String() != want {
		t.Errorf("streamed %q, want %q", streamed.String(), want)
	}
	if got := c.Tail(2); len(got) != 2 || got[0] != "cairn: early: root ok" {
		t.Errorf("Tail(2) = %q", got)
	}
	if got := len(c.Lines()); got != 4 {
		t.Errorf("Lines() has %d lines, want 4", got)
	}
}

func TestWaitForTimeoutAndCancel(t *testing.T) {
	c, pw := fakeConsole(t, nil)
	fmt.Fprint(pw, "hello\n")
	start := time.Now()
	_, err := c.WaitFor(context.Background(), Substr("READY"), 100*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 3*time.Second {
		t.Errorf("timeout took %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := c.WaitFor(ctx, Substr("READY"), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
}

func TestConsoleHostileLines(t *testing.T) {
	c := NewConsole(nil)
	long := strings.Repeat("x", maxLineLen*2+10)
	_, _ = c.Write([]byte(long + "\n"))
	_, _ = c.Write([]byte("progress 10%\rprogress 100%\r\n\x00\xff bin\n"))
	_ = c.Close()
	lines := c.Lines()
	if len(lines) != 5 {
		t.Fatalf("got %d lines, want 5", len(lines))
	}
	if len(lines[0].Text) != maxLineLen || len(lines[1].Text) != maxLineLen {
		t.Errorf("long line not split at %d", maxLineLen)
	}
	if lines[2].Text != "xxxxxxxxxx" {
		t.Errorf("remainder %q", lines[2].Text)
	}
	if lines[3].Text != "progress 100%" {
		t.Errorf("CR handling: %q", lines[3].Text)
	}
	if !strings.HasSuffix(c.Log(), "\x00\xff bin\n") {
		t.Errorf("binary line lost")
	}
	// Writes after close are still kept (QEMU's pipe may deliver late) but never block.
	if _, err := c.Write([]byte("late\n")); err != nil {
		t.Fatal(err)
	}
}

func FuzzConsoleWrite(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), 3)
	f.Add([]byte("\r\r\n\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		var streamed bytes.Buffer
		c := NewConsole(&streamed)
		for i := 0; i < len(data); i += chunk {
			_, _ = c.Write(data[i:min(i+chunk, len(data))])
		}
		_ = c.Close()
		if !bytes.Equal(streamed.Bytes(), data) {
			t.Fatal("streamed bytes differ from input")
		}
		for _, l := range c.Lines() {
			if strings.Contains(l.Text, "\n") || len(l.Text) > maxLineLen {
				t.Fatalf("bad line %q", l.Text)
			}
		}
	})
}

func TestConsoleKeepsBoundedLines(t *testing.T) {
	c := NewConsole(nil)
	for i := range MaxLines + 10 {
		fmt.Fprintf(c, "line %d\n", i)
	}
	lines := c.Lines()
	if len(lines) != MaxLines {
		t.Fatalf("kept %d lines, want %d", len(lines), MaxLines)
	}
	if want := fmt.Sprintf("line %d", 10); lines[0].Text != want {
		t.Fatalf("oldest kept line %q, want %q", lines[0].Text, want)
	}
	if _, err := c.WaitFor(t.Context(), Substr(fmt.Sprintf("line %d", MaxLines+9)), time.Second); err != nil {
		t.Fatalf("newest line not found: %v", err)
	}
}
