//go:build linux

package supervise

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// notifyMsg is what one sd_notify datagram said.
type notifyMsg struct {
	Ready    bool
	Stopping bool
	Status   string
	HasState bool // Status is set (possibly to "")
}

// parseNotify parses an sd_notify datagram: newline-separated KEY=VALUE
// assignments; unknown keys and malformed lines are ignored.
func parseNotify(b []byte) notifyMsg {
	var m notifyMsg
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "READY":
			m.Ready = string(v) == "1"
		case "STOPPING":
			m.Stopping = string(v) == "1"
		case "STATUS":
			s := strings.ToValidUTF8(string(v), "?")
			if len(s) > 256 {
				s = s[:256]
			}
			m.Status, m.HasState = s, true
		}
	}
	return m
}

// notifier is the receiving side of one service's notify socket.
type notifier struct {
	path string
	conn *net.UnixConn
	done chan struct{}
}

// listenNotify binds a unixgram socket at path and calls on for every
// datagram until Close.
func listenNotify(path string, on func(notifyMsg), logf func(string, ...any)) (*notifier, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	_ = os.Remove(path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// Any user in the container may notify.
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	n := &notifier{path: path, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					logf("notify %s: %v", path, err)
				}
				return
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						logf("notify %s: panic: %v", path, r)
					}
				}()
				on(parseNotify(buf[:k]))
			}()
		}
	}()
	return n, nil
}

// Close stops listening and removes the socket.
func (n *notifier) Close() {
	n.conn.Close()
	<-n.done
	_ = os.Remove(n.path)
}

// onNotify applies a notify message to a service.
func (sv *Supervisor) onNotify(s *service, m notifyMsg) {
	if m.HasState {
		sv.update(s, func(st *Status) { st.Message = m.Status })
	}
	if m.Ready {
		sv.mu.Lock()
		already := s.ready
		s.ready = true
		sv.mu.Unlock()
		if !already {
			sv.console("service %s: ready (sd_notify)", s.name)
			if s.def.Healthcheck == nil {
				sv.setHealth(s, HealthHealthy, "")
			}
		}
	}
}
