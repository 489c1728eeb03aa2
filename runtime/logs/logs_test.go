package logs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixedClock() func() time.Time {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	return func() time.Time { return t0 }
}

func TestLinesAndRing(t *testing.T) {
	l, err := New(Options{RingLines: 3, MaxLine: 8, Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	out, errw := l.Writer(Stdout), l.Writer(Stderr)
	fmt.Fprint(out, "one\ntw")
	fmt.Fprint(errw, "err\n")
	fmt.Fprint(out, "o\n0123456789abc")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l.Tail(0) {
		got = append(got, fmt.Sprintf("%s:%s:%v", e.Stream, e.Line, e.Partial))
	}
	// ring of 3: "one" and "err" fell out.
	want := []string{"stdout:two:false", "stdout:01234567:true", "stdout:89abc:false"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ring = %v want %v", got, want)
	}
	if tail := l.Tail(1); len(tail) != 1 || string(tail[0].Line) != "89abc" {
		t.Fatalf("Tail(1) = %v", tail)
	}
}

func TestFileRotation(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.log")
	l, err := New(Options{Path: p, MaxSize: 200, MaxFiles: 3, Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	w := l.Writer(Stdout)
	for i := 0; i < 40; i++ {
		fmt.Fprintf(w, "line %02d\n", i)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d", l.Dropped())
	}
	files, _ := filepath.Glob(p + "*")
	if len(files) != 3 {
		t.Fatalf("files = %v", files)
	}
	var lines []string
	for _, f := range []string{p + ".2", p + ".1", p} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 200 {
			t.Errorf("%s has %d bytes", f, st.Size())
		}
		fh, _ := os.Open(f)
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			e, err := Parse(sc.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, string(e.Line))
		}
		fh.Close()
	}
	if last := lines[len(lines)-1]; last != "line 39" {
		t.Fatalf("last line %q", last)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i] <= lines[i-1] {
			t.Fatalf("out of order: %v", lines)
		}
	}
}

// blockingSink blocks every write until released.
type blockingSink struct {
	release chan struct{}
	buf     bytes.Buffer
}

func (b *blockingSink) Write(p []byte) (int, error) {
	<-b.release
	return b.buf.Write(p)
}

func TestSlowWriterNeverBlocks(t *testing.T) {
	sink := &blockingSink{release: make(chan struct{})}
	l, err := New(Options{Sink: sink, QueueLen: 4, RingLines: 10000, Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	w := l.Writer(Stderr)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(w, "x%d\n", i)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a slow sink")
	}
	// 1 in the sink's Write, 4 queued, the rest dropped from the sink.
	if d := l.Dropped(); d < 990 {
		t.Fatalf("dropped = %d, want >= 990", d)
	}
	if n := len(l.Tail(0)); n != 1000 {
		t.Fatalf("ring has %d entries, want all 1000", n)
	}
	close(sink.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in  string
		ok  bool
		msg string
	}{
		{"2026-11-22T10:00:00.5Z stdout F hello world", true, "hello world"},
		{"2026-11-22T10:00:00Z stderr P part", true, "part"},
		{"2026-11-22T10:00:00Z stdout F", true, ""},
		{"2026-11-22T10:00:00Z stdin F x", false, ""},
		{"yesterday stdout F x", false, ""},
		{"2026-11-22T10:00:00Z stdout X x", false, ""},
		{"", false, ""},
	} {
		e, err := Parse([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && string(e.Line) != tc.msg) {
			t.Errorf("Parse(%q) = %+v, %v", tc.in, e, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("2026-11-22T10:00:00.5Z stdout F hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil || bytes.ContainsAny(e.Line, "\n") {
			return
		}
		e2, err := Parse(Format(nil, e))
		if err != nil || !bytes.Equal(e2.Line, e.Line) || e2.Stream != e.Stream || e2.Partial != e.Partial {
			t.Fatalf("round trip %q: %+v vs %+v (%v)", b, e, e2, err)
		}
	})
}
