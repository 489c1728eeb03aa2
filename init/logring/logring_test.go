package logring

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRing(t *testing.T) {
	r := NewRing(20)
	for i := range 5 {
		r.Add(fmt.Sprintf("line%d\n", i)) // 6 bytes each incl. newline
	}
	lines, next, missed := r.Since(0)
	if want := []string{"line2", "line3", "line4"}; fmt.Sprint(lines) != fmt.Sprint(want) || next != 5 || missed != 2 {
		t.Fatalf("got %v next=%d missed=%d", lines, next, missed)
	}
	lines, next, missed = r.Since(4)
	if len(lines) != 1 || lines[0] != "line4" || next != 5 || missed != 0 {
		t.Fatalf("Since(4) = %v %d %d", lines, next, missed)
	}
	if lines, _, _ := r.Since(99); len(lines) != 0 {
		t.Fatalf("Since(99) = %v", lines)
	}
	r.Add(strings.Repeat("x", 100))
	if lines, _, _ := r.Since(0); len(lines) != 1 || len(lines[0]) != 19 {
		t.Fatalf("long line: %q", lines)
	}
}

func TestLoggerPersist(t *testing.T) {
	var console bytes.Buffer
	ring := NewRing(1 << 20)
	l := NewLogger(&console, ring, func() time.Duration { return 1500 * time.Millisecond })
	l.Printf("system", "hello %d", 1)
	l.Line("CAIRN-READY version=1 slot=A boot_ms=2")
	l.RingOnly("kernel: x")
	if console.String() != "cairn: system: hello 1\nCAIRN-READY version=1 slot=A boot_ms=2\n" {
		t.Fatalf("console %q", console.String())
	}
	path := filepath.Join(t.TempDir(), "log", "cairn.log")
	p := &Persister{Ring: ring, Path: path, MaxBytes: 150}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "[    1.500000] cairn: system: hello 1\n[    1.500000] CAIRN-READY version=1 slot=A boot_ms=2\n[    1.500000] kernel: x\n"; string(b) != want {
		t.Fatalf("file %q", b)
	}
	if err := p.Flush(); err != nil { // nothing new: unchanged
		t.Fatal(err)
	}
	l.Printf("system", "second")
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if string(old) != string(b) || string(cur) != "[    1.500000] cairn: system: second\n" {
		t.Fatalf("rotation: old %q cur %q", old, cur)
	}
}

func TestParseKmsg(t *testing.T) {
	r, err := ParseKmsg([]byte("6,339,5140900,-;NET: Registered \\x01family 10\n SUBSYSTEM=net\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Level != 6 || r.Seq != 339 || r.Time != 5140900*time.Microsecond || r.Message != "NET: Registered ?family 10" {
		t.Fatalf("%+v", r)
	}
	r, err = ParseKmsg([]byte("30,1,2,c,more;x"))
	if err != nil || r.Level != 6 || r.Facility != 3 {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "6,1,2;x", "a,1,2,-;x", "6,b,2,-;x", "6,1,-2,-;x", "6,1,99999999999999999999,-;x", "no semicolon"} {
		if _, err := ParseKmsg([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseKmsg(f *testing.F) {
	f.Add([]byte("6,339,5140900,-;NET: x\\x0a\n K=V\n"))
	f.Add([]byte(`1,2,3,-;\x`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseKmsg(b)
		if err == nil && (r.Level < 0 || r.Level > 7 || strings.Contains(r.Message, "\n")) {
			t.Fatalf("bad record %+v", r)
		}
	})
}
