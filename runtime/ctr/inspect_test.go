package ctr

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestImagesPullJSON checks the JSON contract that PID 1 reads from
// "images pull --json --if-missing" and "images inspect --json": the
// config fields, the lowerdirs (topmost first, existing), and that
// --if-missing does not touch the registry when the store has the image.
func TestImagesPullJSON(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	var manifestGets atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			manifestGets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	base, err := random.Image(64, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	cfg.Entrypoint = []string{"/srv"}
	cfg.Cmd = []string{"-listen", ":8080"}
	cfg.Env = []string{"PATH=/bin", "A=b"}
	cfg.User = "65534:65534"
	cfg.WorkingDir = "/data"
	cfg.StopSignal = "SIGINT"
	img, err := mutate.Config(base, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref := host + "/test/app:v1"
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	run := func(args ...string) ImageInfo {
		t.Helper()
		var out, errb bytes.Buffer
		code := imagesMain(context.Background(), append([]string{"--root", root}, args...), stdio{strings.NewReader(""), &out, &errb})
		if code != 0 {
			t.Fatalf("images %v: exit %d: %s", args, code, errb.String())
		}
		if n := strings.Count(out.String(), "\n"); n != 1 {
			t.Fatalf("images %v printed %d lines, want one: %q", args, n, out.String())
		}
		var info ImageInfo
		dec := json.NewDecoder(&out)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&info); err != nil {
			t.Fatalf("images %v: %v", args, err)
		}
		return info
	}

	info := run("pull", "--json", "--if-missing", ref)
	if !info.Pulled || info.Digest != want.String() || info.Name != r.Name() {
		t.Errorf("first pull: pulled %v digest %s name %s; want true %s %s", info.Pulled, info.Digest, info.Name, want, r.Name())
	}
	wantCfg := ImageInfoConfig{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, User: cfg.User, WorkingDir: cfg.WorkingDir, StopSignal: cfg.StopSignal}
	if got, _ := json.Marshal(info.Config); string(got) != mustJSON(t, wantCfg) {
		t.Errorf("config = %s, want %s", got, mustJSON(t, wantCfg))
	}
	if len(info.Lowerdirs) != 2 {
		t.Fatalf("lowerdirs = %v, want 2", info.Lowerdirs)
	}
	// Topmost first: the last layer's snapshot comes first.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	top, err := layers[1].DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Lowerdirs[0], top.Hex) {
		t.Errorf("lowerdirs[0] = %s, want the snapshot of the top layer %s", info.Lowerdirs[0], top)
	}
	for _, d := range info.Lowerdirs {
		if !filepath.IsAbs(d) || !strings.HasPrefix(d, root) {
			t.Errorf("lowerdir %q is not an absolute path in the store %s", d, root)
		}
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Errorf("lowerdir %s: %v", d, err)
		}
	}
	gets := manifestGets.Load()

	again := run("pull", "--json", "--if-missing", ref)
	if again.Pulled || manifestGets.Load() != gets {
		t.Errorf("pull --if-missing of a stored image: pulled %v, manifest GETs %d -> %d; want no registry access", again.Pulled, gets, manifestGets.Load())
	}
	if again.Digest != info.Digest || !slices.Equal(again.Lowerdirs, info.Lowerdirs) {
		t.Errorf("second pull = %+v, want %+v", again, info)
	}
	always := run("pull", "--json", ref)
	if !always.Pulled || manifestGets.Load() == gets {
		t.Errorf("pull --json without --if-missing: pulled %v, manifest GETs %d -> %d; want a registry access", always.Pulled, gets, manifestGets.Load())
	}
	insp := run("inspect", "--json", ref)
	if insp.Pulled || insp.Digest != info.Digest || !slices.Equal(insp.Lowerdirs, info.Lowerdirs) {
		t.Errorf("inspect = %+v, want %+v", insp, info)
	}

	var out, errb bytes.Buffer
	if code := imagesMain(context.Background(), []string{"--root", root, "inspect", "--json", host + "/test/other:v1"}, stdio{nil, &out, &errb}); code == 0 || !strings.Contains(errb.String(), "not found") {
		t.Errorf("inspect of an unknown image: exit %d, stderr %q; want a failure saying not found", code, errb.String())
	}
	if code := imagesMain(context.Background(), []string{"--root", root, "ls", "--json"}, stdio{nil, &out, &errb}); code == 0 {
		t.Errorf("ls --json: exit 0, want a usage error")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
