package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxAPIBody bounds what the agent reads of a server answer.
const maxAPIBody = 64 << 10

// ErrSemaphoreFull is returned by FleetLock.Lock when the group has no free
// reboot slot.
var ErrSemaphoreFull = errors.New("fleetlock: semaphore full")

// APIError is an error answer of the update server or a FleetLock server:
// {"kind": …, "value": …} with a 4xx/5xx status.
type APIError struct {
	Status      int
	Kind, Value string
}

func (e *APIError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("HTTP %d: %s: %s", e.Status, e.Kind, e.Value)
}

// Is makes errors.Is(err, ErrSemaphoreFull) true for a full semaphore.
func (e *APIError) Is(target error) bool {
	return target == ErrSemaphoreFull && e.Kind == "failed_lock_semaphore_full"
}

// DecodeAPIError reads an error body. A body that is not the documented
// object still gives an error with the status; kind and value are cut to
// 256 bytes and stripped of control characters, since they end up on the
// console.
func DecodeAPIError(status int, body []byte) *APIError {
	e := &APIError{Status: status}
	var v struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	}
	if len(body) <= maxAPIBody && json.Unmarshal(body, &v) == nil {
		e.Kind, e.Value = printable(v.Kind, 256), printable(v.Value, 256)
	}
	return e
}

func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= max {
			break
		}
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\uFFFD' {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// API talks to `cairn serve` (or any FleetLock server, for Lock and Unlock).
type API struct {
	// URL is the server's base URL (the repository URL for cairn serve).
	URL  string
	HTTP *http.Client // nil: http.DefaultClient
	// ID and Group identify the machine (FleetLock client_params).
	ID, Group string
}

func (a *API) client() *http.Client {
	if a.HTTP == nil {
		return http.DefaultClient
	}
	return a.HTTP
}

// post sends a JSON body and returns the answer body on 200.
func (a *API) post(ctx context.Context, p string, body any, fleetlock bool) ([]byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	u := strings.TrimRight(a.URL, "/") + p
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if fleetlock {
		req.Header.Set("fleet-lock-protocol", "true")
	}
	return a.do(req)
}

func (a *API) do(req *http.Request) ([]byte, error) {
	resp, err := a.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, DecodeAPIError(resp.StatusCode, body))
	}
	if len(body) > maxAPIBody {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", req.Method, req.URL, maxAPIBody)
	}
	return body, nil
}

type clientParams struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

type lockBody struct {
	ClientParams clientParams `json:"client_params"`
}

// Lock takes (or renews) this machine's reboot lease: FleetLock
// POST /v1/pre-reboot. A full group gives an error that Is ErrSemaphoreFull.
func (a *API) Lock(ctx context.Context) error {
	_, err := a.post(ctx, "/v1/pre-reboot", lockBody{clientParams{a.ID, a.Group}}, true)
	if err != nil {
		return fmt.Errorf("fleetlock: %w", err)
	}
	return nil
}

// Unlock releases this machine's lease if it holds one: FleetLock
// POST /v1/steady-state.
func (a *API) Unlock(ctx context.Context) error {
	_, err := a.post(ctx, "/v1/steady-state", lockBody{clientParams{a.ID, a.Group}}, true)
	if err != nil {
		return fmt.Errorf("fleetlock: %w", err)
	}
	return nil
}

// Report is an update outcome as POST /v1/report takes it.
type Report struct {
	ID          string `json:"id"`
	Group       string `json:"group,omitempty"`
	OS          string `json:"os"`
	Channel     string `json:"channel"`
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version"`
	Outcome     string `json:"outcome"` // committed, rolled_back or failed
	Stage       string `json:"stage,omitempty"`
	Message     string `json:"message,omitempty"`
}

// Outcomes of a report.
const (
	ReportCommitted  = "committed"
	ReportRolledBack = "rolled_back"
	ReportFailed     = "failed"
)

// SendReport posts r.
func (a *API) SendReport(ctx context.Context, r Report) error {
	if len(r.Message) > 4096 {
		r.Message = r.Message[:4096]
	}
	if _, err := a.post(ctx, "/v1/report", r, false); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// Paused returns the versions of channel whose rollout the server paused
// (GET /v1/rollout?channel=…).
func (a *API) Paused(ctx context.Context, channel string) ([]string, error) {
	u := strings.TrimRight(a.URL, "/") + "/v1/rollout?channel=" + url.QueryEscape(channel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	body, err := a.do(req)
	if err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	return DecodeRollout(body, channel)
}

// DecodeRollout parses a GET /v1/rollout answer for channel.
func DecodeRollout(body []byte, channel string) ([]string, error) {
	if len(body) > maxAPIBody {
		return nil, fmt.Errorf("rollout: answer of %d bytes, limit %d", len(body), maxAPIBody)
	}
	var r struct {
		Channel string   `json:"channel"`
		Paused  []string `json:"paused"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	if r.Channel != channel {
		return nil, fmt.Errorf("rollout: answer for channel %q, asked for %q", printable(r.Channel, 64), channel)
	}
	return r.Paused, nil
}

// RebootPolicy decides when the agent may reboot into a written update.
type RebootPolicy interface {
	// Wait returns once a reboot may start. status is called with what the
	// agent is waiting for.
	Wait(ctx context.Context, clock Clock, status func(string)) error
	// Release is called once the machine is in steady state after a boot.
	Release(ctx context.Context) error
	String() string
}

// Immediate reboots as soon as the update is written.
type Immediate struct{}

// Wait returns at once.
func (Immediate) Wait(ctx context.Context, _ Clock, _ func(string)) error { return ctx.Err() }

// Release does nothing.
func (Immediate) Release(context.Context) error { return nil }

func (Immediate) String() string { return "immediate" }

// InWindow reboots only inside a maintenance window.
type InWindow struct{ Window Window }

// Wait sleeps until the window is open.
func (p InWindow) Wait(ctx context.Context, clock Clock, status func(string)) error {
	for {
		now := clock.Now()
		start, _, ok := p.Window.Next(now)
		if !ok {
			return errors.New("reboot window never opens")
		}
		if !start.After(now) {
			return nil
		}
		status("waiting for window " + p.Window.String() + " (opens " + start.Format(time.RFC3339) + ")")
		if err := clock.Sleep(ctx, start.Sub(now)); err != nil {
			return err
		}
	}
}

// Release does nothing.
func (InWindow) Release(context.Context) error { return nil }

func (p InWindow) String() string { return "window " + p.Window.String() }

// FleetLock reboots only while holding a reboot lease from a FleetLock
// server; it retries every Retry (default 1m) while the group is full or
// the server is unreachable.
type FleetLock struct {
	API   *API
	Retry time.Duration
}

// Wait takes the lease.
func (p FleetLock) Wait(ctx context.Context, clock Clock, status func(string)) error {
	retry := p.Retry
	if retry <= 0 {
		retry = time.Minute
	}
	for {
		err := p.API.Lock(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && !errors.Is(err, ErrSemaphoreFull) {
			return err // our request is wrong; retrying will not help
		}
		status("waiting for lease (" + err.Error() + ")")
		if err := clock.Sleep(ctx, retry); err != nil {
			return err
		}
	}
}

// Release gives the lease back (FleetLock steady state).
func (p FleetLock) Release(ctx context.Context) error { return p.API.Unlock(ctx) }

func (p FleetLock) String() string { return "fleetlock " + p.API.URL }
