package schema

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const baseOS = `name: web
version: "1"
files:
  - path: /etc/motd
    content: image
  - path: /usr/share/x
    content: x
services:
  web:
    image: go://./hello-web
    ports: ["8080:8080"]
    healthcheck: {tcp: "127.0.0.1:8080"}
  db:
    image: docker.io/library/postgres:16
onboot:
  - name: setup
    image: oci-layout:images/setup
`

func mustParse(t *testing.T, data string) *OS {
	t.Helper()
	o, err := Parse("os.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestParseMachine(t *testing.T) {
	m, err := ParseMachine("m.yaml", []byte(`hostname: node-1
network:
  interfaces:
    - name: eth0
      dhcp: true
services:
  extra:
    image: reg.example.com/x/extra:2
    depends_on: [web]
files:
  - path: /etc/motd
    content: machine
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Services["extra"]; got.PullPolicy != PullMissing || got.Hostname != "extra" || got.NetworkMode != NetworkBridge {
		t.Errorf("defaults: %+v", got)
	}
	if m.Files[0].Mode != "0644" {
		t.Errorf("file mode %q", m.Files[0].Mode)
	}
}

func TestParseMachineErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown field", "hostname: a\nkernel: {}\n", []string{"m.yaml:2:1: kernel: unknown field (known fields: files, hostname, network, services)"}},
		{"hostname", "hostname: -a\n", []string{"m.yaml:1:11: hostname:"}},
		{"usr file", "files:\n  - path: /usr/x\n    content: x\n", []string{"m.yaml:2:11: files[0].path: \"/usr/x\": a machine config may only write files under /etc/"}},
		{"var file", "files:\n  - path: /var/x\n", []string{"under /etc, /usr or /opt"}},
		{"source", "files:\n  - path: /etc/x\n    source: x\n", []string{"files[0].source: a machine config carries its files' content"}},
		{"generated", "files:\n  - path: /etc/hostname\n    content: x\n", []string{"generated at boot"}},
		{"service", "services:\n  s:\n    image: nginx\n", []string{"m.yaml:3:12: services.s.image: \"nginx\" is not a full registry reference"}},
		{"network", "network:\n  interfaces:\n    - dhcp: true\n", []string{"network.interfaces[0]: needs name or mac"}},
		{"empty", "", []string{"m.yaml: file is empty"}},
		{"syntax", "services: [\n", []string{"invalid YAML"}},
		{"too large", "hostname: a\n" + strings.Repeat("#", MaxFileSize), []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMachine("m.yaml", []byte(tt.in))
			checkErr(t, err, tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error %T is not a non-empty Errors: %v", err, err)
	}
	text, rest := err.Error(), err.Error()
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("error %q does not contain %q (in order)", text, w)
		}
		rest = rest[i+len(w):]
	}
}

func TestLoadMachine(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte("hostname: node-2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadMachine(p)
	if err != nil || m.Hostname != "node-2" || m.Source != p {
		t.Fatalf("LoadMachine = %+v, %v", m, err)
	}
	if _, err := LoadMachine(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestMerge(t *testing.T) {
	o := mustParse(t, baseOS)
	before := deepCopy(o)
	m, err := ParseMachine("m.yaml", []byte(`hostname: node-1
network:
  interfaces: [{name: eth1, dhcp: true}]
services:
  extra:
    image: reg.example.com/x/extra:2
    depends_on: {web: {condition: service_healthy}}
    ports: ["9090:90"]
  baked:
    image: go://./hello-web
  db:
    image: docker.io/library/postgres:17
files:
  - path: /etc/motd
    content: machine
  - path: /etc/new
    content: new
`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := o.Merge(m)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "node-1" || got.Network == nil || got.Network.Interfaces[0].Name != "eth1" {
		t.Errorf("hostname/network not replaced: %q %+v", got.Hostname, got.Network)
	}
	if len(got.Services) != 4 || got.Services["db"].Image != "docker.io/library/postgres:17" || got.Services["db"].PullPolicy != PullMissing {
		t.Errorf("services: %+v", got.Services)
	}
	if got.Services["baked"].PullPolicy != PullBuild {
		t.Errorf("a baked image keeps pull_policy %q, want build", got.Services["baked"].PullPolicy)
	}
	wantFiles := []string{"/etc/motd=machine", "/usr/share/x=x", "/etc/new=new"}
	var files []string
	for _, f := range got.Files {
		files = append(files, f.Path+"="+f.Content)
	}
	if !reflect.DeepEqual(files, wantFiles) {
		t.Errorf("files = %v, want %v", files, wantFiles)
	}
	// o is unchanged, and the result shares nothing that can be changed.
	if !reflect.DeepEqual(o, before) {
		t.Error("Merge changed its receiver")
	}
	got.Services["web"].Ports[0].HostPort = 1
	got.Services["web"].Healthcheck.TCP = "changed"
	got.Files[0].Content = "z"
	if o.Services["web"].Ports[0].HostPort != 8080 || o.Services["web"].Healthcheck.TCP == "changed" || o.Files[0].Content != "image" {
		t.Error("the merged OS shares memory with the receiver")
	}
	if same, err := o.Merge(nil); err != nil || !reflect.DeepEqual(same, o) {
		t.Errorf("Merge(nil) = %v, %v", same, err)
	}
}

func TestMergeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"missing dependency", "services:\n  x:\n    image: reg.example.com/x:1\n    depends_on: [nope]\n",
			[]string{"m.yaml:4:18: services.x.depends_on.nope: no service is called \"nope\""}},
		{"port conflict", "services:\n  x:\n    image: reg.example.com/x:1\n    ports: [\"8080:80\"]\n",
			[]string{"services.", "host port 8080/tcp is already published by"}},
		{"go not baked", "services:\n  x:\n    image: go://./other\n",
			[]string{"m.yaml:3:12: services.x.image: \"go://./other\" is made at build time, and the OS image does not carry it", "go://./hello-web, oci-layout:images/setup"}},
		{"build pull not baked", "services:\n  x:\n    image: reg.example.com/x:1\n    pull_policy: build\n",
			[]string{"services.x.image: \"reg.example.com/x:1\" is made at build time"}},
		{"baked with pull always", "services:\n  x:\n    image: go://./hello-web\n    pull_policy: always\n",
			[]string{"m.yaml:4:18: services.x.pull_policy: go: images are made at build time"}},
		{"onboot name", "services:\n  setup:\n    image: reg.example.com/x:1\n", []string{"services.setup: \"setup\" is already the name of an onboot container"}},
		{"cycle through the image", "services:\n  web:\n    image: go://./hello-web\n    depends_on: [x]\n  x:\n    image: reg.example.com/x:1\n    depends_on: [web]\n",
			[]string{"dependency cycle: web -> x -> web"}},
		{"healthy without check", "services:\n  x:\n    image: reg.example.com/x:1\n    depends_on: {db: {condition: service_healthy}}\n",
			[]string{"m.yaml:", "service_healthy needs \"db\""}},
	}
	o := mustParse(t, baseOS)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMachine("m.yaml", []byte(tt.in))
			if err != nil {
				t.Fatalf("ParseMachine: %v", err)
			}
			_, err = o.Merge(m)
			checkErr(t, err, tt.want)
		})
	}
}

// An OS service that the machine config breaks is reported at the OS file.
func TestMergeErrorAtOSFile(t *testing.T) {
	o := mustParse(t, "name: a\nversion: 1\nservices:\n  a:\n    image: reg.example.com/a:1\n    depends_on: {b: {condition: service_healthy}}\n  b:\n    image: reg.example.com/b:1\n    notify: true\n")
	m, err := ParseMachine("m.yaml", []byte("services:\n  b:\n    image: reg.example.com/b:2\n    depends_on: [a]\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Merge(m)
	checkErr(t, err, []string{"os.yaml:6:33: services.a.depends_on.b.condition: service_healthy needs \"b\"", "m.yaml:4:18: services.b.depends_on.a: dependency cycle: a -> b -> a"})
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	osFile := "name: a\nversion: 1\nupdate:\n  server: http://127.0.0.1:1\n  root: keys/root.json\nservices:\n  a:\n    image: oci-layout:img\n  b:\n    image: docker-archive:b.tar\nfiles:\n  - path: /etc/x\n    source: x\n"
	write("os.yaml", osFile)
	_, err := LoadForBuild(filepath.Join(dir, "os.yaml"))
	checkErr(t, err, []string{":5:9: update.root: the trusted root:", ":8:12: services.a.image: img is not an OCI image layout", ":10:12: services.b.image: b.tar is not a readable file", ":13:13: files[0].source: x is not"})

	write("keys/root.json", `{"signed": {"_type": "targets"}, "signatures": []}`)
	_, err = LoadForBuild(filepath.Join(dir, "os.yaml"))
	checkErr(t, err, []string{"update.root:", "is not TUF root metadata"})

	if _, err := time.LoadLocation("Europe/London"); err == nil {
		write("tz.yaml", "name: a\nversion: 1\nupdate:\n  server: http://127.0.0.1:1\n  root: keys/root.json\n  reboot: {timezone: Mars/Olympus_Mons}\n")
		_, err = LoadForBuild(filepath.Join(dir, "tz.yaml"))
		checkErr(t, err, []string{":6:22: update.reboot.timezone: \"Mars/Olympus_Mons\" is not in this machine's time zone database"})
	}

	write("keys/root.json", `{"signed": {"_type": "root", "version": 1}, "signatures": []}`)
	write("img/oci-layout", `{"imageLayoutVersion": "1.0.0"}`)
	write("b.tar", "")
	write("x", "x")
	if _, err := LoadForBuild(filepath.Join(dir, "os.yaml")); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseMachine(f *testing.F) {
	for _, s := range []string{
		"hostname: a\n",
		"services:\n  s:\n    image: reg.example.com/x:1\n    depends_on: [web]\n    ports: [\"80:80\"]\n",
		"services:\n  s:\n    image: go://./hello-web\n    environment: [A=1]\n",
		"files:\n  - path: /etc/x\n    content: y\n",
		"network:\n  interfaces: [{name: eth0, dhcp: true}]\n",
		"services: {a: {image: reg.example.com/x:1, depends_on: {a: {condition: service_healthy}}}}\n",
		"a: &x [*x]\n",
	} {
		f.Add([]byte(s))
	}
	o, err := Parse("os.yaml", []byte(baseOS))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMachine("fuzz.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %v", err)
			}
			return
		}
		merged, err := o.Merge(m)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("merge error is not a non-empty Errors: %v", err)
			}
			return
		}
		for n, s := range merged.Services {
			if s.Image == "" || s.PullPolicy == "" || s.NetworkMode == "" {
				t.Fatalf("merged service %q lacks defaults: %+v", n, s)
			}
		}
	})
}
