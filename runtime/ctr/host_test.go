package ctr

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/runtime/cgroup"
)

func TestMain(m *testing.M) { guest.Main(m) }

var guest testhost.Guest

// binary builds the real cairn-init once per test run.
func binary(t *testing.T) string {
	t.Helper()
	return filepath.Join(guest.Dir(t), "cairn-init")
}

// busyboxLayout writes an OCI layout with one busybox image named ref.
func busyboxLayout(t *testing.T, ref string) string {
	t.Helper()
	bb, err := os.ReadFile(testhost.Busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "www/", "home/", "home/app/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755}, bb)
	for _, app := range []string{"sh", "true", "echo", "id", "sleep", "touch", "cat", "httpd", "hostname"} {
		add(&tar.Header{Name: "bin/" + app, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"))
	add(&tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("root:x:0:\napp:x:1000:\n"))
	add(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("hello from cairn\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Cmd = []string{"sh", "-c", "echo default-cmd"}
	cfg.Config.Env = []string{"PATH=/bin", "FROM_IMAGE=yes"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hostNS is a private network namespace playing the host (bridge, nftables).
type hostNS struct {
	h    netns.NsHandle
	path string
}

func newHostNS(t *testing.T) *hostNS {
	t.Helper()
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread is discarded
		h, err := netns.New()
		c <- res{h, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.h.Close() })
	nh, err := netlink.NewHandleAt(r.h)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err == nil {
		err = nh.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &hostNS{h: r.h, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(r.h))}
}

// httpGet fetches url's body from inside the namespace.
func (ns *hostNS) httpGet(addr string) (string, error) {
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread is discarded
		if err := netns.Set(ns.h); err != nil {
			c <- res{err: err}
			return
		}
		conn, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			c <- res{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
		b, err := io.ReadAll(conn)
		c <- res{string(b), err}
	}()
	r := <-c
	return r.s, r.err
}

type env struct {
	t      *testing.T
	bin    string
	images string
	global []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testhost.Root(t)
	dir := t.TempDir()
	host := newHostNS(t)
	parent := "cairn-ctrtest-" + strconv.Itoa(os.Getpid())
	e := &env{t: t, bin: binary(t), images: filepath.Join(dir, "images")}
	root := filepath.Join(dir, "containers")
	e.global = []string{"--root", root, "--images", e.images, "--net-state", filepath.Join(dir, "net"), "--host-netns", host.path, "--cgroup-parent", parent}
	t.Cleanup(func() {
		ents, _ := os.ReadDir(root)
		for _, ent := range ents {
			if !strings.HasPrefix(ent.Name(), ".") {
				_, _, _ = e.run("ctr", "rm", "-f", ent.Name())
			}
		}
		// Nothing may stay mounted below the test's directories.
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
				t.Errorf("left mounted: %s", f[4])
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
		if cg, err := cgroup.Detect("/proc/self/mountinfo"); err == nil {
			_ = os.Remove(filepath.Join(cg, parent))
		}
	})
	return e
}

func (e *env) run(args ...string) (int, string, string) {
	e.t.Helper()
	if args[0] == "ctr" {
		args = append(append([]string{"ctr"}, e.global...), args[1:]...)
	} else {
		args = append([]string{"images", "--root", e.images, "--containers", e.global[1]}, args[1:]...)
	}
	cmd := exec.Command(e.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	if code != 0 {
		e.t.Fatalf("%q: exit %d: %s", args, code, errOut)
	}
	return out
}

const testImage = "cairn.test/busybox:1"

func TestImagesAndRun(t *testing.T) {
	e := newEnv(t)
	dir := busyboxLayout(t, testImage)
	if out := e.mustRun("images", "load", dir); !strings.Contains(out, testImage) {
		t.Fatalf("load: %q", out)
	}
	if out := e.mustRun("images", "ls"); !strings.Contains(out, testImage) || !strings.Contains(out, "sha256:") || !strings.Contains(out, "MiB") {
		t.Fatalf("ls: %q", out)
	}
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--net", "none", testImage}, 0, "default-cmd\n", ""},
		{[]string{"--net", "none", testImage, "--", "sh", "-c", "echo out; echo err >&2; exit 5"}, 5, "out\n", "err\n"},
		{[]string{"--net", "none", "-e", "FOO=bar", "--user", "app", testImage, "sh", "-c", "echo $FOO $FROM_IMAGE $(id -u) $HOME"}, 0, "bar yes 1000 /home/app\n", ""},
		{[]string{"--net", "none", "--read-only", testImage, "sh", "-c", "touch /x 2>/dev/null || echo ro"}, 0, "ro\n", ""},
		{[]string{"--net", "host", testImage, "sh", "-c", "cat /etc/hostname"}, 0, "", ""}, // checked below
		{[]string{"--net", "bridge", "--name", "named", testImage, "sh", "-c", "hostname; grep -c named /etc/hosts"}, 0, "named\n1\n", ""},
	} {
		args := append([]string{"ctr", "run", "--rm"}, tc.args...)
		code, out, errOut := e.run(args...)
		if tc.args[1] == "host" {
			if code != 0 || strings.TrimSpace(out) == "" {
				t.Errorf("%q: exit %d out %q err %q", tc.args, code, out, errOut)
			}
			continue
		}
		if code != tc.code || out != tc.stdout || errOut != tc.stderr {
			t.Errorf("%q: exit %d out %q err %q; want %d %q %q", tc.args, code, out, errOut, tc.code, tc.stdout, tc.stderr)
		}
	}
	if out := e.mustRun("ctr", "ps"); strings.Count(out, "\n") != 1 {
		t.Fatalf("--rm left containers: %q", out)
	}
	// Without --rm the container stays, with its logs and exit code.
	if code, _, _ := e.run("ctr", "run", "--net", "none", "--name", "kept", testImage, "sh", "-c", "echo kept-out; exit 4"); code != 4 {
		t.Fatalf("kept: exit %d", code)
	}
	if out := e.mustRun("ctr", "ps"); !strings.Contains(out, "kept") || !strings.Contains(out, "exited (4)") {
		t.Fatalf("ps: %q", out)
	}
	if out := e.mustRun("ctr", "logs", "kept"); out != "kept-out\n" {
		t.Fatalf("logs: %q", out)
	}
	if code, _, errOut := e.run("ctr", "run", "--name", "kept", testImage, "true"); code != exitSetup || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate name: exit %d %q", code, errOut)
	}
	if code, _, errOut := e.run("ctr", "run", "no.such/image:1", "true"); code != exitSetup || !strings.Contains(errOut, "not found") {
		t.Fatalf("unknown image: exit %d %q", code, errOut)
	}
	// gc keeps the image of a container even when its name is gone.
	e.mustRun("images", "rm", testImage)
	if out := e.mustRun("images", "gc"); !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("gc with a container using the image: %q", out)
	}
	e.mustRun("ctr", "rm", "kept")
	if out := e.mustRun("images", "gc"); strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("gc after rm: %q", out)
	}
}

func TestDetachedPublishedPort(t *testing.T) {
	e := newEnv(t)
	e.mustRun("images", "load", busyboxLayout(t, testImage))
	const hostPort = 18080
	out := e.mustRun("ctr", "run", "-d", "--name", "web", "-p", fmt.Sprintf("%d:80", hostPort), testImage, "--",
		"sh", "-c", "echo web-started; exec httpd -f -p 80 -h /www")
	if strings.TrimSpace(out) != "web" {
		t.Fatalf("run -d printed %q", out)
	}
	if ps := e.mustRun("ctr", "ps"); !strings.Contains(ps, "running") || !strings.Contains(ps, "18080->80/tcp") {
		t.Fatalf("ps: %q", ps)
	}
	host := e.global[7]
	ns, err := netns.GetFromPath(host)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h := &hostNS{h: ns, path: host}
	var body string
	for i := 0; i < 50; i++ {
		if body, err = h.httpGet(fmt.Sprintf("127.0.0.1:%d", hostPort)); err == nil && strings.Contains(body, "hello from cairn") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(body, "hello from cairn") {
		t.Fatalf("GET via published port on 127.0.0.1: %q %v", body, err)
	}
	if logs := e.mustRun("ctr", "logs", "web"); !strings.Contains(logs, "web-started") {
		t.Fatalf("logs: %q", logs)
	}
	if code, _, errOut := e.run("ctr", "rm", "web"); code != 1 || !strings.Contains(errOut, "running") {
		t.Fatalf("rm of a running container: exit %d %q", code, errOut)
	}
	e.mustRun("ctr", "stop", "-t", "1", "web")
	ps := e.mustRun("ctr", "ps")
	if !strings.Contains(ps, "exited") {
		t.Fatalf("ps after stop: %q", ps)
	}
	if _, err := h.httpGet(fmt.Sprintf("127.0.0.1:%d", hostPort)); err == nil {
		t.Fatal("port still answers after stop")
	}
	e.mustRun("ctr", "rm", "web")
	// A second detached container, removed with -f while it runs.
	e.mustRun("ctr", "run", "-d", "--name", "sleeper", "--net", "none", testImage, "sleep", "60")
	// $$ is a PID of the container's namespace (small), not the host's.
	if out := e.mustRun("ctr", "exec", "-e", "X=from-exec", "sleeper", "sh", "-c", "echo $X; echo $$"); !regexp.MustCompile(`^from-exec\n[0-9]\n$`).MatchString(out) {
		t.Fatalf("exec output %q", out)
	}
	if code, _, errOut := e.run("ctr", "exec", "sleeper", "sh", "-c", "exit 3"); code != 3 {
		t.Fatalf("exec exit code %d (%s)", code, errOut)
	}
	if code, _, errOut := e.run("ctr", "exec", "web", "true"); code != 125 || !strings.Contains(errOut, "web") {
		t.Fatalf("exec in a removed container: %d %q", code, errOut)
	}
	e.mustRun("ctr", "rm", "-f", "sleeper")
	if ps := e.mustRun("ctr", "ps"); strings.Count(ps, "\n") != 1 {
		t.Fatalf("ps after rm: %q", ps)
	}
}
