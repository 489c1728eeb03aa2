package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/runtime/logs"
)

func TestMain(m *testing.M) {
	MaybeStage()
	code := m.Run()
	if probeOnce.path != "" {
		_ = os.RemoveAll(filepath.Dir(probeOnce.path))
	}
	os.Exit(code)
}

const probeSrc = `package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

func errno(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(syscall.Errno); ok {
		switch e {
		case syscall.EPERM:
			return "EPERM"
		case syscall.ENOSYS:
			return "ENOSYS"
		case syscall.EACCES:
			return "EACCES"
		}
	}
	return err.Error()
}

func main() {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp"} {
			if strings.HasPrefix(l, k+":") {
				fmt.Printf("%s=%s\n", k, strings.TrimSpace(strings.TrimPrefix(l, k+":")))
			}
		}
	}
	fmt.Printf("uid=%d gid=%d pid=%d\n", os.Getuid(), os.Getgid(), os.Getpid())
	fmt.Printf("unshare=%s\n", errno(syscall.Unshare(syscall.CLONE_NEWUTS)))
	fmt.Printf("mount=%s\n", errno(syscall.Mount("none", "/tmp", "tmpfs", 0, "")))
	_, _, e := syscall.RawSyscall(250 /* keyctl */, 0 /* KEYCTL_GET_KEYRING_ID */, ^uintptr(2) /* -3 session */, 0)
	var kerr error
	if e != 0 {
		kerr = e
	}
	fmt.Printf("keyctl=%s\n", errno(kerr))
	_, _, e = syscall.RawSyscall(syscall.SYS_PERSONALITY, 0xffffffff, 0, 0)
	kerr = nil
	if e != 0 {
		kerr = e
	}
	fmt.Printf("personality=%s\n", errno(kerr))
	fmt.Printf("sethostname=%s\n", errno(syscall.Sethostname([]byte("x"))))
}
`

// buildProbe compiles the static probe once per test binary run.
var probeOnce struct {
	sync.Once
	path string
	err  error
}

func probe(t *testing.T) string {
	t.Helper()
	probeOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-probe-")
		if err != nil {
			probeOnce.err = err
			return
		}
		_ = os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module probe\n\ngo 1.22\n"), 0o644)
		_ = os.WriteFile(filepath.Join(dir, "main.go"), []byte(probeSrc), 0o644)
		cmd := exec.Command("go", "build", "-o", "probe", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			probeOnce.err = fmt.Errorf("build probe: %v\n%s", err, out)
			return
		}
		probeOnce.path = filepath.Join(dir, "probe")
	})
	if probeOnce.err != nil {
		t.Fatal(probeOnce.err)
	}
	return probeOnce.path
}

// makeRootfs builds a busybox rootfs with /etc/passwd and /etc/group.
func makeRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	testhost.BusyboxRoot(t, root, "sh", "true", "false", "echo", "cat", "ls", "sleep", "id", "hostname", "ps", "touch", "pwd", "env", "kill", "mkdir")
	for _, d := range []string{"home/app", "root", "secret"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(root, "home/app"), 1000, 1000); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

type harness struct {
	t  *testing.T
	rt *Runtime
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	testhost.Root(t)
	rt, err := New(Options{Root: t.TempDir(), CgroupParent: "cairn-test-" + strconv.Itoa(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		list, _ := rt.List(ctx)
		for _, s := range list {
			_ = rt.Delete(ctx, s.ID, true)
		}
		if rt.cgroupRoot != "" {
			_ = os.Remove(filepath.Join(rt.cgroupRoot, rt.opts.CgroupParent))
		}
	})
	return &harness{t: t, rt: rt}
}

var idSeq struct {
	sync.Mutex
	n int
}

func newID(t *testing.T) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("t%d-%d", os.Getpid(), idSeq.n)
}

// run creates, starts and waits for a container; it returns exit status,
// stdout and stderr.
func (h *harness) run(spec *specs.Spec) (ExitStatus, string, string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := newID(h.t)
	lg, err := logs.New(logs.Options{RingLines: 10000})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.rt.Create(ctx, id, spec, CreateOptions{IO: IO{Stdout: lg.Writer(logs.Stdout), Stderr: lg.Writer(logs.Stderr)}}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.rt.Start(ctx, id); err != nil {
		h.t.Fatal(err)
	}
	exit, err := h.rt.Wait(ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.rt.Delete(ctx, id, false); err != nil {
		h.t.Fatal(err)
	}
	_ = lg.Close()
	var out, errOut strings.Builder
	for _, e := range lg.Tail(0) {
		b := &out
		if e.Stream == logs.Stderr {
			b = &errOut
		}
		b.Write(e.Line)
		if !e.Partial {
			b.WriteByte('\n')
		}
	}
	return exit, out.String(), errOut.String()
}

func TestExitCodes(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"true"}, 0},
		{[]string{"false"}, 1},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"/bin/sh", "-c", "exit 255"}, 255},
	} {
		exit, _, stderr := h.run(DefaultSpec(root, tc.args...))
		if exit.Code != tc.code || exit.Signal != 0 {
			t.Errorf("%v: exit %+v want %d (stderr %q)", tc.args, exit, tc.code, stderr)
		}
	}
}

func TestCreateErrors(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()
	err := h.rt.Create(ctx, newID(t), DefaultSpec(root, "no-such-binary"), CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing binary: err = %v", err)
	}
	spec := DefaultSpec(root, "true")
	spec.Process.User.Username = "ghost"
	if err := h.rt.Create(ctx, newID(t), spec, CreateOptions{}); err == nil {
		t.Fatal("unknown user accepted")
	}
	id := newID(t)
	if err := h.rt.Create(ctx, id, DefaultSpec(root, "true"), CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.Create(ctx, id, DefaultSpec(root, "true"), CreateOptions{}); !errors.Is(err, ErrExist) {
		t.Fatalf("duplicate id: err = %v", err)
	}
	if err := h.rt.Delete(ctx, id, false); err == nil {
		t.Fatal("deleting a created container without force succeeded")
	}
	if err := h.rt.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := h.rt.State(ctx, id); !errors.Is(err, ErrNotExist) {
		t.Fatalf("state after delete: %v", err)
	}
	// Failed creates leave nothing behind.
	if list, _ := h.rt.List(ctx); len(list) != 0 {
		t.Fatalf("leftover containers: %v", list)
	}
}

func TestEnvCwdHostname(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	spec := DefaultSpec(root, "sh", "-c", `echo "$FOO|$HOME"; pwd; hostname`)
	spec.Process.Env = append(spec.Process.Env, "FOO=bar baz")
	spec.Process.Cwd = "/tmp"
	spec.Hostname = "box1"
	exit, out, stderr := h.run(spec)
	if exit.Code != 0 || out != "bar baz|/root\n/tmp\nbox1\n" {
		t.Fatalf("exit %+v out %q stderr %q", exit, out, stderr)
	}
}

func TestUserFromPasswd(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	spec := DefaultSpec(root, "sh", "-c", `id -u; id -g; id -G; echo $HOME; touch /secret/x 2>&1 || echo denied`)
	spec.Process.User.Username = "app"
	exit, out, _ := h.run(spec)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if exit.Code != 0 || len(lines) < 5 || lines[0] != "1000" || lines[1] != "1000" || !slices.Contains(strings.Fields(lines[2]), "2000") ||
		lines[3] != "/home/app" || lines[len(lines)-1] != "denied" {
		t.Fatalf("exit %+v out %q", exit, out)
	}
}

func TestMountsAndReadonlyRoot(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	data, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "in"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := DefaultSpec(root, "sh", "-c", `echo hi > /data/f && cat /ro/in && (touch /ro/x 2>/dev/null && echo ro-writable || echo ro-ok) &&
(touch /newfile 2>/dev/null && echo root-writable || echo root-ok) && touch /scratch/y && echo tmpfs-ok && cat /etc/hostname.host`)
	spec.Root.Readonly = true
	hostFile := filepath.Join(t.TempDir(), "hostname")
	if err := os.WriteFile(hostFile, []byte("file-bind\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/ro", Type: "bind", Source: ro, Options: []string{"bind", "ro", "nosuid", "nodev"}},
		specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m", "mode=1777"}},
		specs.Mount{Destination: "/etc/hostname.host", Type: "bind", Source: hostFile, Options: []string{"bind", "ro"}},
	)
	// /etc/hostname.host does not exist in the read-only rootfs: the
	// runtime creates the mount point before the root turns read-only.
	exit, out, stderr := h.run(spec)
	want := "from host\nro-ok\nroot-ok\ntmpfs-ok\nfile-bind\n"
	if exit.Code != 0 || out != want {
		t.Fatalf("exit %+v out %q want %q stderr %q", exit, out, want, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(data, "f")); err != nil || string(b) != "hi\n" {
		t.Fatalf("bind write: %q %v", b, err)
	}
}

func TestMaskedAndReadonlyPaths(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	spec := DefaultSpec(root, "sh", "-c", `
wc=$(cat /proc/kcore 2>/dev/null | busybox wc -c); echo kcore=$wc
echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable || echo sysrq-ro
echo 1 > /proc/sys/kernel/shmmni 2>/dev/null && echo sys-writable || echo sys-ro
ls /sys/firmware | busybox wc -l
echo 0 > /sys/kernel/mm/ksm/run 2>/dev/null && echo sysfs-writable || echo sysfs-ro`)
	exit, out, stderr := h.run(spec)
	want := "kcore=0\nsysrq-ro\nsys-ro\n0\nsysfs-ro\n"
	if exit.Code != 0 || out != want {
		t.Fatalf("exit %+v out %q want %q stderr %q", exit, out, want, stderr)
	}
}

func parseKV(out string) map[string]string {
	kv := map[string]string{}
	for _, f := range strings.Fields(out) {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

func TestSeccompAndCapabilities(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	pb, err := os.ReadFile(probe(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/probe"), pb, 0o755); err != nil {
		t.Fatal(err)
	}
	const docker = "00000000a00425fb" // Docker's default set without CAP_MKNOD (bit 27)
	for _, tc := range []struct {
		name string
		user string
		eff  string
	}{
		{"root", "", docker},
		{"app", "app", "0000000000000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := DefaultSpec(root, "/bin/probe")
			spec.Process.User.Username = tc.user
			exit, out, stderr := h.run(spec)
			kv := parseKV(out)
			if exit.Code != 0 {
				t.Fatalf("exit %+v stderr %q", exit, stderr)
			}
			want := map[string]string{
				"CapEff": tc.eff, "CapBnd": docker, "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2",
				// keyctl needs no capability: EPERM here is seccomp's.
				"keyctl": "EPERM", "unshare": "EPERM", "mount": "EPERM", "sethostname": "EPERM", "personality": "ok", "pid": "1",
			}
			for k, v := range want {
				if kv[k] != v {
					t.Errorf("%s = %q want %q (output %q)", k, kv[k], v, out)
				}
			}
		})
	}
	// Without the seccomp profile, keyctl works and unshare is refused by
	// the missing CAP_SYS_ADMIN alone: capabilities stay dropped.
	spec := DefaultSpec(root, "/bin/probe")
	spec.Linux.Seccomp = nil
	_, out, _ := h.run(spec)
	kv := parseKV(out)
	if kv["Seccomp"] != "0" || kv["keyctl"] != "ok" || kv["unshare"] != "EPERM" || kv["CapBnd"] != docker {
		t.Fatalf("without seccomp: %q", out)
	}
}

func TestPIDNamespace(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	exit, out, _ := h.run(DefaultSpec(root, "sh", "-c", "echo $$; ls /proc; ps -o pid"))
	if exit.Code != 0 {
		t.Fatalf("exit %+v", exit)
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	if len(pids) == 0 || pids[0] != 1 || pids[len(pids)-1] > 10 {
		t.Fatalf("container sees pids %v (output %q)", pids, out)
	}
	if strings.Contains(out, "\n"+strconv.Itoa(os.Getpid())+"\n") {
		t.Fatalf("host pid %d visible: %q", os.Getpid(), out)
	}
}

func TestRlimitsAndSysctl(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	spec := DefaultSpec(root, "sh", "-c", "ulimit -n; cat /proc/sys/kernel/msgmax")
	spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456}}
	spec.Linux.Sysctl = map[string]string{"kernel.msgmax": "12345"}
	exit, out, stderr := h.run(spec)
	if exit.Code != 0 || out != "123\n12345\n" {
		t.Fatalf("exit %+v out %q stderr %q", exit, out, stderr)
	}
}

// waitOutput polls the log ring for a line.
func waitOutput(t *testing.T, lg *logs.Log, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range lg.Tail(0) {
			if string(e.Line) == line {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %q in output", line)
}

func (h *harness) start(spec *specs.Spec) (string, *logs.Log) {
	h.t.Helper()
	ctx := context.Background()
	id := newID(h.t)
	lg, err := logs.New(logs.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = lg.Close() })
	if err := h.rt.Create(ctx, id, spec, CreateOptions{IO: IO{Stdout: lg.Writer(logs.Stdout), Stderr: lg.Writer(logs.Stderr)}}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.rt.Start(ctx, id); err != nil {
		h.t.Fatal(err)
	}
	return id, lg
}

func TestSignals(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()

	id, lg := h.start(DefaultSpec(root, "sh", "-c", `trap "exit 42" USR1; echo ready; while true; do sleep 0.05; done`))
	waitOutput(t, lg, "ready")
	if err := h.rt.Signal(ctx, id, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if exit, err := h.rt.Wait(ctx, id); err != nil || exit.Code != 42 {
		t.Fatalf("trap: exit %+v err %v", exit, err)
	}
	if err := h.rt.Signal(ctx, id, syscall.SIGUSR1); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("signal after exit: %v", err)
	}

	id, _ = h.start(DefaultSpec(root, "sleep", "100"))
	if err := h.rt.Signal(ctx, id, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if exit, err := h.rt.Wait(ctx, id); err != nil || exit.Code != 137 || exit.Signal != 9 {
		t.Fatalf("SIGKILL: exit %+v err %v", exit, err)
	}
}

func TestStopGraceThenKill(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()

	// sleep as PID 1 of its namespace has no SIGTERM handler, so the
	// kernel ignores SIGTERM: Stop must fall back to SIGKILL.
	id, _ := h.start(DefaultSpec(root, "sleep", "100"))
	t0 := time.Now()
	exit, err := h.rt.Stop(ctx, id, 300*time.Millisecond)
	d := time.Since(t0)
	if err != nil || exit.Code != 137 || d < 300*time.Millisecond || d > 5*time.Second {
		t.Fatalf("stop: exit %+v err %v after %v", exit, err, d)
	}

	id, lg := h.start(DefaultSpec(root, "sh", "-c", `trap "exit 3" TERM; echo ready; while true; do sleep 0.05; done`))
	waitOutput(t, lg, "ready")
	t0 = time.Now()
	exit, err = h.rt.Stop(ctx, id, 10*time.Second)
	if err != nil || exit.Code != 3 || time.Since(t0) > 5*time.Second {
		t.Fatalf("graceful stop: exit %+v err %v after %v", exit, err, time.Since(t0))
	}
	st, err := h.rt.State(ctx, id)
	if err != nil || st.Status != StatusStopped || st.Exit == nil || st.Exit.Code != 3 {
		t.Fatalf("state after stop: %+v %v", st, err)
	}
}

func TestCreateWaitsForStart(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()
	shared := t.TempDir()
	spec := DefaultSpec(root, "sh", "-c", "echo started > /shared/mark")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/shared", Type: "bind", Source: shared, Options: []string{"bind"}})
	id := newID(t)
	if err := h.rt.Create(ctx, id, spec, CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A second Runtime on the same root (another process, as the CLI is).
	other, err := New(Options{Root: h.rt.root, CgroupParent: h.rt.opts.CgroupParent})
	if err != nil {
		t.Fatal(err)
	}
	st, err := other.State(ctx, id)
	if err != nil || st.Status != StatusCreated || st.Pid <= 0 {
		t.Fatalf("state: %+v %v", st, err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(filepath.Join(shared, "mark")); !os.IsNotExist(err) {
		t.Fatalf("process ran before Start: %v", err)
	}
	if err := other.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := other.Start(ctx, id); err == nil {
		t.Fatal("second Start succeeded")
	}
	exit, err := h.rt.Wait(ctx, id)
	if err != nil || exit.Code != 0 {
		t.Fatalf("exit %+v %v", exit, err)
	}
	// The other Runtime sees the persisted exit status.
	if exit2, err := other.Wait(ctx, id); err != nil || exit2.Code != 0 {
		t.Fatalf("other wait: %+v %v", exit2, err)
	}
	if b, err := os.ReadFile(filepath.Join(shared, "mark")); err != nil || string(b) != "started\n" {
		t.Fatalf("mark: %q %v", b, err)
	}
	if err := other.Delete(ctx, id, false); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentContainers(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx := context.Background()
			id := newID(t)
			if err := h.rt.Create(ctx, id, DefaultSpec(root, "sh", "-c", "exit "+strconv.Itoa(i)), CreateOptions{}); err != nil {
				errs <- err
				return
			}
			if err := h.rt.Start(ctx, id); err != nil {
				errs <- err
				return
			}
			exit, err := h.rt.Wait(ctx, id)
			if err == nil && exit.Code != i {
				err = fmt.Errorf("container %d exited %d", i, exit.Code)
			}
			if err == nil {
				err = h.rt.Delete(ctx, id, false)
			}
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCgroupPlacement(t *testing.T) {
	h := newHarness(t)
	if h.rt.cgroupRoot == "" {
		t.Skip("no cgroup2 hierarchy")
	}
	root := makeRootfs(t)
	ctx := context.Background()
	id, lg := h.start(DefaultSpec(root, "sh", "-c", "cat /proc/self/cgroup; echo ready; sleep 100"))
	waitOutput(t, lg, "ready")
	st, err := h.rt.State(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	procs, err := os.ReadFile(filepath.Join(st.CgroupRoot, st.CgroupPath, "cgroup.procs"))
	if err != nil || !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(st.Pid)) {
		t.Fatalf("pid %d not in cgroup: %q %v", st.Pid, procs, err)
	}
	// cgroup namespace: the container sees itself at the root.
	found := false
	for _, e := range lg.Tail(0) {
		if string(e.Line) == "0::/" {
			found = true
		}
	}
	if !found {
		t.Errorf("cgroup namespace: /proc/self/cgroup = %v", lg.Tail(0))
	}
	if _, err := h.rt.Stats(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.Delete(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(st.CgroupRoot, st.CgroupPath)); !os.IsNotExist(err) {
		t.Fatalf("cgroup left behind: %v", err)
	}
}

func TestResourcesWithoutController(t *testing.T) {
	h := newHarness(t)
	if h.rt.cgroupRoot == "" {
		t.Skip("no cgroup2 hierarchy")
	}
	ctls, _ := os.ReadFile(filepath.Join(h.rt.cgroupRoot, "cgroup.controllers"))
	if strings.Contains(string(ctls), "pids") {
		t.Skip("pids controller available: this test is for hosts without it (the guest's limits test is still to be written)")
	}
	root := makeRootfs(t)
	spec := DefaultSpec(root, "true")
	limit := int64(10)
	spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}
	err := h.rt.Create(context.Background(), newID(t), spec, CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("pids limit on a hybrid host: err = %v", err)
	}
}

// TestMeasureStartToExit is a measurement, not a timed test: it runs only
// with CAIRN_MEASURE=N and logs median and p95 of create+start+wait+delete
// of busybox true with the full default isolation.
func TestMeasureStartToExit(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CAIRN_MEASURE"))
	if n <= 0 {
		t.Skip("set CAIRN_MEASURE=N to measure")
	}
	h := newHarness(t)
	root := makeRootfs(t)
	ctx := context.Background()
	var ds []time.Duration
	for i := 0; i < n+1; i++ {
		id := newID(t)
		t0 := time.Now()
		if err := h.rt.Create(ctx, id, DefaultSpec(root, "/bin/true"), CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := h.rt.Wait(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := h.rt.Delete(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		if i > 0 { // warm-up not counted
			ds = append(ds, time.Since(t0))
		}
	}
	slices.Sort(ds)
	t.Logf("start->exit busybox true, n=%d: min %v median %v p95 %v max %v", n, ds[0], ds[len(ds)/2], ds[len(ds)*95/100], ds[len(ds)-1])
}
