package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

// PID1APISocket is where PID 1 serves its API (HTTP over a unix socket).
const PID1APISocket = "/run/cairn/api.sock"

// maxServicesBody bounds GET /v1/services.
const maxServicesBody = 4 << 20

// ServiceStatus is one element of PID 1's GET /v1/services.
type ServiceStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Health   string `json:"health"` // none, starting, healthy, unhealthy
	Restarts int    `json:"restarts"`
	PID      int    `json:"pid"`
	ExitCode *int   `json:"exit_code"`
	Since    string `json:"since"`
	Message  string `json:"message"`
}

// Health values of ServiceStatus.
const (
	HealthNone      = "none"
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// DecodeServices parses the body of GET /v1/services: a JSON array of
// ServiceStatus. Errors name the byte offset of bad JSON.
func DecodeServices(body []byte) ([]ServiceStatus, error) {
	if len(body) > maxServicesBody {
		return nil, fmt.Errorf("services: %d bytes, limit %d", len(body), maxServicesBody)
	}
	var out []ServiceStatus
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&out); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("services: byte %d: %w", se.Offset, err)
		case errors.As(err, &te):
			return nil, fmt.Errorf("services: byte %d: field %q: %w", te.Offset, te.Field, err)
		}
		return nil, fmt.Errorf("services: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("services: byte %d: trailing data after the array", dec.InputOffset())
	}
	if out == nil {
		return nil, errors.New("services: not a JSON array")
	}
	for i, s := range out {
		switch s.Health {
		case HealthNone, HealthStarting, HealthHealthy, HealthUnhealthy, "":
		default:
			return nil, fmt.Errorf("services: [%d] %q: health %q is not none, starting, healthy or unhealthy", i, printable(s.Name, 64), printable(s.Health, 32))
		}
	}
	return out, nil
}

// AllHealthy returns nil when every service in want is present and
// healthy, and every other service that has a health check (health not
// none) is healthy too; otherwise an error naming the first that is not.
func AllHealthy(list []ServiceStatus, want []string) error {
	seen := map[string]bool{}
	for _, s := range list {
		seen[s.Name] = true
		if s.Health == HealthNone || s.Health == "" {
			if slices.Contains(want, s.Name) {
				return fmt.Errorf("service %s has no health yet (state %s)", printable(s.Name, 64), printable(s.State, 32))
			}
			continue
		}
		if s.Health != HealthHealthy {
			msg := fmt.Sprintf("service %s is %s (state %s, %d restarts)", printable(s.Name, 64), s.Health, printable(s.State, 32), s.Restarts)
			if s.Message != "" {
				msg += ": " + printable(s.Message, 200)
			}
			return errors.New(msg)
		}
	}
	for _, n := range want {
		if !seen[n] {
			return fmt.Errorf("service %s is not running", printable(n, 64))
		}
	}
	return nil
}

// PID1API talks to PID 1's API over its unix socket.
type PID1API struct {
	// Socket is the unix socket (default PID1APISocket).
	Socket string
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
}

func (p *PID1API) client() *http.Client {
	sock := p.Socket
	if sock == "" {
		sock = PID1APISocket
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
	}
}

func (p *PID1API) do(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://pid1"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("pid 1 api: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxServicesBody+1))
	if err != nil {
		return nil, fmt.Errorf("pid 1 api: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("pid 1 api: %s %s: HTTP %d: %s", method, path, resp.StatusCode, printable(strings.TrimSpace(string(body)), 200))
	}
	return body, nil
}

// Services returns GET /v1/services.
func (p *PID1API) Services(ctx context.Context) ([]ServiceStatus, error) {
	body, err := p.do(ctx, http.MethodGet, "/v1/services")
	if err != nil {
		return nil, err
	}
	list, err := DecodeServices(body)
	if err != nil {
		return nil, fmt.Errorf("pid 1 api: GET /v1/services: %w", err)
	}
	return list, nil
}

// Healthy returns a Health.Services function: every service named in want
// (the OS file's services with a health check) and every service PID 1
// reports with a health check must be healthy.
func (p *PID1API) Healthy(want []string) func(context.Context) error {
	return func(ctx context.Context) error {
		list, err := p.Services(ctx)
		if err != nil {
			return err
		}
		return AllHealthy(list, want)
	}
}

// Reboot asks PID 1 for an orderly reboot (POST /v1/reboot).
func (p *PID1API) Reboot(ctx context.Context) error {
	_, err := p.do(ctx, http.MethodPost, "/v1/reboot")
	return err
}
