package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`

// fakeServer serves one QMP connection on a unix socket. handle gets each
// decoded request and returns the raw lines to send back.
func fakeServer(t *testing.T, handle func(req map[string]any) []string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp") // short path: unix sockets are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "q.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		w := bufio.NewWriter(conn)
		w.WriteString(greeting + "\r\n")
		w.Flush()
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var req map[string]any
			if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
				t.Errorf("server: bad request %q: %v", sc.Text(), err)
				return
			}
			lines := handle(req)
			if lines == nil {
				return // hang up
			}
			for _, l := range lines {
				w.WriteString(l + "\r\n")
			}
			w.Flush()
		}
	}()
	return sock
}

func reply(req map[string]any, body string) string {
	id, _ := json.Marshal(req["id"])
	return `{` + body + `, "id": ` + string(id) + `}`
}

func TestClientExecute(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	sock := fakeServer(t, func(req map[string]any) []string {
		cmd := req["execute"].(string)
		mu.Lock()
		seen = append(seen, cmd)
		mu.Unlock()
		switch cmd {
		case "qmp_capabilities":
			return []string{reply(req, `"return": {}`)}
		case "query-status":
			return []string{
				`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "RESET", "data": {"guest": true}}`,
				``,
				reply(req, `"return": {"status": "running", "running": true}`),
			}
		case "system_powerdown":
			if req["arguments"] != nil {
				t.Errorf("system_powerdown got arguments %v", req["arguments"])
			}
			return []string{reply(req, `"return": {}`), `{"event": "POWERDOWN", "timestamp": {"seconds": 1, "microseconds": 2}}`}
		case "human-monitor-command":
			args := req["arguments"].(map[string]any)
			if args["command-line"] != "info version" {
				t.Errorf("args = %v", args)
			}
			return []string{reply(req, `"error": {"class": "GenericError", "desc": "nope"}`)}
		case "quit":
			return nil // QEMU may exit before answering
		}
		return []string{reply(req, `"error": {"class": "CommandNotFound", "desc": "The command `+cmd+` has not been found"}`)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.Contains(string(c.Greeting), `"major": 7`) {
		t.Errorf("greeting %s", c.Greeting)
	}
	ret, err := c.Execute("query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "running" {
		t.Fatalf("query-status = %s, %v", ret, err)
	}
	if ev := c.Events(); len(ev) != 1 || ev[0].Name != "RESET" || ev[0].Timestamp.Unix() != 1700000000 {
		t.Errorf("events = %+v", ev)
	}
	if _, err := c.Execute("system_powerdown", nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.Execute("human-monitor-command", map[string]string{"command-line": "info version"})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "nope" {
		t.Fatalf("err = %v, want GenericError", err)
	}
	// The POWERDOWN event that trailed the powerdown reply was read while
	// waiting for the next reply.
	if ev := c.Events(); len(ev) != 2 || ev[1].Name != "POWERDOWN" {
		t.Errorf("events = %+v", ev)
	}
	if _, err := c.Execute("quit", nil); err != nil {
		t.Fatalf("quit with hang-up: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"qmp_capabilities", "query-status", "system_powerdown", "human-monitor-command", "quit"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Errorf("server saw %v, want %v", seen, want)
	}
}

func TestClientTimeoutAndHangup(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	sock := fakeServer(t, func(req map[string]any) []string {
		switch req["execute"] {
		case "qmp_capabilities":
			return []string{reply(req, `"return": {}`)}
		case "stall":
			<-block
			return []string{}
		}
		return nil
	})
	ctx := context.Background()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.ExecuteContext(tctx, "stall", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestDialNoSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "missing.sock")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func TestDialBadGreeting(t *testing.T) {
	for name, first := range map[string]string{
		"not json":    `hello`,
		"return":      `{"return": {}}`,
		"huge":        strings.Repeat("x", MaxMessageSize+10),
		"two objects": `{"QMP": {}} {"QMP": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir, _ := os.MkdirTemp("", "qmp")
			defer os.RemoveAll(dir)
			sock := filepath.Join(dir, "q.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				conn.Write([]byte(first + "\n"))
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if c, err := Dial(ctx, sock); err == nil {
				c.Close()
				t.Fatal("Dial accepted a bad greeting")
			}
		})
	}
}

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		in      string
		check   func(Message) bool
		wantErr string
	}{
		{`{"return": {"a": 1}, "id": "3"}`, func(m Message) bool { return string(m.Return) == `{"a": 1}` && string(m.ID) == `"3"` }, ""},
		{`{"return": null}`, func(m Message) bool { return string(m.Return) == "null" }, ""},
		{`{"error": {"class": "C", "desc": "d"}}`, func(m Message) bool { return m.Error.Class == "C" }, ""},
		{`{"event": "SHUTDOWN", "data": {"guest": true}}`, func(m Message) bool { return m.Event.Name == "SHUTDOWN" }, ""},
		{`{"event": "X", "timestamp": {"seconds": -1, "microseconds": 5}}`, func(m Message) bool { return m.Event.Timestamp.IsZero() }, ""},
		{`{"QMP": {}}`, func(m Message) bool { return m.Greeting != nil }, ""},
		{`{"event": ""}`, nil, "empty name"},
		{`{"event": 5}`, nil, "decode"},
		{`{"return": {}, "event": "X"}`, nil, "mixes"},
		{`{}`, nil, "none of"},
		{`[]`, nil, "not a JSON object"},
		{``, nil, "not a JSON object"},
		{`{"return": {}`, nil, "decode"},
		{`{"return": {}} x`, nil, "trailing"},
		{`{"error": "str"}`, nil, "decode"},
	}
	for _, tt := range tests {
		m, err := DecodeMessage([]byte(tt.in))
		if tt.wantErr != "" && tt.check == nil {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("DecodeMessage(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			if tt.wantErr != "" && strings.Contains(err.Error(), tt.wantErr) {
				continue
			}
			t.Errorf("DecodeMessage(%q): %v", tt.in, err)
			continue
		}
		if !tt.check(m) {
			t.Errorf("DecodeMessage(%q) = %+v", tt.in, m)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		greeting,
		`{"return": {}, "id": "1"}`,
		`{"error": {"class": "GenericError", "desc": "x"}, "id": 2}`,
		`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
		`{"return": [1, 2, {"a": null}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		n := 0
		for _, set := range []bool{m.Greeting != nil, m.Return != nil, m.Error != nil, m.Event != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("decoded message with %d kinds: %+v", n, m)
		}
		if m.Event != nil && m.Event.Name == "" {
			t.Fatal("event without name")
		}
	})
}

// A client dialled with a context that ends right after the dial (as the
// harness and qemu.VM.QMP do) must keep working: the dial's watcher must not
// put its past deadline on the connection after a later command set its
// own. Before the fix this failed in a fraction of the rounds.
func TestDialContextEndsAfterDial(t *testing.T) {
	for round := range 100 {
		sock := fakeServer(t, func(req map[string]any) []string {
			return []string{reply(req, `"return": {}`)}
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := Dial(ctx, sock)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Execute("query-status", nil); err != nil {
			t.Fatalf("round %d: command after the dial's context ended: %v", round, err)
		}
		c.Close()
	}
}
