package supervise

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/os/schema"
)

func TestCommandLine(t *testing.T) {
	img := ImageConfig{Entrypoint: []string{"/ep"}, Cmd: []string{"a", "b"}}
	for _, tc := range []struct {
		name string
		svc  schema.Service
		img  ImageConfig
		want []string
	}{
		{"image", schema.Service{}, img, []string{"/ep", "a", "b"}},
		{"command", schema.Service{Command: []string{"x"}}, img, []string{"/ep", "x"}},
		{"entrypoint drops cmd", schema.Service{Entrypoint: []string{"/e2"}}, img, []string{"/e2"}},
		{"both", schema.Service{Entrypoint: []string{"/e2"}, Command: []string{"y"}}, img, []string{"/e2", "y"}},
		{"cmd only", schema.Service{}, ImageConfig{Cmd: []string{"/c"}}, []string{"/c"}},
		{"none", schema.Service{}, ImageConfig{}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := commandLine(&tc.svc, tc.img); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1"}, map[string]string{"A": "2", "B": "3"})
	if want := []string{"PATH=/bin", "A=2", "B=3"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBuildSpec(t *testing.T) {
	svc := &schema.Service{
		Command:     []string{"/srv", "-x"},
		Environment: map[string]string{"GREETING": "hi"},
		User:        "1000:1000",
		Resources:   schema.Resources{MemoryBytes: 16 << 20, CPUs: 0.5, Pids: 64},
		CapDrop:     []string{"NET_RAW"},
		CapAdd:      []string{"sys_time"},
		Volumes:     []schema.Volume{{Name: "data", Target: "/data"}, {Source: "/var/x", Target: "/x", ReadOnly: true}},
		Tmpfs:       []string{"/scratch"},
		ReadOnly:    true,
		StopSignal:  "SIGINT",
	}
	spec, err := buildSpec(specInput{Name: "web_1", Service: svc, Image: ImageConfig{Env: []string{"A=1"}, WorkingDir: "/w"},
		Rootfs: "/r", VolumesDir: "/vol", NetNS: "/ns", Mode: "bridge", Files: map[string]string{"hosts": "/d/hosts"}, NotifySocket: "/n.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(spec.Process.Args, []string{"/srv", "-x"}) || spec.Process.Cwd != "/w" || spec.Process.User.Username != "1000:1000" {
		t.Errorf("process %+v", spec.Process)
	}
	for _, e := range []string{"A=1", "GREETING=hi", "NOTIFY_SOCKET=/run/notify.sock"} {
		if !slices.Contains(spec.Process.Env, e) {
			t.Errorf("env %q lacks %s", spec.Process.Env, e)
		}
	}
	if !slices.ContainsFunc(spec.Process.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
		t.Errorf("env %q has no PATH", spec.Process.Env)
	}
	if spec.Hostname != "web-1" || !spec.Root.Readonly {
		t.Errorf("hostname %q readonly %v", spec.Hostname, spec.Root.Readonly)
	}
	r := spec.Linux.Resources
	if *r.Memory.Limit != 16<<20 || *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 || *r.Pids.Limit != 64 {
		t.Errorf("resources %+v", r)
	}
	c := spec.Process.Capabilities.Bounding
	if slices.Contains(c, "CAP_NET_RAW") || !slices.Contains(c, "CAP_SYS_TIME") || !slices.Contains(c, "CAP_CHOWN") {
		t.Errorf("caps %q", c)
	}
	mounts := map[string]string{}
	for _, m := range spec.Mounts {
		mounts[m.Destination] = m.Source + " " + strings.Join(m.Options, ",")
	}
	for dst, want := range map[string]string{"/data": "/vol/data rbind", "/x": "/var/x rbind,nosuid,nodev,ro", "/scratch": "tmpfs", "/etc/hosts": "/d/hosts", "/run/notify.sock": "/n.sock"} {
		if !strings.HasPrefix(mounts[dst], want) {
			t.Errorf("mount %s = %q, want prefix %q", dst, mounts[dst], want)
		}
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "/ns" {
			t.Errorf("netns path %q", ns.Path)
		}
	}
	if spec.Annotations["org.opencontainers.image.stopSignal"] != "SIGINT" {
		t.Errorf("annotations %v", spec.Annotations)
	}

	// Host networking drops the namespace; a missing command is an error.
	spec, err = buildSpec(specInput{Name: "h", Service: &schema.Service{Command: []string{"/x"}}, Rootfs: "/r", Mode: "host"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == "network" {
			t.Error("host mode kept a network namespace")
		}
	}
	if _, err := buildSpec(specInput{Name: "e", Service: &schema.Service{}, Rootfs: "/r"}); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("err = %v", err)
	}
	if _, err := buildSpec(specInput{Name: "e", Service: &schema.Service{Command: []string{"/x"}, CapAdd: []string{"BOGUS"}}, Rootfs: "/r"}); err == nil {
		t.Error("unknown capability accepted")
	}
}

func TestRestartPolicy(t *testing.T) {
	sv := New(Options{})
	for _, tc := range []struct {
		raw            string
		code, failures int
		want           bool
	}{
		{"", 1, 0, false},
		{"no", 1, 0, false},
		{"always", 0, 100, true},
		{"unless-stopped", 0, 0, true},
		{"on-failure", 0, 0, false},
		{"on-failure", 137, 50, true},
		{"on-failure:3", 1, 2, true},
		{"on-failure:3", 1, 3, false},
		{"on-failure:x", 1, 0, false},
	} {
		s := &service{def: schema.Service{RestartRaw: tc.raw}}
		if got := sv.shouldRestart(s, tc.code, tc.failures); got != tc.want {
			t.Errorf("%q code %d failures %d: got %v", tc.raw, tc.code, tc.failures, got)
		}
	}
	// The parsed policy wins over the raw string.
	s := &service{def: schema.Service{RestartRaw: "no", Restart: schema.RestartPolicy{Mode: "always"}}}
	if !sv.shouldRestart(s, 0, 0) {
		t.Error("parsed policy ignored")
	}
}

func TestBackoff(t *testing.T) {
	sv := New(Options{})
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}
	for i, w := range want {
		if got := sv.backoff(i); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i, got, w)
		}
	}
	if got := sv.backoff(1000); got != 30*time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}

func TestDepsMet(t *testing.T) {
	sv := New(Options{Services: map[string]schema.Service{
		"db":  {Healthcheck: &schema.Healthcheck{TCP: "127.0.0.1:1"}},
		"mig": {},
		"app": {DependsOn: schema.DependsOn{"db": {Condition: schema.ConditionHealthy}, "mig": {Condition: schema.ConditionCompleted}}},
	}})
	app := sv.services["app"]
	if ok, why, _ := sv.depsMet(app); ok || !strings.Contains(why, "db to be healthy") {
		t.Fatalf("ok %v why %q", ok, why)
	}
	sv.update(sv.services["db"], func(st *Status) { st.State, st.Health = StateRunning, HealthHealthy })
	if ok, why, _ := sv.depsMet(app); ok || !strings.Contains(why, "mig to complete") {
		t.Fatalf("ok %v why %q", ok, why)
	}
	sv.update(sv.services["mig"], func(st *Status) { st.State, st.ExitCode = StateExited, 0 })
	if ok, why, _ := sv.depsMet(app); !ok {
		t.Fatalf("not met: %s", why)
	}
	sv.update(sv.services["db"], func(st *Status) { st.Health = HealthUnhealthy })
	if ok, _, _ := sv.depsMet(app); ok {
		t.Fatal("met with an unhealthy dependency")
	}
}

func TestWaitForNetwork(t *testing.T) {
	online := make(chan struct{})
	sv := New(Options{Online: online, Services: map[string]schema.Service{
		"net":   {WaitForNetwork: true},
		"local": {},
	}})
	ok, why, ch := sv.depsMet(sv.services["net"])
	if ok || !strings.Contains(why, "network to be online") || ch == nil {
		t.Fatalf("before online: ok %v why %q ch %v", ok, why, ch)
	}
	if ok, why, _ := sv.depsMet(sv.services["local"]); !ok {
		t.Fatalf("a service without wait_for_network waits: %s", why)
	}
	close(online)
	select {
	case <-ch:
	default:
		t.Fatal("the channel returned to wait on did not close when the network came online")
	}
	if ok, why, _ := sv.depsMet(sv.services["net"]); !ok {
		t.Fatalf("after online: %s", why)
	}
}

func TestParseNotify(t *testing.T) {
	m := parseNotify([]byte("READY=1\nSTATUS=serving 3 clients\nbogus\nMAINPID=4"))
	if !m.Ready || m.Status != "serving 3 clients" || !m.HasState {
		t.Errorf("%+v", m)
	}
	if m := parseNotify([]byte("READY=0")); m.Ready {
		t.Error("READY=0 is not ready")
	}
}

func FuzzParseNotify(f *testing.F) {
	f.Add([]byte("READY=1\nSTATUS=x"))
	f.Add([]byte("STATUS=\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := parseNotify(b)
		if len(m.Status) > 256*3 {
			t.Fatalf("status of %d bytes", len(m.Status))
		}
	})
}

// writeLayout writes a minimal baked layout with one image.
func writeLayout(t *testing.T, dir string, ref, rootfs string, cfg string) {
	t.Helper()
	blob := func(b []byte) string {
		h := sha256Hex(b)
		p := filepath.Join(dir, "blobs", "sha256", h)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	cd := blob([]byte(cfg))
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)}, "layers": []any{}})
	md := blob(man)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{map[string]any{
		"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(man),
		"annotations": map[string]string{AnnotationRef: ref, AnnotationRootfs: rootfs}}}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBakedResolve(t *testing.T) {
	dir := t.TempDir()
	writeLayout(t, dir, "go://./x", "rootfs/abc", `{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/x"],"Env":["A=1"],"User":"65534","StopSignal":"SIGINT"}}`)
	img, err := Baked{Dir: dir}.Resolve("go://./x")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.Lowerdirs, []string{filepath.Join(dir, "rootfs/abc")}) || img.Config.User != "65534" || img.Config.StopSignal != "SIGINT" || img.Config.Entrypoint[0] != "/x" {
		t.Errorf("%+v", img)
	}
	if _, err := (Baked{Dir: dir}).Resolve("other"); err == nil || !strings.Contains(err.Error(), "no image \"other\"") {
		t.Errorf("err = %v", err)
	}
	for _, bad := range []string{"", "/abs", "../up", "a/../../b", "a,b", "a:b"} {
		d := t.TempDir()
		writeLayout(t, d, "r", bad, `{}`)
		if _, err := (Baked{Dir: d}).Resolve("r"); err == nil {
			t.Errorf("rootfs %q accepted", bad)
		}
	}
	d := t.TempDir()
	writeLayout(t, d, "r", "ok", `{"config":{"Env":["NOEQUALS"]}}`)
	if _, err := (Baked{Dir: d}).Resolve("r"); err == nil || !strings.Contains(err.Error(), "Env[0]") {
		t.Errorf("err = %v", err)
	}
}

func FuzzFindInIndex(f *testing.F) {
	f.Add([]byte(`{"manifests":[{"digest":"sha256:00","annotations":{"org.opencontainers.image.ref.name":"r","dev.cairn.rootfs":"x"}}]}`), "r")
	f.Add([]byte(`{"manifests":null}`), "")
	f.Add([]byte(`[`), "r")
	f.Fuzz(func(t *testing.T, raw []byte, ref string) {
		d, err := findInIndex(raw, ref)
		if err != nil {
			return
		}
		if d.Annotations[AnnotationRef] != ref {
			t.Fatalf("found %q for %q", d.Annotations[AnnotationRef], ref)
		}
		if dir, err := rootfsDir(d.Annotations[AnnotationRootfs]); err == nil && (filepath.IsAbs(dir) || strings.HasPrefix(filepath.Clean(dir), "..")) {
			t.Fatalf("rootfs %q escapes", dir)
		}
	})
}

func FuzzParseImageConfig(f *testing.F) {
	f.Add([]byte(`{"config":{"Cmd":["/a"],"Env":["A=1"]}}`))
	f.Add([]byte(`{"config":{"Env":["="]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseImageConfig(raw)
		if err != nil {
			return
		}
		for _, e := range c.Env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				t.Fatalf("env %q accepted", e)
			}
		}
	})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
