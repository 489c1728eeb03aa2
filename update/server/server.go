// Package server is `cairn serve`: it serves a static update repository,
// coordinates reboots over the FleetLock protocol, collects update reports
// and pauses a version's rollout by itself when too many machines roll back
// from it.
//
// Endpoints:
//
//	GET  /...                     the repository (metadata/, targets/, chunks/), with Range
//	POST /v1/pre-reboot           FleetLock RecursiveLock  (header fleet-lock-protocol: true)
//	POST /v1/steady-state         FleetLock UnlockIfHeld   (header fleet-lock-protocol: true)
//	POST /v1/report               an update outcome (Report)
//	GET  /v1/rollout?channel=C    {"channel":C,"paused":["3.0.0"]}
//	GET  /v1/reports?channel=C&limit=N   newest reports first
//
// FleetLock follows coreos/zincati docs/development/fleetlock/protocol.md:
// body {"client_params":{"id":…,"group":…}}; locks are owned and recursive
// (a holder locking again renews its lease); at most LeaseLimit holders per
// group; 200 on success; errors are {"kind","value"} with a 4xx/5xx status
// (409 failed_lock_semaphore_full when the group is full). Cairn adds a lease
// TTL: a holder that never reports steady state loses its slot after
// LeaseTTL, so a machine that died mid-reboot cannot block its group.
//
// Pausing needs no signature. The repository's TUF metadata alone decides
// what a machine may install; /v1/rollout can only make a machine withhold a
// version it would otherwise install, never authorise one. The worst a
// forged report or a compromised server can do is pause (delay) a rollout,
// which it could do anyway by not serving the files. Reports are not
// authenticated: put the server behind the network controls you trust if
// spurious pauses matter.
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultLeaseTTL is the reboot lease lifetime when Config.LeaseTTL is 0.
const DefaultLeaseTTL = 15 * time.Minute

// Config configures a Server.
type Config struct {
	Repo           string // repository directory served statically
	Store          Store
	LeaseLimit     int           // holders per FleetLock group (default 1)
	LeaseTTL       time.Duration // default 15m
	PauseThreshold int           // rolled_back machines that pause a version; 0 disables
	Now            func() time.Time
	Log            *slog.Logger
}

// Server is the HTTP side of `cairn serve`.
type Server struct {
	cfg  Config
	repo *os.Root
}

// New checks cfg and opens the repository directory.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: no store")
	}
	if cfg.LeaseLimit <= 0 {
		cfg.LeaseLimit = 1
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.PauseThreshold < 0 {
		return nil, errors.New("server: negative pause threshold")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	root, err := os.OpenRoot(cfg.Repo)
	if err != nil {
		return nil, fmt.Errorf("server: repository: %w", err)
	}
	return &Server{cfg: cfg, repo: root}, nil
}

// Close releases the repository directory (not the store).
func (s *Server) Close() error { return s.repo.Close() }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/pre-reboot", s.fleetlock(true))
	mux.HandleFunc("POST /v1/steady-state", s.fleetlock(false))
	mux.HandleFunc("POST /v1/report", s.report)
	mux.HandleFunc("GET /v1/rollout", s.rollout)
	mux.HandleFunc("GET /v1/reports", s.reports)
	mux.HandleFunc("GET /v1/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/pre-reboot", "/v1/steady-state", "/v1/report":
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, kindBadRequest, "use POST")
		default:
			writeError(w, http.StatusNotFound, kindBadRequest, "no such endpoint")
		}
	})
	mux.Handle("GET /", s.static())
	return mux
}

// Error kinds (a small, fixed set, as the protocol asks).
const (
	kindSemaphoreFull = "failed_lock_semaphore_full"
	kindMissingHeader = "missing_fleet_lock_header"
	kindBadRequest    = "bad_request"
	kindInternal      = "internal_error"
)

type apiError struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, kind, value string) {
	writeJSON(w, status, apiError{Kind: kind, Value: value})
}

const maxBody = 64 << 10

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return data, nil
}

// LockRequest is the FleetLock request body.
type LockRequest struct {
	ClientParams ClientParams `json:"client_params"`
}

// ClientParams identify a FleetLock client.
type ClientParams struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

var groupRe = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

// validLabel accepts 1..max printable ASCII characters without spaces.
func validLabel(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// strictDecode decodes exactly one JSON object into v, refusing unknown
// fields and trailing data.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// DecodeLockRequest parses and checks a FleetLock body: id non-empty
// printable (at most 256 bytes), group matching ^[a-zA-Z0-9.-]+$ (at most 64).
func DecodeLockRequest(data []byte) (ClientParams, error) {
	var req LockRequest
	// Zincati may add fields in the future: unknown fields are allowed here.
	if err := json.Unmarshal(data, &req); err != nil {
		return ClientParams{}, fmt.Errorf("fleetlock body: %w", err)
	}
	p := req.ClientParams
	if !validLabel(p.ID, 256) {
		return ClientParams{}, errors.New("fleetlock body: client_params.id must be 1-256 printable characters without spaces")
	}
	if len(p.Group) > 64 || !groupRe.MatchString(p.Group) {
		return ClientParams{}, errors.New("fleetlock body: client_params.group must match ^[a-zA-Z0-9.-]+$ (at most 64)")
	}
	return p, nil
}

func (s *Server) fleetlock(lock bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("fleet-lock-protocol") != "true" {
			writeError(w, http.StatusBadRequest, kindMissingHeader, "the fleet-lock-protocol: true header is required")
			return
		}
		data, err := readBody(w, r)
		if err != nil {
			writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
			return
		}
		p, err := DecodeLockRequest(data)
		if err != nil {
			writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
			return
		}
		now := s.cfg.Now()
		if !lock {
			if err := s.cfg.Store.Unlock(r.Context(), p.Group, p.ID, now); err != nil {
				s.cfg.Log.Error("steady-state", "group", p.Group, "id", p.ID, "err", err)
				writeError(w, http.StatusInternalServerError, kindInternal, "store error")
				return
			}
			s.cfg.Log.Info("steady-state", "group", p.Group, "id", p.ID)
			writeJSON(w, http.StatusOK, struct{}{})
			return
		}
		ok, err := s.cfg.Store.Lock(r.Context(), p.Group, p.ID, s.cfg.LeaseLimit, s.cfg.LeaseTTL, now)
		if err != nil {
			s.cfg.Log.Error("pre-reboot", "group", p.Group, "id", p.ID, "err", err)
			writeError(w, http.StatusInternalServerError, kindInternal, "store error")
			return
		}
		if !ok {
			s.cfg.Log.Info("pre-reboot refused", "group", p.Group, "id", p.ID)
			writeError(w, http.StatusConflict, kindSemaphoreFull,
				fmt.Sprintf("semaphore currently full, all %d slots of group %q are locked already", s.cfg.LeaseLimit, p.Group))
			return
		}
		s.cfg.Log.Info("pre-reboot granted", "group", p.Group, "id", p.ID)
		writeJSON(w, http.StatusOK, struct{}{})
	}
}

// Outcomes of an update attempt.
const (
	OutcomeCommitted  = "committed"
	OutcomeRolledBack = "rolled_back"
	OutcomeFailed     = "failed"
)

// Report is what a machine says about an update attempt.
type Report struct {
	ID          string    `json:"id"`
	Group       string    `json:"group"`
	OS          string    `json:"os"`
	Channel     string    `json:"channel"`
	FromVersion string    `json:"from_version"`
	ToVersion   string    `json:"to_version"`
	Outcome     string    `json:"outcome"`
	Stage       string    `json:"stage"`
	Message     string    `json:"message"`
	Time        time.Time `json:"time"` // set by the server
}

// DecodeReport parses and checks a report body. Unknown fields are errors;
// time is set by the server, not the client.
func DecodeReport(data []byte) (Report, error) {
	var r Report
	if err := strictDecode(data, &r); err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	if !r.Time.IsZero() {
		return Report{}, errors.New("report: time is set by the server")
	}
	checks := []struct {
		name     string
		v        string
		max      int
		required bool
	}{
		{"id", r.ID, 256, true}, {"group", r.Group, 64, false}, {"os", r.OS, 64, true},
		{"channel", r.Channel, 64, true}, {"from_version", r.FromVersion, 64, false},
		{"to_version", r.ToVersion, 64, true}, {"stage", r.Stage, 64, false},
	}
	for _, c := range checks {
		if c.v == "" && !c.required {
			continue
		}
		if !validLabel(c.v, c.max) {
			return Report{}, fmt.Errorf("report: %s must be 1-%d printable characters without spaces", c.name, c.max)
		}
	}
	if r.Group != "" && !groupRe.MatchString(r.Group) {
		return Report{}, errors.New("report: group must match ^[a-zA-Z0-9.-]+$")
	}
	switch r.Outcome {
	case OutcomeCommitted, OutcomeRolledBack, OutcomeFailed:
	default:
		return Report{}, fmt.Errorf("report: outcome %q is not committed, rolled_back or failed", r.Outcome)
	}
	if len(r.Message) > 4096 || strings.ContainsRune(r.Message, 0) {
		return Report{}, errors.New("report: message longer than 4096 bytes or with NUL")
	}
	return r, nil
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	data, err := readBody(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
		return
	}
	rep, err := DecodeReport(data)
	if err != nil {
		writeError(w, http.StatusBadRequest, kindBadRequest, err.Error())
		return
	}
	rep.Time = s.cfg.Now().UTC()
	paused, err := s.cfg.Store.AddReport(r.Context(), rep, s.cfg.PauseThreshold)
	if err != nil {
		s.cfg.Log.Error("report", "err", err)
		writeError(w, http.StatusInternalServerError, kindInternal, "store error")
		return
	}
	s.cfg.Log.Info("report", "id", rep.ID, "channel", rep.Channel, "from", rep.FromVersion, "to", rep.ToVersion,
		"outcome", rep.Outcome, "stage", rep.Stage, "paused", paused)
	writeJSON(w, http.StatusOK, map[string]bool{"paused": paused})
}

// Rollout is the answer of GET /v1/rollout.
type Rollout struct {
	Channel string   `json:"channel"`
	Paused  []string `json:"paused"`
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request) {
	ch := r.URL.Query().Get("channel")
	if !validLabel(ch, 64) {
		writeError(w, http.StatusBadRequest, kindBadRequest, "channel parameter required (1-64 printable characters)")
		return
	}
	paused, err := s.cfg.Store.Paused(r.Context(), ch)
	if err != nil {
		s.cfg.Log.Error("rollout", "err", err)
		writeError(w, http.StatusInternalServerError, kindInternal, "store error")
		return
	}
	if paused == nil {
		paused = []string{}
	}
	w.Header().Set("Cache-Control", "no-cache")
	writeJSON(w, http.StatusOK, Rollout{Channel: ch, Paused: paused})
}

func (s *Server) reports(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ch := q.Get("channel")
	if ch != "" && !validLabel(ch, 64) {
		writeError(w, http.StatusBadRequest, kindBadRequest, "bad channel")
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, kindBadRequest, "limit must be 1-10000")
			return
		}
		limit = n
	}
	reps, err := s.cfg.Store.Reports(r.Context(), ch, limit)
	if err != nil {
		s.cfg.Log.Error("reports", "err", err)
		writeError(w, http.StatusInternalServerError, kindInternal, "store error")
		return
	}
	if reps == nil {
		reps = []Report{}
	}
	writeJSON(w, http.StatusOK, reps)
}

// static serves the repository read-only: no directory listings, no dot
// files (temporary files of a publish in progress), no escape from the
// directory (os.Root), with cache headers that suit a TUF repository:
// metadata is revalidated, content-addressed files are immutable.
func (s *Server) static() http.Handler {
	fsrv := http.FileServerFS(s.repo.FS())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := path.Clean("/" + r.URL.Path)
		for _, el := range strings.Split(p, "/") {
			if strings.HasPrefix(el, ".") {
				http.NotFound(w, r)
				return
			}
		}
		if fi, err := s.repo.Stat(strings.TrimPrefix(p, "/")); err != nil || fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		switch {
		case strings.HasPrefix(p, "/chunks/"), strings.HasPrefix(p, "/targets/"):
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		default:
			w.Header().Set("Cache-Control", "no-cache")
		}
		fsrv.ServeHTTP(w, r)
	})
}

// Serve runs the server on addr until ctx ends.
func (s *Server) Serve(ctx context.Context, addr string) error {
	hs := &http.Server{Addr: addr, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			return fmt.Errorf("serve: shutdown: %w", err)
		}
		return nil
	}
}
