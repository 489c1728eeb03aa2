package schema

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// richOS sets every field that validation fills (yaml:"-").
const richOS = `name: rich
version: "2"
kernel: {cmdline: [quiet], modules: [virtio_net]}
files:
  - {path: /etc/motd, content: hi, mode: "0600"}
network:
  interfaces:
    - {name: eth0, addresses: [10.0.0.2/24], gateway: 10.0.0.1, mtu: 1400}
  dns: [1.1.1.1]
services:
  web:
    image: reg.example.com/web:1
    ports: ["127.0.0.1:8080:80/tcp", "53:53/udp"]
    volumes: ["data:/data:ro", "/var/log:/logs"]
    restart: on-failure:3
    stop_signal: SIGUSR1
    stop_grace_period: 1m30s
    resources: {memory: 128M, cpus: 0.5, pids: 64}
    healthcheck: {http: "http://127.0.0.1:80/", interval: 5s, retries: 2}
    environment: {A: "1"}
    command: serve --port 80
    sysctls: {net.ipv4.ip_forward: "1"}
  db:
    image: reg.example.com/db:1
    depends_on: {web: {condition: service_healthy}}
    tmpfs: [/tmp]
onboot:
  - {name: setup, image: reg.example.com/setup:1, volumes: ["data:/data"], timeout: 30s}
update: {server: "http://127.0.0.1:1", root: r.json, bandwidth_limit: 10M}
`

func roundTrip(t *testing.T, o *OS) *OS {
	t.Helper()
	b, err := o.MarshalCompiled()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "os.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCompiled(p)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// withoutNodes is o without its YAML positions, which the compiled form
// does not keep.
func withoutNodes(o *OS) *OS {
	c := *o
	c.nodes = nil
	return &c
}

func TestCompiledRoundTrip(t *testing.T) {
	rich := mustParse(t, richOS)
	w := rich.Services["web"]
	if len(w.Ports) != 2 || len(w.Volumes) != 2 || w.Restart.MaxRetries != 3 || w.StopSignalNumber == 0 ||
		w.Resources.MemoryBytes == 0 || rich.Update.BandwidthBytes == 0 || len(rich.Onboot[0].Volumes) != 1 {
		t.Fatalf("richOS does not set the derived fields: %+v %+v", w, rich.Update)
	}
	files := map[string]*OS{"rich": rich}
	var paths []string
	for _, g := range []string{"../examples/*.yaml", "../../qemu-tests/testdata/*.yaml"} {
		m, err := filepath.Glob(g)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if len(paths) < 4 {
		t.Fatalf("found only %v", paths)
	}
	for _, p := range paths {
		o, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = o
	}
	for name, o := range files {
		t.Run(name, func(t *testing.T) {
			got := roundTrip(t, o)
			if got.nodes != nil {
				t.Error("compiled OS has YAML nodes")
			}
			if want := withoutNodes(o); !reflect.DeepEqual(got, want) {
				t.Errorf("round trip differs:\n got %#v\nwant %#v", got, want)
			}
			// Deterministic: the same OS compiles to the same bytes.
			a, _ := o.MarshalCompiled()
			b, _ := got.MarshalCompiled()
			if string(a) != string(b) {
				t.Errorf("compiled forms differ:\n%s\n%s", a, b)
			}
		})
	}
}

// Loaded from the compiled form, an OS-file error that Merge finds names the
// OS file without a position; the machine config's keep theirs.
func TestCompiledMergePositions(t *testing.T) {
	o := roundTrip(t, mustParse(t, "name: a\nversion: 1\nservices:\n  a:\n    image: reg.example.com/a:1\n    depends_on: {b: {condition: service_healthy}}\n  b:\n    image: reg.example.com/b:1\n    notify: true\n"))
	m, err := ParseMachine("m.yaml", []byte("services:\n  b:\n    image: reg.example.com/b:2\n    depends_on: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Merge(m)
	checkErr(t, err, []string{"os.yaml: services.a.depends_on.b.condition: service_healthy needs \"b\"", "m.yaml:4:18: services.b.depends_on.a: dependency cycle: a -> b -> a"})

	// A build image that the OS file bakes stays usable by a machine config.
	o = roundTrip(t, mustParse(t, baseOS))
	m, err = ParseMachine("m.yaml", []byte("services:\n  web2:\n    image: go://./hello-web\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := o.Merge(m)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Services["web2"].PullPolicy; got != PullBuild {
		t.Errorf("web2 pull_policy %q, want %q", got, PullBuild)
	}
}

func TestLoadCompiledErrors(t *testing.T) {
	good, err := mustParse(t, "name: a\nversion: 1\n").MarshalCompiled()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, tt := range map[string]struct{ data, want string }{
		"unknown field": {strings.Replace(string(good), `"Name"`, `"Nom"`, 1), "unknown field"},
		"format":        {strings.Replace(string(good), `"format":1`, `"format":2`, 1), "format 2, want 1"},
		"trailing":      {string(good) + "{}", "data after the JSON value"},
		"no os":         {`{"format":1}`, "no os"},
		"not JSON":      {"name: a\n", "invalid character"},
		"yaml type":     {strings.Replace(string(good), `"Name":"a"`, `"Name":1`, 1), "cannot unmarshal"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(p, []byte(tt.data), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadCompiled(p)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming %s and containing %q", name, err, p, tt.want)
		}
	}
}

func TestLoadInstalled(t *testing.T) {
	dir := t.TempDir()
	yamlPath := filepath.Join(dir, "os.yaml")
	jsonPath := filepath.Join(dir, "os.json")
	if err := os.WriteFile(yamlPath, []byte("name: fromyaml\nversion: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }

	// Missing compiled form: the YAML, with a line saying why.
	o, err := LoadInstalled(jsonPath, yamlPath, logf)
	if err != nil || o.Name != "fromyaml" || len(logged) != 1 || !strings.Contains(logged[0], jsonPath) || !strings.Contains(logged[0], yamlPath) {
		t.Fatalf("missing: %v, %v, logged %q", o, err, logged)
	}
	// Broken compiled form: the same.
	logged = nil
	if err := os.WriteFile(jsonPath, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err = LoadInstalled(jsonPath, yamlPath, logf); err != nil || o.Name != "fromyaml" || len(logged) != 1 {
		t.Fatalf("broken: %v, %v, logged %q", o, err, logged)
	}
	// Good compiled form: it, and nothing logged.
	logged = nil
	b, err := mustParse(t, "name: fromjson\nversion: 1\n").MarshalCompiled()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(jsonPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err = LoadInstalled(jsonPath, yamlPath, logf); err != nil || o.Name != "fromjson" || len(logged) != 0 {
		t.Fatalf("good: %v, %v, logged %q", o, err, logged)
	}
	// Neither: the YAML's error.
	if _, err = LoadInstalled(filepath.Join(dir, "none.json"), filepath.Join(dir, "none.yaml"), logf); err == nil {
		t.Fatal("no error with neither file")
	}
}
