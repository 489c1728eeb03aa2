package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServeCmdFlags(t *testing.T) {
	repo := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no repo", nil, "usage"},
		{"extra arg", []string{"--repo", repo, "x"}, "usage"},
		{"bad limit", []string{"--repo", repo, "--lease-limit", "0"}, "lease-limit"},
		{"bad store", []string{"--repo", repo, "--store", "redis:x"}, "unknown kind"},
		{"empty store", []string{"--repo", repo, "--store", "file:"}, "want file:PATH"},
		{"missing repo dir", []string{"--repo", filepath.Join(repo, "nope"), "--store", "file:" + filepath.Join(repo, "s.json")}, "repository"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := serveCmd(context.Background(), tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// cairn serve end to end on 127.0.0.1 with the default file store.
func TestServeCmd(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "repo")
	if err := os.MkdirAll(filepath.Join(repo, "metadata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "metadata", "1.root.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveCmd(ctx, []string{"--repo", repo, "--listen", addr, "--lease-limit", "1"}) }()
	base := "http://" + addr
	var resp *http.Response
	for i := 0; ; i++ {
		resp, err = http.Get(base + "/metadata/1.root.json")
		if err == nil {
			break
		}
		if i > 100 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "{}" {
		t.Fatalf("static: %d %q", resp.StatusCode, body)
	}
	for i, want := range []int{200, 409} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/pre-reboot",
			strings.NewReader(fmt.Sprintf(`{"client_params":{"id":"m%d","group":"default"}}`, i)))
		req.Header.Set("fleet-lock-protocol", "true")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("pre-reboot m%d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	if _, err := os.Stat(repo + ".serve.json"); err != nil {
		t.Fatalf("default store: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
}
