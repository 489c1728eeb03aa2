package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"cairn.dev/cairn/init/supervise"
)

type fakeBackend struct {
	restarted, killed string
	sig               syscall.Signal
	power             string
}

func (f *fakeBackend) Services() []supervise.Status {
	return []supervise.Status{{Name: "web", State: "running", Health: "healthy", PID: 42}}
}

func (f *fakeBackend) Service(name string) (supervise.Status, bool) {
	if name == "web" {
		return f.Services()[0], true
	}
	return supervise.Status{}, false
}

func (f *fakeBackend) Restart(_ context.Context, name string) error {
	if name != "web" {
		return fmt.Errorf("service %q: %w", name, ErrNotFound)
	}
	f.restarted = name
	return nil
}

func (f *fakeBackend) Kill(_ context.Context, name string, sig syscall.Signal) error {
	if name != "web" {
		return fmt.Errorf("service %q: %w", name, ErrNotFound)
	}
	f.killed, f.sig = name, sig
	return nil
}

func (f *fakeBackend) Logs(name string, n int) ([]string, error) {
	if name != "web" {
		return nil, ErrNotFound
	}
	return []string{"line"}, nil
}

func (f *fakeBackend) Power(action, reason string) error { f.power = action; return nil }

func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
		check        func(*fakeBackend) bool
	}{
		{"GET", "/v1/services", 200, `"name":"web"`, nil},
		{"GET", "/v1/services/web", 200, `"health":"healthy"`, nil},
		{"GET", "/v1/services/nope", 404, "no such service", nil},
		{"GET", "/v1/services/a%2Fb", 400, "invalid service name", nil},
		{"GET", "/v1/services/web/logs?n=5", 200, "line", nil},
		{"GET", "/v1/services/web/logs?n=0", 400, "query n", nil},
		{"POST", "/v1/services/web/restart", 200, "restarted", func(f *fakeBackend) bool { return f.restarted == "web" }},
		{"POST", "/v1/services/nope/restart", 404, "", nil},
		{"GET", "/v1/services/web/restart", 405, "", nil},
		{"POST", "/v1/services/web/kill?signal=KILL", 200, "", func(f *fakeBackend) bool { return f.sig == syscall.SIGKILL }},
		{"POST", "/v1/services/web/kill?signal=15", 200, "", func(f *fakeBackend) bool { return f.sig == syscall.SIGTERM }},
		{"POST", "/v1/services/web/kill?signal=BOGUS", 400, "unknown signal", nil},
		{"POST", "/v1/services/web/kill?signal=99", 400, "invalid signal number 99", nil},
		{"POST", "/v1/reboot", 202, "reboot requested", func(f *fakeBackend) bool { return f.power == "reboot" }},
		{"POST", "/v1/poweroff", 202, "", func(f *fakeBackend) bool { return f.power == "poweroff" }},
		{"GET", "/v1/reboot", 405, "", nil},
		{"GET", "/nope", 404, "", nil},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := &fakeBackend{}
			rec := httptest.NewRecorder()
			Handler(f).ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("got %d %q, want %d with %q", rec.Code, rec.Body.String(), tc.code, tc.body)
			}
			if tc.check != nil && !tc.check(f) {
				t.Fatalf("backend not called as expected: %+v", f)
			}
		})
	}
}

func TestServeSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, sock, Handler(&fakeBackend{})) }()
	c := Client(sock)
	var resp *http.Response
	var err error
	for range 200 {
		if resp, err = c.Get("http://cairn/v1/services"); err == nil {
			break
		}
		select {
		case err = <-done:
			t.Fatal(err)
		default:
		}
		_ = syscall.Nanosleep(&syscall.Timespec{Nsec: 5e6}, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	var sts []supervise.Status
	if err := json.NewDecoder(resp.Body).Decode(&sts); err != nil || len(sts) != 1 {
		t.Fatalf("%v %v", sts, err)
	}
	resp.Body.Close()
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", st.Mode(), err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func FuzzHandler(f *testing.F) {
	f.Add("GET", "/v1/services/web", "")
	f.Add("POST", "/v1/services/web/kill?signal=%00", "x")
	f.Add("POST", "/v1/services/../restart", "")
	f.Add("GET", "/v1/services/web/logs?n=99999999999999999999", "")
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		req, err := http.NewRequest(method, "http://cairn"+target, strings.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		Handler(&fakeBackend{}).ServeHTTP(rec, req)
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
	})
}
