//go:build linux

package supervise

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cairn.dev/cairn/init/reap"
	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/ctr"
)

// TestPullInfoContract feeds what the tool prints (runtime/ctr ImageInfo,
// marshalled by the tool's own type) to PID 1's parser.
func TestPullInfoContract(t *testing.T) {
	info := ctr.ImageInfo{Name: "10.0.2.2:5000/app:v1", Digest: "sha256:" + strings.Repeat("ab", 32), Pulled: true,
		Lowerdirs: []string{"/var/lib/cairn/images/snapshots/top/fs", "/var/lib/cairn/images/snapshots/base/fs"},
		Config: ctr.ImageInfoConfig{Entrypoint: []string{"/srv"}, Cmd: []string{"-x"}, Env: []string{"A=b"},
			User: "65534", WorkingDir: "/data", StopSignal: "SIGINT"}}
	raw, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	img, err := parsePullInfo(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := ImageConfig{Entrypoint: []string{"/srv"}, Cmd: []string{"-x"}, Env: []string{"A=b"}, User: "65534", WorkingDir: "/data", StopSignal: "SIGINT"}
	if !slices.Equal(img.Lowerdirs, info.Lowerdirs) || !slices.Equal(img.Config.Entrypoint, want.Entrypoint) ||
		!slices.Equal(img.Config.Cmd, want.Cmd) || !slices.Equal(img.Config.Env, want.Env) ||
		img.Config.User != want.User || img.Config.WorkingDir != want.WorkingDir || img.Config.StopSignal != want.StopSignal {
		t.Errorf("parsed %+v, want lowerdirs %v config %+v", img, info.Lowerdirs, want)
	}

	for name, bad := range map[string]string{
		"no layers":      `{"lowerdirs":[],"config":{}}`,
		"relative":       `{"lowerdirs":["snapshots/x/fs"]}`,
		"colon":          `{"lowerdirs":["/a:b"]}`,
		"unclean":        `{"lowerdirs":["/a/../b"]}`,
		"bad env":        `{"lowerdirs":["/a"],"config":{"Env":["NOEQUALS"]}}`,
		"not json":       `pulled ok`,
		"config not obj": `{"lowerdirs":["/a"],"config":"x"}`,
	} {
		if _, err := parsePullInfo([]byte(bad)); err == nil {
			t.Errorf("%s: parsePullInfo(%s) accepted it", name, bad)
		}
	}
	if img, err := parsePullInfo([]byte(`{"lowerdirs":["/a"]}`)); err != nil || len(img.Config.Cmd) != 0 {
		t.Errorf("no config: %+v, %v; want an empty config", img, err)
	}
}

// fakeTool writes a shell script standing in for /usr/bin/cairn-init.
func fakeTool(t *testing.T, body string) (bin, dir string) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "cairn-init")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

func TestToolPuller(t *testing.T) {
	bin, dir := fakeTool(t, `echo "$@" > "$(dirname "$0")/args"
echo "$DOCKER_CONFIG" > "$(dirname "$0")/env"
echo '{"name":"r","digest":"sha256:x","pulled":true,"lowerdirs":["/s/2/fs","/s/1/fs"],"config":{"Cmd":["/hello"]}}'
`)
	p := &ToolPuller{Binary: bin, Store: "/store", DockerConfig: "/creds", Reaper: reap.New()}
	for _, always := range []bool{false, true} {
		img, err := p.Pull(context.Background(), "10.0.2.2:5000/app:v1", always)
		if err != nil {
			t.Fatalf("always=%v: %v", always, err)
		}
		if !slices.Equal(img.Lowerdirs, []string{"/s/2/fs", "/s/1/fs"}) || !slices.Equal(img.Config.Cmd, []string{"/hello"}) || img.Ref != "10.0.2.2:5000/app:v1" {
			t.Errorf("always=%v: image %+v", always, img)
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		want := "images --root /store pull --json --if-missing -- 10.0.2.2:5000/app:v1\n"
		if always {
			want = "images --root /store pull --json -- 10.0.2.2:5000/app:v1\n"
		}
		if string(args) != want {
			t.Errorf("always=%v: args %q, want %q", always, args, want)
		}
		if env, _ := os.ReadFile(filepath.Join(dir, "env")); string(env) != "/creds\n" {
			t.Errorf("DOCKER_CONFIG = %q, want /creds", env)
		}
	}

	failing, _ := fakeTool(t, "echo 'cairn-init images: image: pull x: connection refused' >&2\nexit 1\n")
	p.Binary = failing
	if _, err := p.Pull(context.Background(), "x", false); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("failing tool: err %v, want its stderr", err)
	}
	garbage, _ := fakeTool(t, "echo pulled\n")
	p.Binary = garbage
	if _, err := p.Pull(context.Background(), "x", false); err == nil {
		t.Error("tool printing no JSON: no error")
	}
	hang, _ := fakeTool(t, "exec sleep 60\n")
	p.Binary, p.Timeout = hang, 50*time.Millisecond
	if _, err := p.Pull(context.Background(), "x", false); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging tool: err %v, want the attempt's deadline", err)
	}
	p.Binary = filepath.Join(dir, "absent")
	if _, err := p.Pull(context.Background(), "x", false); err == nil {
		t.Error("absent tool: no error")
	}
}

// fakePuller fails its first fails attempts.
type fakePuller struct {
	mu     sync.Mutex
	fails  int
	calls  []bool
	result *Image
}

func (f *fakePuller) Pull(ctx context.Context, ref string, always bool) (*Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, always)
	if len(f.calls) <= f.fails {
		return nil, errors.New("dial tcp 10.0.2.2:5000: connect: network is unreachable")
	}
	return f.result, nil
}

func TestPullImageRetries(t *testing.T) {
	fp := &fakePuller{fails: 2, result: &Image{Ref: "r", Lowerdirs: []string{"/l"}}}
	var mu sync.Mutex
	var lines []string
	def := schema.Service{Image: "10.0.2.2:5000/app:v1", PullPolicy: schema.PullAlways}
	sv := New(Options{Services: map[string]schema.Service{"app": def}, Puller: fp, PullBackoffMin: time.Millisecond,
		Console: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
	s := sv.services["app"]
	img, err := sv.pullImage(context.Background(), s, "service app", &s.def)
	if err != nil || img != fp.result {
		t.Fatalf("pullImage = %v, %v", img, err)
	}
	if !slices.Equal(fp.calls, []bool{true, true, true}) {
		t.Errorf("puller calls (always) = %v, want three attempts with always", fp.calls)
	}
	st, _ := sv.Service("app")
	// The API shows "pulling" and the last failure until the start.
	if st.State != StatePulling || !strings.Contains(st.Message, "network is unreachable; retrying in") {
		t.Errorf("status after the pull = %q %q, want %q with the last failure", st.State, st.Message, StatePulling)
	}
	mu.Lock()
	all := strings.Join(lines, "\n")
	mu.Unlock()
	for _, want := range []string{"service app: pulling 10.0.2.2:5000/app:v1 (pull_policy always)", "network is unreachable; retrying in", "(attempt 2)", "service app: pulled 10.0.2.2:5000/app:v1"} {
		if !strings.Contains(all, want) {
			t.Errorf("console lacks %q:\n%s", want, all)
		}
	}
	// A pull that never succeeds ends with the context.
	fp2 := &fakePuller{fails: 1 << 30}
	sv2 := New(Options{Services: map[string]schema.Service{"app": def}, Puller: fp2, PullBackoffMin: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			fp2.mu.Lock()
			n := len(fp2.calls)
			fp2.mu.Unlock()
			if n >= 3 {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := sv2.pullImage(ctx, sv2.services["app"], "service app", &def); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull: err %v, want context.Canceled", err)
	}
}
