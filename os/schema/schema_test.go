package schema

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	o, err := Parse("ok.yaml", []byte(`
name: web
version: "1.10"
kernel:
  cmdline: [quiet, loglevel=3]
  modules: [vfat, nls_cp437]
files:
  - path: /etc/motd
    content: hi
  - path: /usr/bin/tool
    source: tool.bin
    mode: "0755"
  - path: /opt/empty
`))
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != "1.10" {
		t.Errorf("version = %q, want the text as written", o.Version)
	}
	if o.Hostname != "web" || o.Kernel.Flavour != DefaultFlavour {
		t.Errorf("defaults not applied: hostname %q flavour %q", o.Hostname, o.Kernel.Flavour)
	}
	if got := o.Files[1].FileMode(); got != 0o755 {
		t.Errorf("mode = %o", got)
	}
	if o.Files[0].Mode != "0644" {
		t.Errorf("default mode = %q", o.Files[0].Mode)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // each must appear in one error line, in order
	}{
		{"unknown top field", "name: a\nversion: 1\nnmae: b\n", []string{"bad.yaml:3:1: nmae: unknown field (known fields:"}},
		{"unknown nested field", "name: a\nversion: 1\nkernel:\n  flavor: amd64\n", []string{"bad.yaml:4:3: kernel.flavor: unknown field"}},
		{"missing name", "version: 1\n", []string{"name: required"}},
		{"bad name", "name: Hello_World\nversion: 1\n", []string{"bad.yaml:1:7: name: \"Hello_World\""}},
		{"plus in version", "name: a\nversion: 1.0+3\n", []string{"bad.yaml:2:10: version:", "reserved for boot counting"}},
		{"bad flavour", "name: a\nversion: 1\nkernel:\n  flavour: arm64\n", []string{"bad.yaml:4:12: kernel.flavour: \"arm64\" is not a known flavour"}},
		{"list expected", "name: a\nversion: 1\nkernel:\n  modules: vfat\n", []string{"bad.yaml:4:12: kernel.modules: expected a list"}},
		{"mapping expected", "name: a\nversion: 1\nkernel: [a]\n", []string{"bad.yaml:3:9: kernel: expected a mapping of fields"}},
		{"scalar expected", "name: [a]\nversion: 1\n", []string{"bad.yaml:1:7: name: expected a string, got a list"}},
		{"reserved cmdline", "name: a\nversion: 1\nkernel:\n  cmdline: [cairn.slot=B]\n", []string{"kernel.cmdline[0]: \"cairn.slot=B\""}},
		{"cmdline with space", "name: a\nversion: 1\nkernel:\n  cmdline: [\"a b\"]\n", []string{"bad.yaml:4:13: kernel.cmdline[0]"}},
		{"bad module", "name: a\nversion: 1\nkernel:\n  modules: [../x]\n", []string{"kernel.modules[0]: \"../x\" is not a module name"}},
		{"path traversal", "name: a\nversion: 1\nfiles:\n  - path: /etc/../var/x\n", []string{"bad.yaml:4:11: files[0].path:", "absolute, clean path"}},
		{"relative path", "name: a\nversion: 1\nfiles:\n  - path: etc/x\n", []string{"files[0].path: \"etc/x\""}},
		{"var path", "name: a\nversion: 1\nfiles:\n  - path: /var/lib/x\n", []string{"under /etc, /usr or /opt"}},
		{"generated etc", "name: a\nversion: 1\nfiles:\n  - path: /etc/hostname\n", []string{"generated at boot"}},
		{"duplicate file", "name: a\nversion: 1\nfiles:\n  - path: /etc/a\n  - path: /etc/a\n", []string{"bad.yaml:5:11: files[1].path: \"/etc/a\" is already given by files[0]"}},
		{"bad mode", "name: a\nversion: 1\nfiles:\n  - path: /etc/a\n    mode: \"0999\"\n", []string{"bad.yaml:5:11: files[0].mode"}},
		{"content and source", "name: a\nversion: 1\nfiles:\n  - path: /etc/a\n    content: x\n    source: y\n", []string{"files[0]: content and source exclude each other"}},
		{"duplicate key", "name: a\nname: b\nversion: 1\n", []string{"bad.yaml:2:1: name: field given twice"}},
		{"syntax error", "name: a\nversion: 1\nkernel:\n  modules: [a\n", []string{"bad.yaml:", "invalid YAML"}},
		{"tab indentation", "name: a\n\tversion: 1\n", []string{"bad.yaml:2:1: invalid YAML"}},
		{"empty file", "", []string{"bad.yaml: file is empty"}},
		{"service without image", "name: a\nversion: 1\nservices:\n  web: {}\n", []string{"bad.yaml:4:8: services.web.image: required"}},
		{"several errors", "name: A\nversion: \"\"\nhostname: -x-\n", []string{"name:", "version: required", "hostname:"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml:1:1: expected a mapping of fields"}},
		{"alias loop guarded", "a: &x [*x]\n", []string{"bad.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.in))
			if err == nil {
				t.Fatal("no error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T is not Errors: %v", err, err)
			}
			text := err.Error()
			rest := text
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q does not contain %q (in order)", text, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestLoadExamples(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestLoadTooLarge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(p, []byte("name: a\n"+strings.Repeat("#", MaxFileSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"name: a\nversion: 1\n",
		"name: a\nversion: 1\nfiles:\n  - path: /etc/a\n    mode: \"0600\"\n",
		"a: &x [*x, *x]\n",
		"kernel: {cmdline: [a, b], modules: [c]}\n",
		"\xff\xfe",
		servicesOS,
		"name: a\nversion: 1\nservices:\n  a: {image: reg.example.com/a:1, depends_on: [b]}\n  b: {image: reg.example.com/b:1, depends_on: {a: {condition: service_healthy}}}\n",
		"name: a\nversion: 1\nservices:\n  a: {image: \"go://./x\", command: \"a  b\", environment: [A=1], ports: [\"[::1]:80:80/udp\"]}\n",
		"name: a\nversion: 1\nonboot:\n  - {name: x, image: \"oci-layout:d\", timeout: 1s}\n",
		"name: a\nversion: 1\nupdate: {server: \"http://127.0.0.1:1\", root: r.json, reboot: {strategy: window, window: \"Fri-Mon 23:00-01:00\"}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Parse("fuzz.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			return
		}
		if o.Name == "" || o.Version == "" || o.Hostname == "" {
			t.Fatalf("valid OS without required fields: %+v", o)
		}
		for n, s := range o.Services {
			if s.Image == "" || s.PullPolicy == "" || s.NetworkMode == "" || s.Restart.Mode == "" || s.StopGracePeriod == 0 {
				t.Fatalf("valid service %q without defaults: %+v", n, s)
			}
			if len(s.Ports) != len(s.PortsRaw) || len(s.Volumes) != len(s.VolumesRaw) {
				t.Fatalf("service %q: parsed ports or volumes missing", n)
			}
		}
		if u := o.Update; u != nil && (u.Channel == "" || u.Interval < MinUpdateInterval || u.Trial.Timeout <= u.Trial.HealthyFor) {
			t.Fatalf("valid update section out of bounds: %+v", u)
		}
	})
}
