package agent

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

func TestDecodeServices(t *testing.T) {
	tests := []struct {
		name, body, err string
		n               int
	}{
		{"empty", `[]`, "", 0},
		{"two", `[{"name":"web","state":"running","health":"healthy","restarts":0,"pid":42,"exit_code":null,"since":"x","message":""},{"name":"db","health":"none"}]`, "", 2},
		{"not array", `{}`, "cannot unmarshal", 0},
		{"null", `null`, "not a JSON array", 0},
		{"syntax", `[{"name":`, "services:", 0},
		{"bad health", `[{"name":"web","health":"great"}]`, `health "great"`, 0},
		{"trailing", `[] []`, "trailing data", 0},
		{"type", `[{"name":1}]`, `field "name"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeServices([]byte(tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || len(got) != tt.n {
				t.Fatalf("got %v, %v; want %d services", got, err, tt.n)
			}
		})
	}
}

func TestAllHealthy(t *testing.T) {
	web := ServiceStatus{Name: "web", State: "running", Health: HealthHealthy}
	tests := []struct {
		name string
		list []ServiceStatus
		want []string
		err  string
	}{
		{"none wanted", nil, nil, ""},
		{"healthy", []ServiceStatus{web}, []string{"web"}, ""},
		{"missing", nil, []string{"web"}, "web is not running"},
		{"starting", []ServiceStatus{{Name: "web", Health: HealthStarting}}, []string{"web"}, "web is starting"},
		{"unhealthy other", []ServiceStatus{web, {Name: "x", Health: HealthUnhealthy, Message: "bad\x1b"}}, []string{"web"}, "x is unhealthy"},
		{"no check ignored", []ServiceStatus{web, {Name: "x", Health: HealthNone}}, []string{"web"}, ""},
		{"wanted without health", []ServiceStatus{{Name: "web", Health: HealthNone}}, []string{"web"}, "no health yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := AllHealthy(tt.list, tt.want)
			if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestPID1API(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	health := "starting"
	rebooted := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`[{"name":"web","state":"running","health":"` + health + `"}]`))
	})
	mux.HandleFunc("POST /v1/reboot", func(w http.ResponseWriter, r *http.Request) {
		rebooted++
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	api := &PID1API{Socket: sock}
	ctx := context.Background()
	check := api.Healthy([]string{"web"})
	if err := check(ctx); err == nil || !strings.Contains(err.Error(), "web is starting") {
		t.Errorf("starting: err = %v", err)
	}
	health = "healthy"
	if err := check(ctx); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := api.Reboot(ctx); err != nil || rebooted != 1 {
		t.Errorf("reboot: %v, %d calls", err, rebooted)
	}
	bad := &PID1API{Socket: filepath.Join(t.TempDir(), "none.sock")}
	if _, err := bad.Services(ctx); err == nil || !strings.Contains(err.Error(), "GET /v1/services") {
		t.Errorf("missing socket: err = %v", err)
	}
}

func FuzzDecodeServices(f *testing.F) {
	for _, s := range []string{`[]`, `[{"name":"web","health":"healthy"}]`, `[{"name":"a","health":"x"}]`, `null`, `[`, "[{\"name\":\"\\u0000\"}]"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := DecodeServices(b)
		if err != nil {
			return
		}
		_ = AllHealthy(list, []string{"web"})
	})
}
