//go:build linux

package supervise

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cairn.dev/cairn/init/reap"
	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/network"
	"cairn.dev/cairn/runtime/rundir"
)

func TestMain(m *testing.M) {
	container.MaybeStage()
	os.Exit(m.Run())
}

type fixedImage struct{ dir string }

func (f fixedImage) Resolve(ref string) (*Image, error) {
	return &Image{Ref: ref, Lowerdirs: []string{f.dir}}, nil
}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) add(s string) { l.mu.Lock(); l.l = append(l.l, s); l.mu.Unlock() }
func (l *lines) wait(t *testing.T, sub string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		all := strings.Join(l.l, "\n")
		l.mu.Unlock()
		if strings.Contains(all, sub) {
			return
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Fatalf("no line with %q in:\n%s", sub, strings.Join(l.l, "\n"))
}

// TestSupervisorHost runs real containers (network "none", no cgroups) from
// a busybox root: a crash loop with backoff, a service_completed_successfully
// dependency, a restart request, and StopAll.
func TestSupervisorHost(t *testing.T) {
	testhost.Root(t)
	root := t.TempDir()
	rootfs := filepath.Join(root, "img")
	testhost.BusyboxRoot(t, rootfs, "sh", "sleep", "true", "false")
	rt, err := container.New(container.Options{Root: filepath.Join(root, "rt"), NoCgroups: os.Getenv("SUPERVISE_CGROUP") == "", CgroupRoot: os.Getenv("SUPERVISE_CGROUP"), CgroupParent: "cairn-supervise-test"})
	if err != nil {
		t.Fatal(err)
	}
	var out lines
	reaper := reap.New()
	rctx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go reaper.Loop(rctx)
	sv := New(Options{
		Reaper: reaper,
		Services: map[string]schema.Service{
			"crash": {Image: "x", Command: []string{"/bin/false"}, NetworkMode: "none", RestartRaw: "on-failure:2"},
			"once":  {Image: "x", Command: []string{"/bin/true"}, NetworkMode: "none"},
			"db": {Image: "x", Command: []string{"/bin/sleep", "300"}, NetworkMode: "none", StopGracePeriod: schema.Duration(time.Second),
				Healthcheck: &schema.Healthcheck{Exec: []string{"/bin/true"}, Interval: schema.Duration(50 * time.Millisecond)}},
			"bad": {Image: "x", Command: []string{"/bin/sleep", "300"}, NetworkMode: "none", StopGracePeriod: schema.Duration(time.Second),
				Healthcheck: &schema.Healthcheck{Exec: []string{"/bin/false"}, Interval: schema.Duration(50 * time.Millisecond), Retries: 2}},
			"app": {Image: "x", Command: []string{"/bin/sleep", "300"}, NetworkMode: "none", RestartRaw: "always",
				DependsOn: schema.DependsOn{"once": {Condition: schema.ConditionCompleted}, "db": {Condition: schema.ConditionHealthy}}, StopGracePeriod: schema.Duration(time.Second)},
		},
		Runtime: rt, Images: fixedImage{rootfs}, StateDir: filepath.Join(root, "svc"), LogDir: filepath.Join(root, "log"),
		VolumesDir: filepath.Join(root, "vol"), NotifyDir: filepath.Join(root, "notify"),
		Console: out.add, Logf: func(f string, a ...any) { t.Logf(f, a...) },
	})
	ctx := context.Background()
	if os.Getenv("SUPERVISE_NET") != "" {
		// Bridge networking in a private network namespace.
		ns := filepath.Join(root, "hostns")
		if err := rundir.NewNetNS(ns); err != nil {
			t.Fatal(err)
		}
		defer rundir.UnmountAll(ns)
		m, err := network.New(network.Config{StateDir: filepath.Join(root, "net"), NetNSPath: ns, ResolvConfPaths: []string{"/nonexistent"}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		sv.SetNetwork(m)
		for name, s := range sv.services {
			s.def.NetworkMode = ""
			sv.services[name] = s
		}
	}
	sv.Run(ctx)
	out.wait(t, "service crash: exited with code 1, restarting in 200ms (restart 1)")
	out.wait(t, "service crash: exited with code 1, restarting in 400ms (restart 2)")
	out.wait(t, "service crash: failed with code 1")
	out.wait(t, "service once: exited with code 0")
	out.wait(t, "service db: healthy")
	out.wait(t, "service bad: unhealthy (exec check [\"/bin/false\"]: exit code 1)")
	out.wait(t, "service app: running (pid ")
	st, _ := sv.Service("app")
	if st.State != StateRunning || st.PID <= 0 {
		t.Fatalf("app: %+v", st)
	}
	if err := sv.Restart(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	out.wait(t, "service app: restarting on request")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if st, _ = sv.Service("app"); st.State == StateRunning && st.Restarts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app after restart: %+v", st)
		}
	}
	// A killed process is restarted by the policy, with backoff.
	if err := sv.Kill(ctx, "app", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out.wait(t, "service app: exited with code 137 (signal killed), restarting in 200ms (restart 2)")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if st, _ = sv.Service("app"); st.State == StateRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app after kill: %+v", st)
		}
	}
	sv.StopAll(ctx)
	out.wait(t, "service app: stopped")
	out.wait(t, "service db: stopped")
	// Reverse dependency order: app (which depends on db) stops first.
	out.mu.Lock()
	all := strings.Join(out.l, "\n")
	out.mu.Unlock()
	if strings.Index(all, "service app: stopped") > strings.Index(all, "service db: stopped") {
		t.Errorf("db stopped before its dependant app:\n%s", all)
	}
	if st, _ = sv.Service("app"); st.State != StateStopped {
		t.Fatalf("app after StopAll: %+v", st)
	}
}

// TestDialInNetNS: a dial from a fresh network namespace (loopback down)
// cannot reach a listener of the test's namespace, and afterwards the
// test's own dials still work (the thread's namespace was restored or the
// thread discarded).
func TestDialInNetNS(t *testing.T) {
	testhost.Root(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ns := filepath.Join(t.TempDir(), "ns")
	if err := rundir.NewNetNS(ns); err != nil {
		t.Fatal(err)
	}
	defer rundir.UnmountAll(ns)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		if c, err := dialInNetNSPath(ctx, ns, "tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Fatal("reached the host namespace's listener from a fresh namespace")
		}
		// Own namespace: /proc/self is the main thread's, which NewNetNS
		// must not have left in the new namespace.
		c, err := dialInNetNSPath(ctx, "/proc/self/ns/net", "tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial in own namespace: %v", err)
		}
		c.Close()
		c, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("plain dial after namespace switches: %v", err)
		}
		c.Close()
	}
}
