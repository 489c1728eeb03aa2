package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		name, path string
		env        map[string]string
		code       int
		body       string
	}{
		{"default greeting", "/", nil, 200, "hello from " + host + "\n"},
		{"greeting", "/", map[string]string{"GREETING": "hi"}, 200, "hi from " + host + "\n"},
		{"healthy", "/healthz", nil, 200, "ok"},
		{"unhealthy", "/healthz", map[string]string{"HEALTHY": "false"}, 503, "unhealthy\n"},
		{"unknown path", "/nope", nil, 404, "404 page not found\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(handler(func(k string) string { return tc.env[k] }, filepath.Join(t.TempDir(), "none")))
			defer srv.Close()
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || string(b) != tc.body {
				t.Errorf("GET %s = %d %q, want %d %q", tc.path, resp.StatusCode, b, tc.code, tc.body)
			}
		})
	}
}

// TestMeminfo: GET /meminfo serves the injected file, at most 64 KiB of
// it, answers 500 when it cannot be read, and only to GET.
func TestMeminfo(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "meminfo")
	const text = "MemTotal:         485432 kB\nMemAvailable:     400000 kB\n"
	if err := os.WriteFile(small, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, []byte(strings.Repeat("x", maxMeminfo+100)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, file string
		code               int
		body               string
	}{
		{"file", http.MethodGet, small, 200, text},
		{"capped", http.MethodGet, big, 200, strings.Repeat("x", maxMeminfo)},
		{"missing", http.MethodGet, filepath.Join(dir, "none"), 500, "meminfo unavailable\n"},
		{"directory", http.MethodGet, dir, 500, "meminfo unavailable\n"},
		{"post", http.MethodPost, small, 405, "Method Not Allowed\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(handler(func(string) string { return "" }, tc.file))
			defer srv.Close()
			req, err := http.NewRequest(tc.method, srv.URL+"/meminfo", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || string(b) != tc.body {
				t.Errorf("%s /meminfo = %d %.80q (%d bytes), want %d %.80q (%d bytes)", tc.method, resp.StatusCode, b, len(b), tc.code, tc.body, len(tc.body))
			}
		})
	}
}

// TestRunNotifyAndStop: with -notify the server sends READY=1 to
// $NOTIFY_SOCKET once it listens, serves, and returns nil when stopped.
func TestRunNotifyAndStop(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, ln, true) }()
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify message %q, %v", buf[:n], err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz = %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after stop: %v", err)
	}
}
