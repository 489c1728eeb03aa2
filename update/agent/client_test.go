package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/update/server"
)

// newServer runs update/server's handler on 127.0.0.1.
func newServer(t *testing.T, repo string, limit, pauseThreshold int) (*httptest.Server, server.Store) {
	t.Helper()
	store, err := server.NewFileStore(filepath.Join(t.TempDir(), "store.json"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Repo: repo, Store: store, LeaseLimit: limit, PauseThreshold: pauseThreshold})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close(); store.Close() })
	return hs, store
}

func TestFleetLock(t *testing.T) {
	hs, store := newServer(t, t.TempDir(), 1, 0)
	ctx := context.Background()
	m1 := &API{URL: hs.URL, ID: FleetLockID("machine-1"), Group: "web"}
	m2 := &API{URL: hs.URL, ID: FleetLockID("machine-2"), Group: "web"}
	other := &API{URL: hs.URL, ID: FleetLockID("machine-3"), Group: "db"}
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m1.Lock(ctx); err != nil { // recursive
		t.Fatal(err)
	}
	err := m2.Lock(ctx)
	if !errors.Is(err, ErrSemaphoreFull) {
		t.Fatalf("second holder: %v", err)
	}
	if err := other.Lock(ctx); err != nil {
		t.Fatalf("other group: %v", err)
	}
	holders, _ := store.Holders(ctx, "web", time.Now())
	if len(holders) != 1 || holders[0].ID != m1.ID {
		t.Fatalf("holders %+v", holders)
	}
	if err := m2.Unlock(ctx); err != nil { // not a holder: no-op
		t.Fatal(err)
	}
	if err := m1.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m2.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	// A request the server refuses is not retried forever.
	bad := &API{URL: hs.URL, ID: "has space", Group: "web"}
	clock := &fakeClock{}
	err = FleetLock{API: bad}.Wait(ctx, clock, func(string) {})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Kind != "bad_request" {
		t.Fatalf("bad request: %v", err)
	}
}

// Two machines with a lease limit of 1: the second waits until the first
// reports steady state.
func TestFleetLockWait(t *testing.T) {
	hs, _ := newServer(t, t.TempDir(), 1, 0)
	ctx := context.Background()
	m1 := FleetLock{API: &API{URL: hs.URL, ID: "m1", Group: "default"}, Retry: time.Minute}
	m2 := FleetLock{API: &API{URL: hs.URL, ID: "m2", Group: "default"}, Retry: time.Minute}
	if err := m1.Wait(ctx, &fakeClock{}, func(string) {}); err != nil {
		t.Fatal(err)
	}
	var waits []string
	clock := &sleepHook{fakeClock: &fakeClock{}, onSleep: func(n int) {
		if n == 3 {
			if err := m1.Release(ctx); err != nil {
				t.Error(err)
			}
		}
	}}
	if err := m2.Wait(ctx, clock, func(s string) { waits = append(waits, s) }); err != nil {
		t.Fatal(err)
	}
	if len(waits) != 3 || !strings.HasPrefix(waits[0], "waiting for lease (") || !strings.Contains(waits[0], "semaphore") {
		t.Fatalf("waits %q", waits)
	}
}

type sleepHook struct {
	*fakeClock
	n       int
	onSleep func(n int)
}

func (s *sleepHook) Sleep(ctx context.Context, d time.Duration) error {
	s.n++
	s.onSleep(s.n)
	return s.fakeClock.Sleep(ctx, d)
}

func TestReportAndRollout(t *testing.T) {
	hs, store := newServer(t, t.TempDir(), 1, 1)
	ctx := context.Background()
	api := &API{URL: hs.URL, ID: "m1", Group: "default"}
	if p, err := api.Paused(ctx, "stable"); err != nil || len(p) != 0 {
		t.Fatal(p, err)
	}
	r := Report{ID: "m1", OS: "hello", Channel: "stable", FromVersion: "1.0", ToVersion: "2.0",
		Outcome: ReportRolledBack, Stage: StageHealth, Message: strings.Repeat("x", 5000)}
	if err := api.SendReport(ctx, r); err != nil {
		t.Fatal(err)
	}
	reps, _ := store.Reports(ctx, "stable", 10)
	if len(reps) != 1 || reps[0].Stage != StageHealth || reps[0].ToVersion != "2.0" || len(reps[0].Message) != 4096 {
		t.Fatalf("reports %+v", reps)
	}
	if p, err := api.Paused(ctx, "stable"); err != nil || !slices.Equal(p, []string{"2.0"}) {
		t.Fatalf("paused %v %v", p, err)
	}
	if err := api.SendReport(ctx, Report{ID: "m1", Outcome: "exploded"}); err == nil {
		t.Fatal("server accepted a bad report")
	}
}

func TestDecodeAPIError(t *testing.T) {
	for _, tt := range []struct {
		body       string
		kind, val  string
		semaphored bool
	}{
		{`{"kind":"failed_lock_semaphore_full","value":"full"}`, "failed_lock_semaphore_full", "full", true},
		{`{"kind":"x\u001b[31m","value":"` + strings.Repeat("v", 1000) + `"}`, "x?[31m", strings.Repeat("v", 256), false},
		{`not json`, "", "", false},
		{``, "", "", false},
		{`{"kind":5}`, "", "", false},
	} {
		e := DecodeAPIError(409, []byte(tt.body))
		if e.Status != 409 || e.Kind != tt.kind || e.Value != tt.val || errors.Is(e, ErrSemaphoreFull) != tt.semaphored {
			t.Errorf("%q: %+v", tt.body, e)
		}
	}
}

func TestDecodeRollout(t *testing.T) {
	for _, tt := range []struct {
		body string
		ok   bool
	}{
		{`{"channel":"stable","paused":["3.0"]}`, true},
		{`{"channel":"stable","paused":[]}`, true},
		{`{"channel":"beta","paused":["3.0"]}`, false},
		{`{"channel":"stable","paused":"3.0"}`, false},
		{`[]`, false},
		{strings.Repeat(" ", maxAPIBody+1), false},
	} {
		if _, err := DecodeRollout([]byte(tt.body), "stable"); (err == nil) != tt.ok {
			t.Errorf("%.40q: %v", tt.body, err)
		}
	}
}

func FuzzDecodeAPIBodies(f *testing.F) {
	f.Add([]byte(`{"kind":"failed_lock_semaphore_full","value":"x"}`))
	f.Add([]byte(`{"channel":"stable","paused":["1"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := DecodeAPIError(500, b)
		if len(e.Kind) > 256+4 || len(e.Value) > 256+4 || strings.ContainsAny(e.Kind+e.Value, "\x00\n\x1b") {
			t.Fatalf("%+v", e)
		}
		if p, err := DecodeRollout(b, "stable"); err == nil {
			if _, err := json.Marshal(p); err != nil {
				t.Fatal(err)
			}
		}
	})
}
