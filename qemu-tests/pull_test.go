package qemutests

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"cairn.dev/cairn/qemu"
	"cairn.dev/cairn/qemu-tests/harness"
)

// pullRegistry is where the pull scenario's registry listens; the guest
// reaches it as 10.0.2.2:28419 (testdata/pull.yaml).
const pullRegistry = "127.0.0.1:28419"

// TestRunTimePull boots an image whose service's registry image is not
// baked in (pull_policy missing): PID 1 has the tool binary pull it from a
// registry served on the host, then runs it; the test fetches its page
// through a forwarded port.
func TestRunTimePull(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	var manifestGets atomic.Int32
	serveRegistry(t, &manifestGets)
	pushHelloWeb(t, pullRegistry+"/cairn/pulled:v1")
	img := images.Build(t, "testdata/pull.yaml")
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, Mem: "512M",
		Ports: []qemu.PortForward{{Host: 18094, Guest: 8080}}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", vm.Console().Log())
		}
	})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	ready := time.Now()
	vm.Expect(t, "cairn: service app: pulling 10.0.2.2:28419/cairn/pulled:v1 (pull_policy missing)", bootTimeout)
	vm.Expect(t, "cairn: service app: pulled 10.0.2.2:28419/cairn/pulled:v1", bootTimeout)
	vm.Expect(t, "cairn: service app: running (pid ", bootTimeout)
	t.Logf("READY to the pulled service running: %v (host clock; %d manifest GETs)", time.Since(ready).Round(time.Millisecond), manifestGets.Load())
	for _, l := range strings.Split(vm.Console().Log(), "\n") {
		if strings.Contains(l, "service app: ") || strings.Contains(l, "CAIRN-READY") {
			t.Logf("console: %s", strings.TrimSpace(l))
		}
	}
	if manifestGets.Load() == 0 {
		t.Error("the registry served no manifest: the image did not come from it")
	}
	if body := getPage(t, vm, "http://127.0.0.1:18094/"); !strings.HasPrefix(body, "pulled from ") {
		t.Errorf("page = %q, want the pulled image's greeting %q", body, "pulled from ...")
	}
	vm.Powerdown(t)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
}

// serveRegistry serves go-containerregistry's in-memory registry on
// pullRegistry and counts the manifest GETs.
func serveRegistry(t *testing.T, gets *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", pullRegistry)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			gets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// pushHelloWeb builds os/examples/hello-web statically into a one-layer
// image (entrypoint /hello-web, GREETING=pulled) and pushes it to ref.
func pushHelloWeb(t *testing.T, ref string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hello-web")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./os/examples/hello-web")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hello-web: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "hello-web", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/hello-web"}, Env: []string{"GREETING=pulled"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}
