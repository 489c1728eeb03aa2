// Package api is PID 1's local HTTP API on a unix socket (mode 0600, so
// root only): service status and control, and orderly reboot/poweroff.
//
//	GET  /v1/services               -> [Status...]
//	GET  /v1/services/NAME          -> Status
//	GET  /v1/services/NAME/logs?n=N -> the last N log lines (text)
//	POST /v1/services/NAME/restart
//	POST /v1/services/NAME/kill?signal=KILL|9 (a test and operator aid:
//	     the restart policy applies as for any exit)
//	POST /v1/reboot, POST /v1/poweroff
//
// Errors are JSON {"error": "..."} with a 4xx/5xx status.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/supervise"
	"cairn.dev/cairn/internal/signame"
)

// SocketPath is where PID 1 serves the API.
const SocketPath = "/run/cairn/api.sock"

// Backend is what the API exposes.
type Backend interface {
	Services() []supervise.Status
	Service(name string) (supervise.Status, bool)
	Restart(ctx context.Context, name string) error
	Kill(ctx context.Context, name string, sig syscall.Signal) error
	Logs(name string, n int) ([]string, error)
	// Power asks for an orderly "reboot" or "poweroff"; it returns once
	// the request is queued.
	Power(action, reason string) error
}

// ErrNotFound marks an unknown service in Backend errors.
var ErrNotFound = supervise.ErrNoService

// Handler returns the API's HTTP handler.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, b.Services())
	})
	mux.HandleFunc("GET /v1/services/{name}", func(w http.ResponseWriter, r *http.Request) {
		name, ok := serviceName(w, r)
		if !ok {
			return
		}
		st, found := b.Service(name)
		if !found {
			writeError(w, http.StatusNotFound, fmt.Errorf("service %q: %w", name, ErrNotFound))
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/services/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		name, ok := serviceName(w, r)
		if !ok {
			return
		}
		n := 100
		if v := r.URL.Query().Get("n"); v != "" {
			k, err := strconv.Atoi(v)
			if err != nil || k < 1 || k > 10000 {
				writeError(w, http.StatusBadRequest, fmt.Errorf("query n=%q: want a number from 1 to 10000", v))
				return
			}
			n = k
		}
		lines, err := b.Logs(name, n)
		if err != nil {
			writeBackendError(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	})
	mux.HandleFunc("POST /v1/services/{name}/restart", func(w http.ResponseWriter, r *http.Request) {
		name, ok := serviceName(w, r)
		if !ok {
			return
		}
		if err := b.Restart(r.Context(), name); err != nil {
			writeBackendError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"result": "restarted"})
	})
	mux.HandleFunc("POST /v1/services/{name}/kill", func(w http.ResponseWriter, r *http.Request) {
		name, ok := serviceName(w, r)
		if !ok {
			return
		}
		sig, err := ParseSignal(r.URL.Query().Get("signal"))
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if err := b.Kill(r.Context(), name, sig); err != nil {
			writeBackendError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"result": "signalled"})
	})
	for _, action := range []string{"reboot", "poweroff"} {
		mux.HandleFunc("POST /v1/"+action, func(w http.ResponseWriter, r *http.Request) {
			if err := b.Power(action, "api"); err != nil {
				writeError(w, http.StatusServiceUnavailable, err)
				return
			}
			writeJSON(w, http.StatusAccepted, map[string]string{"result": action + " requested"})
		})
	}
	return http.MaxBytesHandler(mux, 1<<16)
}

// ParseSignal parses "KILL", "SIGKILL" or "9"; empty means SIGTERM.
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGTERM, nil
	}
	sig, err := signame.Parse(s)
	if err != nil {
		return 0, fmt.Errorf("query signal=%q: %w", s, err)
	}
	return sig, nil
}

// serviceName checks the {name} path value.
func serviceName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if !validName(name) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("path %q: invalid service name", r.URL.Path))
		return "", false
	}
	return name, true
}

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != "." && s != ".."
}

func writeBackendError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		writeError(w, http.StatusConflict, err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Serve serves h on the unix socket at path (mode 0600) until ctx ends.
func Serve(ctx context.Context, path string, h http.Handler) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	_ = os.Remove(path)
	// Create the socket with no permissions for others from the start.
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("api: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("api: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// Client returns an HTTP client that talks to the API socket at path; use
// URLs such as http://cairn/v1/services.
func Client(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}
