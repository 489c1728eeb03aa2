package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeNow struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeNow) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func newRepo(t *testing.T) string {
	dir := t.TempDir()
	files := map[string]string{
		"metadata/timestamp.json": `{"signed":{}}`,
		"chunks/ab/abcd":          strings.Repeat("x", 1000),
		"targets/hello.efi":       "uki",
		".publish-tmp/secret":     "no",
		"chunks/ab/.tmp-123":      "no",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "outside")
	os.WriteFile(outside, []byte("secret"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "metadata", "escape.json"))
	return dir
}

func newTestServer(t *testing.T, st Store, limit int, clock *fakeNow) *httptest.Server {
	t.Helper()
	srv, err := New(Config{Repo: newRepo(t), Store: st, LeaseLimit: limit, LeaseTTL: 15 * time.Minute,
		PauseThreshold: 2, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts
}

type response struct {
	status int
	body   string
}

func do(t *testing.T, method, url, body string, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(data)}
}

var flHeader = map[string]string{"fleet-lock-protocol": "true"}

func lockBody(id, group string) string {
	return fmt.Sprintf(`{"client_params":{"id":%q,"group":%q}}`, id, group)
}

func TestFleetLockAPI(t *testing.T) {
	clock := &fakeNow{now: t0}
	st, err := NewFileStore(filepath.Join(t.TempDir(), "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, st, 1, clock)
	pre, steady := ts.URL+"/v1/pre-reboot", ts.URL+"/v1/steady-state"
	steps := []struct {
		name    string
		url     string
		body    string
		header  map[string]string
		advance time.Duration
		status  int
		kind    string
	}{
		{name: "no header", url: pre, body: lockBody("a", "default"), status: 400, kind: kindMissingHeader},
		{name: "header false", url: pre, body: lockBody("a", "default"), header: map[string]string{"fleet-lock-protocol": "false"}, status: 400, kind: kindMissingHeader},
		{name: "bad json", url: pre, body: `{`, header: flHeader, status: 400, kind: kindBadRequest},
		{name: "empty id", url: pre, body: lockBody("", "default"), header: flHeader, status: 400, kind: kindBadRequest},
		{name: "bad group", url: pre, body: lockBody("a", "a/b"), header: flHeader, status: 400, kind: kindBadRequest},
		{name: "a locks", url: pre, body: lockBody("a", "default"), header: flHeader, status: 200},
		{name: "a locks again", url: pre, body: lockBody("a", "default"), header: flHeader, status: 200},
		{name: "b is refused", url: pre, body: lockBody("b", "default"), header: flHeader, status: 409, kind: kindSemaphoreFull},
		{name: "b in another group", url: pre, body: lockBody("b", "workers"), header: flHeader, status: 200},
		{name: "b cannot unlock a's slot", url: steady, body: lockBody("b", "default"), header: flHeader, status: 200},
		{name: "still full for c", url: pre, body: lockBody("c", "default"), header: flHeader, status: 409, kind: kindSemaphoreFull},
		{name: "a unlocks", url: steady, body: lockBody("a", "default"), header: flHeader, status: 200},
		{name: "c locks", url: pre, body: lockBody("c", "default"), header: flHeader, status: 200},
		{name: "c's lease expires", url: pre, body: lockBody("d", "default"), header: flHeader, advance: 15 * time.Minute, status: 200},
	}
	for _, s := range steps {
		clock.add(s.advance)
		r := do(t, http.MethodPost, s.url, s.body, s.header)
		if r.status != s.status {
			t.Fatalf("%s: status %d (%s), want %d", s.name, r.status, r.body, s.status)
		}
		if s.kind != "" {
			var e apiError
			if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Kind != s.kind || e.Value == "" {
				t.Fatalf("%s: error body %s, want kind %s", s.name, r.body, s.kind)
			}
		}
	}
	if r := do(t, http.MethodGet, pre, "", nil); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET pre-reboot: %d", r.status)
	}
	if r := do(t, http.MethodPost, pre, strings.Repeat(" ", maxBody+10)+lockBody("z", "default"), flHeader); r.status != 400 {
		t.Fatalf("oversized body: %d", r.status)
	}
}

func TestReportAndRollout(t *testing.T) {
	clock := &fakeNow{now: t0}
	st, err := NewFileStore(filepath.Join(t.TempDir(), "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, st, 1, clock)
	report := func(id, outcome string) response {
		return do(t, http.MethodPost, ts.URL+"/v1/report", fmt.Sprintf(
			`{"id":%q,"group":"default","os":"hello","channel":"stable","from_version":"2.0.0","to_version":"3.0.0","outcome":%q,"stage":"health","message":"web never healthy"}`,
			id, outcome), nil)
	}
	rollout := func() Rollout {
		r := do(t, http.MethodGet, ts.URL+"/v1/rollout?channel=stable", "", nil)
		if r.status != 200 {
			t.Fatalf("rollout: %d %s", r.status, r.body)
		}
		var ro Rollout
		if err := json.Unmarshal([]byte(r.body), &ro); err != nil {
			t.Fatal(err)
		}
		return ro
	}
	if ro := rollout(); ro.Channel != "stable" || ro.Paused == nil || len(ro.Paused) != 0 {
		t.Fatalf("initial rollout %+v", ro)
	}
	if r := report("m1", "rolled_back"); r.status != 200 || !strings.Contains(r.body, `"paused":false`) {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	if r := report("m2", "committed"); r.status != 200 {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	if r := report("m3", "rolled_back"); r.status != 200 || !strings.Contains(r.body, `"paused":true`) {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	if ro := rollout(); len(ro.Paused) != 1 || ro.Paused[0] != "3.0.0" {
		t.Fatalf("rollout %+v", ro)
	}
	r := do(t, http.MethodGet, ts.URL+"/v1/reports?channel=stable&limit=2", "", nil)
	var reps []Report
	if err := json.Unmarshal([]byte(r.body), &reps); err != nil || len(reps) != 2 || reps[0].ID != "m3" || reps[0].Stage != "health" || !reps[0].Time.Equal(t0) {
		t.Fatalf("reports %s", r.body)
	}
	for _, bad := range []string{
		`{}`,
		`{"id":"m","os":"hello","channel":"stable","to_version":"3","outcome":"exploded"}`,
		`{"id":"m","os":"hello","channel":"stable","to_version":"3","outcome":"committed","extra":1}`,
		`{"id":"m","os":"hello","channel":"stable","to_version":"3","outcome":"committed","time":"2020-01-01T00:00:00Z"}`,
		`{"id":"m m","os":"hello","channel":"stable","to_version":"3","outcome":"committed"}`,
	} {
		if r := do(t, http.MethodPost, ts.URL+"/v1/report", bad, nil); r.status != 400 || !strings.Contains(r.body, kindBadRequest) {
			t.Fatalf("%s: %d %s", bad, r.status, r.body)
		}
	}
	for _, q := range []string{"", "?channel=", "?channel=a%20b"} {
		if r := do(t, http.MethodGet, ts.URL+"/v1/rollout"+q, "", nil); r.status != 400 {
			t.Fatalf("rollout%s: %d", q, r.status)
		}
	}
}

func TestStatic(t *testing.T) {
	st, err := NewFileStore(filepath.Join(t.TempDir(), "s.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, st, 1, &fakeNow{now: t0})
	tests := []struct {
		path   string
		header map[string]string
		status int
		body   string
		cache  string
	}{
		{"/metadata/timestamp.json", nil, 200, `{"signed":{}}`, "no-cache"},
		{"/targets/hello.efi", nil, 200, "uki", "immutable"},
		{"/chunks/ab/abcd", map[string]string{"Range": "bytes=10-14"}, 206, "xxxxx", "immutable"},
		{"/chunks/ab/.tmp-123", nil, 404, "", ""},
		{"/.publish-tmp/secret", nil, 404, "", ""},
		{"/chunks/", nil, 404, "", ""},
		{"/", nil, 404, "", ""},
		{"/metadata/escape.json", nil, 404, "", ""},
		{"/../../etc/passwd", nil, 404, "", ""},
		{"/missing", nil, 404, "", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+tt.path, nil)
		for k, v := range tt.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d", tt.path, resp.StatusCode)
			continue
		}
		if tt.body != "" && string(data) != tt.body {
			t.Errorf("%s: body %q", tt.path, data)
		}
		if !strings.Contains(resp.Header.Get("Cache-Control"), tt.cache) {
			t.Errorf("%s: Cache-Control %q", tt.path, resp.Header.Get("Cache-Control"))
		}
	}
}

// Two servers sharing one real etcd, many machines asking at once: the
// number of granted reboot slots never exceeds the limit.
func TestTwoServersShareEtcd(t *testing.T) {
	open := etcdFactory(t)
	clock := &fakeNow{now: t0}
	servers := []*httptest.Server{newTestServer(t, open(t), 2, clock), newTestServer(t, open(t), 2, clock)}
	for round := range 3 {
		var granted atomic.Int32
		var wg sync.WaitGroup
		var holders sync.Map
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("r%d-m%d", round, i)
				r := do(t, http.MethodPost, servers[i%2].URL+"/v1/pre-reboot", lockBody(id, "default"), flHeader)
				switch r.status {
				case 200:
					granted.Add(1)
					holders.Store(id, i)
				case 409:
				default:
					t.Errorf("status %d %s", r.status, r.body)
				}
			}()
		}
		wg.Wait()
		if g := granted.Load(); g != 2 {
			t.Fatalf("round %d: %d granted, limit 2", round, g)
		}
		// The holders reach steady state (through either server), freeing
		// the slots for the next round.
		holders.Range(func(k, v any) bool {
			r := do(t, http.MethodPost, servers[(v.(int)+1)%2].URL+"/v1/steady-state", lockBody(k.(string), "default"), flHeader)
			if r.status != 200 {
				t.Errorf("steady-state: %d", r.status)
			}
			return true
		})
	}
}

func FuzzDecodeLockRequest(f *testing.F) {
	f.Add([]byte(`{"client_params":{"id":"c988d2509fdf5cdcbed39037c56406fb","group":"default"}}`))
	f.Add([]byte(`{"client_params":{"id":"","group":""}}`))
	f.Add([]byte(`{"client_params":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeLockRequest(data)
		if err != nil {
			return
		}
		if !validLabel(p.ID, 256) || !groupRe.MatchString(p.Group) || len(p.Group) > 64 {
			t.Fatalf("accepted %+v", p)
		}
	})
}

func FuzzDecodeReport(f *testing.F) {
	f.Add([]byte(`{"id":"m","group":"default","os":"hello","channel":"stable","from_version":"1","to_version":"2","outcome":"rolled_back","stage":"health","message":"x"}`))
	f.Add([]byte(`{"id":"m","os":"hello","channel":"stable","to_version":"2","outcome":"committed"}`))
	f.Add([]byte(`{"time":"2020-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeReport(data)
		if err != nil {
			return
		}
		if !validLabel(r.ID, 256) || !validLabel(r.Channel, 64) || !validLabel(r.ToVersion, 64) || !r.Time.IsZero() {
			t.Fatalf("accepted %+v", r)
		}
		switch r.Outcome {
		case OutcomeCommitted, OutcomeRolledBack, OutcomeFailed:
		default:
			t.Fatalf("accepted outcome %q", r.Outcome)
		}
	})
}
