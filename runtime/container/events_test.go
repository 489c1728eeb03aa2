package container

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestReadOOMKills(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    uint64
		err     bool
	}{
		{"low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n", 2, false},
		{"low 0\n", 0, false},
		{"", 0, false},
		{"oom_kill x\n", 0, true},
		{"oom_kill 18446744073709551616\n", 0, true},
	} {
		p := filepath.Join(dir, "memory.events")
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readOOMKills(p)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%q: %d, %v; want %d, err %v", tc.content, got, err, tc.want, tc.err)
		}
	}
	if n, err := readOOMKills(filepath.Join(dir, "missing")); n != 0 || err != nil {
		t.Errorf("missing file: %d, %v", n, err)
	}
}

// TestOOMWatch drives the watcher with a plain file: inotify reports its
// writes as it does the kernel's updates of memory.events.
func TestOOMWatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "memory.events")
	if err := os.WriteFile(p, []byte("oom 0\noom_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	reports := make(chan uint64, 10)
	result := make(chan uint64, 1)
	go func() { result <- oomWatch(p, stop, func(n uint64) { reports <- n }) }()
	// The first write may happen before the watch exists: rewrite until the
	// watcher reports it (the watcher also reads the count once it watches).
	deadline := time.After(20 * time.Second)
	for got := false; !got; {
		if err := os.WriteFile(p, []byte("oom 1\noom_kill 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-reports:
			if n != 1 {
				t.Fatalf("first report %d, want 1", n)
			}
			got = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no report of oom_kill 1")
		}
	}
	if err := os.WriteFile(p, []byte("oom 3\noom_kill 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-reports:
		if n != 3 {
			t.Fatalf("second report %d, want 3", n)
		}
	case <-deadline:
		t.Fatal("no report of oom_kill 3")
	}
	// A count written just before stop is still seen by the final check.
	if err := os.WriteFile(p, []byte("oom 4\noom_kill 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if last := <-result; last != 4 {
		t.Fatalf("last count %d, want 4", last)
	}
}

func TestEvents(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	evc := h.rt.Events(ctx)

	id, lg := h.start(DefaultSpec(root, "sh", "-c", `echo ready; exec sleep 100`))
	waitOutput(t, lg, "ready")
	proc, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sh", "-c", "exit 5"}}, IO{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proc.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Only now end the init.
	if err := h.rt.Signal(ctx, id, 9); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ  EventType
		code int
	}{{EventStart, 0}, {EventExecExit, 5}, {EventExit, 137}}
	for i, w := range want {
		var e Event
		select {
		case e = <-evc:
		case <-ctx.Done():
			t.Fatalf("event %d: %v", i, ctx.Err())
		}
		if e.Type != w.typ || e.ID != id || e.Time.IsZero() {
			t.Fatalf("event %d: %+v, want %s of %s", i, e, w.typ, id)
		}
		if w.typ != EventStart && (e.Exit == nil || e.Exit.Code != w.code) {
			t.Fatalf("event %d: %+v, want exit code %d", i, e.Exit, w.code)
		}
		if w.typ == EventExecExit && e.Pid != proc.Pid() {
			t.Fatalf("exec-exit pid %d, want %d", e.Pid, proc.Pid())
		}
	}
	// A second subscriber that never reads does not block the first.
	_ = h.rt.Events(ctx)
	evc2ctx, cancel2 := context.WithCancel(ctx)
	evc2 := h.rt.Events(evc2ctx)
	id2, _ := h.start(DefaultSpec(root, "true"))
	for _, typ := range []EventType{EventStart, EventExit} {
		if e := <-evc; e.Type != typ || e.ID != id2 {
			t.Fatalf("got %+v, want %s of %s", e, typ, id2)
		}
	}
	cancel2()
	for range evc2 { // drains and ends: closed after cancel
	}
}
