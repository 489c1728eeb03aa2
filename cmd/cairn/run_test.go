package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/qemu"
)

func TestParseRunFlags(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	cfg := filepath.Join(dir, "cfg.yaml")
	for _, f := range []string{img, cfg} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		args    []string
		check   func(runOptions) bool
		wantErr string
	}{
		{"defaults", []string{img}, func(o runOptions) bool {
			return o.cfg.Image == img && !o.cfg.Direct && o.cfg.Mem == "512M" && o.timeout == 0 && len(o.cfg.Ports) == 0
		}, ""},
		{"all flags", []string{"--direct", "--port", "8080:80", "--port=2222:22", "--fw-cfg", cfg, "--mem", "1G",
			"--timeout", "90s", "--qmp", "/tmp/q.sock", img}, func(o runOptions) bool {
			return o.cfg.Direct && o.cfg.FwCfgFile == cfg && o.cfg.Mem == "1G" && o.timeout == 90*time.Second &&
				o.cfg.QMPSocket == "/tmp/q.sock" &&
				slices.Equal(o.cfg.Ports, []qemu.PortForward{{Host: 8080, Guest: 80}, {Host: 2222, Guest: 22}})
		}, ""},
		{"bad port", []string{"--port", "8080", img}, nil, "want HOSTPORT:GUESTPORT"},
		{"bad port number", []string{"--port", "80:70000", img}, nil, "guest port"},
		{"duplicate host port", []string{"--port", "80:80", "--port", "80:81", img}, nil, "forwarded twice"},
		{"no image", []string{"--direct"}, nil, "exactly one IMAGE"},
		{"two images", []string{img, img}, nil, "exactly one IMAGE"},
		{"missing image", []string{filepath.Join(dir, "nope.img")}, nil, "no such file"},
		{"image is dir", []string{dir}, nil, "not a regular file"},
		{"missing fw-cfg", []string{"--fw-cfg", filepath.Join(dir, "nope"), img}, nil, "--fw-cfg file"},
		{"negative timeout", []string{"--timeout", "-1s", img}, nil, "negative"},
		{"bad timeout", []string{"--timeout", "soon", img}, nil, "invalid value"},
		{"unknown flag", []string{"--bios", img}, nil, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseRunFlagsQuiet(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Errorf("unexpected options %+v", o)
			}
		})
	}
}

// parseRunFlagsQuiet discards the flag set's usage output.
func parseRunFlagsQuiet(args []string) (runOptions, error) {
	return parseRunFlags(args, io.Discard)
}

func TestRunHelp(t *testing.T) {
	if _, err := parseRunFlagsQuiet([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}
