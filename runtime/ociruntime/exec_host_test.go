package ociruntime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestExec(t *testing.T) {
	e := newEnv(t)
	bundle := e.bundle("sleep", "100")
	id := "exec-" + strconv.Itoa(os.Getpid())
	if out, err := e.detached("run", "-d", "--bundle", bundle, id); err != nil {
		t.Fatalf("run -d: %v: %s", err, out)
	}
	code, out, errOut := e.run("exec", "-e", "X=one", "--cwd", "/tmp", id, "sh", "-c", `echo "$X $(pwd)"; cat /proc/1/cmdline; echo; exit 4`)
	if code != 4 || out != "one /tmp\nsleep\x00100\x00\n" {
		t.Fatalf("exec: exit %d out %q err %q", code, out, errOut)
	}

	// runc's --process form: a runtime-spec process JSON.
	pf := filepath.Join(t.TempDir(), "process.json")
	b, _ := json.Marshal(specs.Process{Args: []string{"sh", "-c", "echo from-file $Y"}, Env: []string{"Y=two"}, Cwd: "/"})
	if err := os.WriteFile(pf, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.mustRun("exec", "--process", pf, id); out != "from-file two\n" {
		t.Fatalf("exec --process: %q", out)
	}

	// Detached, with a pid file: the process runs on after exec returns.
	pidFile := filepath.Join(t.TempDir(), "pid")
	if out, err := e.detached("exec", "-d", "--pid-file", pidFile, id, "sleep", "7"); err != nil {
		t.Fatalf("exec -d: %v: %s", err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("pid file %q", b)
	}
	if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); string(cmdline) != "sleep\x007\x00" {
		t.Fatalf("detached exec process %d runs %q", pid, cmdline)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"exec", id}, "missing command"},
		{[]string{"exec", "-t", id, "sh"}, "needs a console socket"},
		{[]string{"exec", "--process", pf, id, "sh"}, "exclude each other"},
		{[]string{"exec", id, "no-such-program"}, "not found"},
		{[]string{"exec", "missing-" + id, "true"}, "does not exist"},
	} {
		if code, _, errOut := e.run(tc.args...); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d %q, want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}

	// The detached process was reparented to us (the subreaper): the
	// container's init only finishes exiting once every process of its
	// PID namespace has been reaped, as with runc.
	e.mustRun("kill", id, "KILL")
	if ws := reapPid(t, pid); !ws.Signaled() {
		t.Fatalf("detached exec process ended with %v, want killed with its container", ws)
	}
	waitFor(t, func() bool { return e.state(id).Status == "stopped" })
	if code, _, errOut := e.run("exec", id, "true"); code != 1 || !strings.Contains(errOut, "not running") {
		t.Fatalf("exec into a stopped container: exit %d %q", code, errOut)
	}
	e.mustRun("delete", id)
}
