package ociruntime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/runtime/cgroup"
)

func TestMain(m *testing.M) { guest.Main(m) }

// guest is the real guest binary, built once per test run, linked as
// cairn-runtime.
var guest = testhost.Guest{Links: []string{"cairn-runtime"}}

func runtimeBinary(t *testing.T) string {
	t.Helper()
	return filepath.Join(guest.Dir(t), "cairn-runtime")
}

// makeRootfs builds a busybox rootfs in dir.
func makeRootfs(t *testing.T, dir string) {
	t.Helper()
	testhost.BusyboxRoot(t, dir, "sh", "true", "false", "echo", "sleep", "cat")
	if err := os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// env is a cairn-runtime driven like a higher-level tool drives runc.
type env struct {
	t      *testing.T
	bin    string
	root   string
	parent string // cgroup parent
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testhost.Root(t)
	e := &env{t: t, bin: runtimeBinary(t), root: t.TempDir(), parent: "cairn-ocitest-" + strconv.Itoa(os.Getpid())}
	// Like containerd-shim and conmon: become the subreaper that inherits
	// containers after "create" exits, and reap them (reapPid).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		out, _ := e.cmd("list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = e.cmd("delete", "--force", id).Run()
		}
		if root, err := cgroup.Detect("/proc/self/mountinfo"); err == nil {
			_ = os.Remove(filepath.Join(root, e.parent))
		}
		for {
			if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); err != nil {
				break
			}
		}
	})
	return e
}

func (e *env) cmd(args ...string) *exec.Cmd {
	all := append([]string{"--root", e.root, "--cgroup-parent", e.parent}, args...)
	return exec.Command(e.bin, all...)
}

// run runs the CLI and returns its exit code, stdout and stderr.
func (e *env) run(args ...string) (int, string, string) {
	e.t.Helper()
	cmd := e.cmd(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("%v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// detached runs a command whose container outlives it (create, run -d)
// with its output in a file: the container inherits the CLI's stdio, so a
// pipe would stay open until the container exits.
func (e *env) detached(args ...string) ([]byte, error) {
	f, err := os.CreateTemp(e.t.TempDir(), "out")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := e.cmd(args...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return out, err
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.run(args...)
	if code != 0 {
		e.t.Fatalf("cairn-runtime %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (e *env) state(id string) stateJSON {
	e.t.Helper()
	var st stateJSON
	if err := json.Unmarshal([]byte(e.mustRun("state", id)), &st); err != nil {
		e.t.Fatalf("state %s: %v", id, err)
	}
	return st
}

// bundle makes a bundle with `spec` and sets the process args.
func (e *env) bundle(args ...string) string {
	e.t.Helper()
	dir := e.t.TempDir()
	makeRootfs(e.t, filepath.Join(dir, "rootfs"))
	e.mustRun("spec", "--bundle", dir)
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		e.t.Fatal(err)
	}
	spec.Process.Args = args
	if b, err = json.Marshal(&spec); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// reapPid waits (as the subreaper) for pid and returns its wait status.
func reapPid(t *testing.T, pid int) unix.WaitStatus {
	t.Helper()
	var ws unix.WaitStatus
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil {
			t.Fatalf("wait4 %d: %v", pid, err)
		}
		if got == pid {
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not exit", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLifecycle(t *testing.T) {
	e := newEnv(t)
	bundle := e.bundle("sh", "-c", "trap 'echo got-term; exit 3' TERM; echo started; while :; do sleep 0.1; done")
	if code, _, errOut := e.run("spec", "--bundle", bundle); code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("spec over an existing config.json: exit %d, %q", code, errOut)
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	outFile := filepath.Join(t.TempDir(), "out")
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	id := "life-" + strconv.Itoa(os.Getpid())
	create := e.cmd("create", "--bundle", bundle, "--pid-file", pidFile, id)
	create.Stdout, create.Stderr = out, out // the container inherits them, as with conmon
	if err := create.Run(); err != nil {
		b, _ := os.ReadFile(outFile)
		t.Fatalf("create: %v: %s", err, b)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil || pid <= 0 {
		t.Fatalf("pid file %q", b)
	}
	st := e.state(id)
	if st.Status != "created" || st.Pid != pid || st.ID != id || st.Bundle != bundle || st.Version == "" {
		t.Fatalf("state after create: %+v (pid file %d)", st, pid)
	}
	if ppid := parentOf(t, pid); ppid != os.Getpid() {
		t.Fatalf("container's parent is %d, want the subreaper %d", ppid, os.Getpid())
	}
	e.mustRun("start", id)
	if st := e.state(id); st.Status != "running" || st.Pid != pid {
		t.Fatalf("state after start: %+v", st)
	}
	if code, _, errOut := e.run("start", id); code != 1 || !strings.Contains(errOut, "cannot start") {
		t.Fatalf("second start: exit %d %q", code, errOut)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(outFile); return strings.Contains(string(b), "started") })
	var list []stateJSON
	if err := json.Unmarshal([]byte(e.mustRun("list", "--format", "json")), &list); err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("list: %+v %v", list, err)
	}
	if tab := e.mustRun("list"); !strings.Contains(tab, id) || !strings.Contains(tab, "running") {
		t.Fatalf("list table: %q", tab)
	}
	e.mustRun("kill", id, "TERM")
	ws := reapPid(t, pid)
	if !ws.Exited() || ws.ExitStatus() != 3 {
		t.Fatalf("container ended with %v, want exit 3 from its TERM trap", ws)
	}
	if st := e.state(id); st.Status != "stopped" || st.Pid != 0 {
		t.Fatalf("state after kill: %+v", st)
	}
	if code, _, errOut := e.run("kill", id, "KILL"); code != 1 || !strings.Contains(errOut, "not running") {
		t.Fatalf("kill of a stopped container: exit %d %q", code, errOut)
	}
	cgRoot, _ := cgroup.Detect("/proc/self/mountinfo")
	e.mustRun("delete", id)
	if cgRoot != "" {
		if _, err := os.Stat(filepath.Join(cgRoot, e.parent, id)); !os.IsNotExist(err) {
			t.Fatalf("cgroup left after delete: %v", err)
		}
	}
	if code, _, errOut := e.run("state", id); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("state after delete: exit %d %q", code, errOut)
	}
	if b, _ := os.ReadFile(outFile); !strings.Contains(string(b), "got-term") {
		t.Fatalf("container output %q", b)
	}
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("timed out")
}

func TestRunExitCode(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"true"}, 0, ""},
		{[]string{"sh", "-c", "echo hello; exit 7"}, 7, "hello\n"},
		{[]string{"sh", "-c", "exit 255"}, 255, ""},
	} {
		bundle := e.bundle(tc.args...)
		id := fmt.Sprintf("run-%d", os.Getpid())
		code, out, errOut := e.run("run", "--bundle", bundle, id)
		if code != tc.code || out != tc.out {
			t.Errorf("run %q: exit %d out %q (stderr %q), want %d %q", tc.args, code, out, errOut, tc.code, tc.out)
		}
		if code, _, _ := e.run("state", id); code != 1 {
			t.Errorf("run %q left the container behind", tc.args)
		}
	}
	// Detached run: the container outlives the CLI.
	bundle := e.bundle("sleep", "30")
	id := fmt.Sprintf("detached-%d", os.Getpid())
	pidFile := filepath.Join(t.TempDir(), "pid")
	// stdio on /dev/null: the container keeps what it inherits.
	if out, err := e.detached("run", "-d", "--pid-file", pidFile, "--bundle", bundle, id); err != nil {
		t.Fatalf("run -d: %v %s", err, out)
	}
	if st := e.state(id); st.Status != "running" {
		t.Fatalf("detached run: %+v", st)
	}
	e.mustRun("delete", "--force", id)
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(string(b))
	if ws := reapPid(t, pid); !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("delete --force: container ended with %v", ws)
	}
}

func TestConcurrentCreate(t *testing.T) {
	e := newEnv(t)
	bundle := e.bundle("sleep", "30")
	const n = 5
	pids := make([]int, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := fmt.Sprintf("par-%d-%d", os.Getpid(), i)
			pidFile := filepath.Join(bundle, "pid"+strconv.Itoa(i))
			if out, err := e.detached("create", "--bundle", bundle, "--pid-file", pidFile, id); err != nil {
				errs <- fmt.Errorf("create %s: %v: %s", id, err, out)
				return
			}
			b, _ := os.ReadFile(pidFile)
			pids[i], _ = strconv.Atoi(string(b))
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var list []stateJSON
	if err := json.Unmarshal([]byte(e.mustRun("list", "-f", "json")), &list); err != nil || len(list) != n {
		t.Fatalf("list after %d creates: %d containers (%v)", n, len(list), err)
	}
	seen := map[int]bool{}
	for _, st := range list {
		if st.Status != "created" || seen[st.Pid] {
			t.Errorf("state %+v", st)
		}
		seen[st.Pid] = true
	}
	// Concurrent deletes too.
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_ = e.cmd("delete", "--force", fmt.Sprintf("par-%d-%d", os.Getpid(), i)).Run()
		}(i)
	}
	wg.Wait()
	for _, pid := range pids {
		if pid > 0 {
			reapPid(t, pid)
		}
	}
	if out := e.mustRun("list", "-q"); out != "" {
		t.Fatalf("left after delete: %q", out)
	}
}

func TestErrors(t *testing.T) {
	e := newEnv(t)
	logFile := filepath.Join(t.TempDir(), "log.json")
	code, _, errOut := e.run("--log", logFile, "--log-format", "json", "state", "nope")
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("state of unknown id: exit %d %q", code, errOut)
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var entry struct{ Level, Msg, Time string }
	if err := json.Unmarshal(b, &entry); err != nil || entry.Level != "error" || !strings.Contains(entry.Msg, "does not exist") || entry.Time == "" {
		t.Fatalf("log file %q: %v", b, err)
	}
	for _, args := range [][]string{{"start", "nope"}, {"kill", "nope"}, {"delete", "nope"}, {"state", "../etc"}, {"frobnicate"}, {"--systemd-cgroup", "state", "x"}} {
		if code, _, errOut := e.run(args...); code != 1 || errOut == "" {
			t.Errorf("%q: exit %d stderr %q", args, code, errOut)
		}
	}
	if code, _, _ := e.run("delete", "--force", "nope"); code != 0 {
		t.Errorf("delete --force of a missing container: exit %d (runc: 0)", code)
	}
	bundle := e.bundle("sleep", "30")
	id := "dup-" + strconv.Itoa(os.Getpid())
	pidFile := filepath.Join(t.TempDir(), "pid")
	if out, err := e.detached("create", "--bundle", bundle, "--pid-file", pidFile, id); err != nil {
		t.Fatalf("create: %v %s", err, out)
	}
	if code, _, errOut := e.run("create", "--bundle", bundle, id); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate create: exit %d %q", code, errOut)
	}
	if code, _, errOut := e.run("delete", id); code != 1 || !strings.Contains(errOut, "without force") {
		t.Fatalf("delete of a created container: exit %d %q", code, errOut)
	}
	e.mustRun("delete", "--force", id)
	b, _ = os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(string(b))
	reapPid(t, pid)
	if code, _, errOut := e.run("create", "--bundle", bundle, "--console-socket", "/nonexistent/x.sock", "tty1"); code != 1 || !strings.Contains(errOut, "console socket") {
		t.Fatalf("console socket: exit %d %q", code, errOut)
	}
	// Hostile bundle: rootfs escaping the bundle.
	cfgPath := filepath.Join(bundle, "config.json")
	cfg, _ := os.ReadFile(cfgPath)
	if err := os.WriteFile(cfgPath, bytes.Replace(cfg, []byte(`"path":"rootfs"`), []byte(`"path":"../../.."`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := e.run("create", "--bundle", bundle, "evil"); code != 1 || !strings.Contains(errOut, "escapes the bundle") {
		t.Fatalf("escaping rootfs: exit %d %q", code, errOut)
	}
	if out := e.mustRun("list", "-q"); out != "" {
		t.Fatalf("failed creates left containers: %q", out)
	}
}

func TestVersion(t *testing.T) {
	testhost.Root(t)
	out, err := exec.Command(runtimeBinary(t), "--version").Output()
	if err != nil || !strings.Contains(string(out), "cairn-runtime version") || !strings.Contains(string(out), "spec: "+specs.Version) {
		t.Fatalf("--version: %q %v", out, err)
	}
}

// TestPodman drives cairn-runtime through podman + conmon (--network none:
// podman never touches the host's network; vfs storage and cgroupfs in temp
// dirs). The pids limit and rlimits are set so that the test also runs on
// hosts with hybrid cgroups and a low hard RLIMIT_NOFILE.
func TestPodman(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("podman not installed (apt-get install podman)")
		}
		t.Skip("podman not installed")
	}
	e := newEnv(t)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	makeRootfs(t, rootfs)
	tmp := t.TempDir()
	base := []string{"--root", filepath.Join(tmp, "storage"), "--runroot", filepath.Join(tmp, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none", "--runtime", e.bin}
	pm := func(args ...string) *exec.Cmd {
		cmd := exec.Command(podman, append(append([]string{}, base...), args...)...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF=/dev/null")
		return cmd
	}
	t.Cleanup(func() {
		_ = pm("rm", "-a", "-f").Run()
		_ = pm("rmi", "-a", "-f").Run()
		if root, err := cgroup.Detect("/proc/self/mountinfo"); err == nil {
			_ = os.Remove(filepath.Join(root, "libpod_parent")) // only if empty
		}
		// podman's cleanup process does not pass --runtime-flag, so the
		// runtime uses its default root; remove it if we left it empty.
		_ = os.Remove(DefaultRoot)
	})
	imp := pm("import", "-", "localhost/cairn-busybox:test")
	tarCmd := exec.Command("tar", "-C", rootfs, "-c", ".")
	tarOut, err := tarCmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = tarOut
	if err := tarCmd.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	_ = tarCmd.Wait()
	run := pm("run", "--rm", "--network", "none", "--pids-limit", "0", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"localhost/cairn-busybox:test", "sh", "-c", "echo hello from podman; exit 3")
	var out, errOut bytes.Buffer
	run.Stdout, run.Stderr = &out, &errOut
	err = run.Run()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 || out.String() != "hello from podman\n" {
		t.Fatalf("podman run: %v, stdout %q, stderr %q", err, out.String(), errOut.String())
	}
	if out, err := pm("run", "--rm", "--network", "none", "--pids-limit", "0", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
		"localhost/cairn-busybox:test", "true").CombinedOutput(); err != nil {
		t.Fatalf("podman run true: %v\n%s", err, out)
	}
}
