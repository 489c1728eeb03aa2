package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// storeFactory opens a new handle on one shared store (a second server
// process sharing the same file or etcd).
type storeFactory func(t *testing.T) Store

func fileFactory(t *testing.T) storeFactory {
	path := filepath.Join(t.TempDir(), "state", "serve.json")
	return func(t *testing.T) Store {
		s, err := NewFileStore(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startEtcd runs a real etcd (Debian's etcd-server) on random 127.0.0.1
// ports for the test. It skips when etcd is not installed, except under CI.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("etcd not found (install the etcd-server package)")
		}
		t.Skip("etcd not found (apt-get install etcd-server)")
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "t="+peer)
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", client[len("http://"):], time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Fatalf("etcd did not start: %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return client
}

func etcdFactory(t *testing.T) storeFactory {
	ep := startEtcd(t)
	prefix := "/test-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/"
	return func(t *testing.T) Store {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := NewEtcdStore(ctx, []string{ep}, prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
}

func TestFileStore(t *testing.T) { testStore(t, fileFactory(t)) }

func TestEtcdStore(t *testing.T) { testStore(t, etcdFactory(t)) }

func testStore(t *testing.T, open storeFactory) {
	ctx := context.Background()
	t.Run("semaphore", func(t *testing.T) {
		s := open(t)
		ttl := 10 * time.Minute
		lock := func(group, id string, now time.Time) bool {
			ok, err := s.Lock(ctx, group, id, 2, ttl, now)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		steps := []struct {
			name      string
			group, id string
			at        time.Duration
			unlock    bool
			want      bool
		}{
			{"a takes a slot", "g", "a", 0, false, true},
			{"b takes the second", "g", "b", 0, false, true},
			{"c finds it full", "g", "c", time.Minute, false, false},
			{"a again (recursive)", "g", "a", 2 * time.Minute, false, true},
			{"other group is separate", "h", "c", 2 * time.Minute, false, true},
			{"a releases", "g", "a", 3 * time.Minute, true, true},
			{"a releases twice (no-op)", "g", "a", 3 * time.Minute, true, true},
			{"c gets a's slot", "g", "c", 3 * time.Minute, false, true},
			{"d finds it full", "g", "d", 9 * time.Minute, false, false},
			{"b's lease expired at 10m", "g", "d", 10 * time.Minute, false, true},
			{"c still holds (until 13m)", "g", "e", 12 * time.Minute, false, false},
			{"c expired", "g", "e", 13 * time.Minute, false, true},
		}
		for _, st := range steps {
			now := t0.Add(st.at)
			if st.unlock {
				if err := s.Unlock(ctx, st.group, st.id, now); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got := lock(st.group, st.id, now); got != st.want {
				t.Fatalf("%s: lock = %v", st.name, got)
			}
		}
		hs, err := s.Holders(ctx, "g", t0.Add(13*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, h := range hs {
			ids = append(ids, h.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"d", "e"}) {
			t.Fatalf("holders %v", ids)
		}
	})

	t.Run("reports and pause", func(t *testing.T) {
		s := open(t)
		add := func(id, outcome, ch, to string) bool {
			p, err := s.AddReport(ctx, Report{ID: id, OS: "hello", Channel: ch, FromVersion: "1.0.0", ToVersion: to,
				Outcome: outcome, Time: time.Now()}, 3)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}
		if add("m1", OutcomeRolledBack, "stable", "3.0.0") {
			t.Fatal("paused after one rollback")
		}
		add("m1", OutcomeRolledBack, "stable", "3.0.0") // same machine again
		add("m2", OutcomeCommitted, "stable", "3.0.0")
		add("m3", OutcomeFailed, "stable", "3.0.0")
		add("m4", OutcomeRolledBack, "beta", "3.0.0")
		if add("m5", OutcomeRolledBack, "stable", "3.0.0") {
			t.Fatal("paused after two distinct machines")
		}
		if !add("m6", OutcomeRolledBack, "stable", "3.0.0") {
			t.Fatal("not paused after three distinct machines rolled back")
		}
		if !add("m7", OutcomeCommitted, "stable", "3.0.0") {
			t.Fatal("a later report does not see the pause")
		}
		for ch, want := range map[string][]string{"stable": {"3.0.0"}, "beta": {}, "none": {}} {
			got, err := s.Paused(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) || (len(want) > 0 && !slices.Equal(got, want)) {
				t.Fatalf("paused %s = %v, want %v", ch, got, want)
			}
		}
		reps, err := s.Reports(ctx, "stable", 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(reps) != 3 || reps[0].ID != "m7" || reps[2].ID != "m5" {
			t.Fatalf("newest stable reports: %+v", reps)
		}
		all, err := s.Reports(ctx, "", 100)
		if err != nil || len(all) != 8 {
			t.Fatalf("%d reports (err %v), want 8", len(all), err)
		}
		// An operator resumes the version; the count starts afresh.
		if err := s.SetPaused(ctx, "stable", "3.0.0", false); err != nil {
			t.Fatal(err)
		}
		if add("m8", OutcomeRolledBack, "stable", "3.0.0") {
			t.Fatal("still paused after resume")
		}
		if err := s.SetPaused(ctx, "stable", "9.9.9", true); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Paused(ctx, "stable"); !slices.Equal(got, []string{"9.9.9"}) {
			t.Fatalf("paused %v", got)
		}
	})

	// Two handles (two servers) and many concurrent lock calls: never more
	// than the limit.
	t.Run("concurrent", func(t *testing.T) {
		stores := []Store{open(t), open(t)}
		const limit, callers = 3, 24
		var granted atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := stores[i%2].Lock(ctx, "race", fmt.Sprintf("m%d", i), limit, time.Hour, t0)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					granted.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if g := granted.Load(); g != limit {
			t.Fatalf("%d granted, limit %d", g, limit)
		}
		hs, err := stores[0].Holders(ctx, "race", t0)
		if err != nil || len(hs) != limit {
			t.Fatalf("%d holders (err %v)", len(hs), err)
		}
	})
}

func TestFileStoreCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFileStore(path); err == nil {
		t.Fatal("corrupt store accepted")
	}
}
