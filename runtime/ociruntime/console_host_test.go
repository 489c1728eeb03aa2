package ociruntime

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/runtime/container"
)

// consoleListener listens on a unix socket as conmon does and delivers
// each pty master it receives.
func consoleListener(t *testing.T) (string, <-chan *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *os.File, 4)
	go func() {
		for {
			conn, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			f, err := conn.File()
			conn.Close()
			if err != nil {
				return
			}
			master, name, err := container.RecvConsole(f)
			f.Close()
			if err != nil || !strings.HasPrefix(name, "/dev/pts/") {
				t.Errorf("receive console: %q %v", name, err)
				return
			}
			ch <- master
		}
	}()
	return path, ch
}

func TestConsoleSocket(t *testing.T) {
	e := newEnv(t)
	bundle := e.bundle("sh", "-c", `[ -t 0 ] && echo tty-ok; read l; echo "got:$l"; exec sleep 100`)
	cfgPath := filepath.Join(bundle, "config.json")
	b, _ := os.ReadFile(cfgPath)
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	spec.Process.Terminal = true
	b, _ = json.Marshal(&spec)
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sockPath, masters := consoleListener(t)
	id := "tty-" + strconv.Itoa(os.Getpid())
	if code, _, errOut := e.run("create", "--bundle", bundle, id); code != 1 || !strings.Contains(errOut, "console socket") {
		t.Fatalf("terminal without --console-socket: exit %d %q", code, errOut)
	}
	if out, err := e.detached("create", "--bundle", bundle, "--console-socket", sockPath, id); err != nil {
		t.Fatalf("create: %v: %s", err, out)
	}
	pid := e.state(id).Pid
	master := <-masters
	defer master.Close()
	lines := testhost.PtyLines(master)
	e.mustRun("start", id)
	testhost.ReadUntil(t, lines, "tty-ok")
	if _, err := master.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	testhost.ReadUntil(t, lines, "got:hello")

	pidFile := filepath.Join(t.TempDir(), "exec.pid")
	if out, err := e.detached("exec", "--tty", "--console-socket", sockPath, "-d", "--pid-file", pidFile, id, "sh", "-c", "[ -t 1 ] && echo exec-tty-ok; sleep 100"); err != nil {
		t.Fatalf("exec --tty: %v: %s", err, out)
	}
	m2 := <-masters
	defer m2.Close()
	testhost.ReadUntil(t, testhost.PtyLines(m2), "exec-tty-ok")

	b, _ = os.ReadFile(pidFile)
	execPid, _ := strconv.Atoi(string(b))
	e.mustRun("kill", id, "KILL")
	reapPid(t, execPid)
	reapPid(t, pid)
	e.mustRun("delete", id)
}
