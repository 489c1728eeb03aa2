package container

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
)

// consolePair returns the runtime's end of a console socket and a channel
// that delivers the pty master received on the other end.
func consolePair(t *testing.T) (*os.File, <-chan *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "console-recv"), os.NewFile(uintptr(fds[1]), "console-send")
	t.Cleanup(func() { ours.Close(); theirs.Close() })
	ch := make(chan *os.File, 1)
	go func() {
		master, name, err := RecvConsole(ours)
		if err != nil || !strings.HasPrefix(name, "/dev/pts/") {
			t.Errorf("RecvConsole: %q %v", name, err)
			close(ch)
			return
		}
		ch <- master
	}()
	return theirs, ch
}

// talk writes input to the pty master and reads lines until one equals want.
func talk(t *testing.T, master *os.File, input, want string) {
	t.Helper()
	defer master.Close()
	if input != "" {
		if _, err := master.WriteString(input); err != nil {
			t.Fatal(err)
		}
	}
	testhost.ReadUntil(t, testhost.PtyLines(master), want)
}

func TestTerminal(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	spec := DefaultSpec(root, "sh", "-c", `[ -t 0 ] && [ -t 1 ] && echo tty-ok; read line; echo "got:$line"; exec sleep 100`)
	spec.Process.Terminal = true
	spec.Process.ConsoleSize = &specs.Box{Height: 30, Width: 100}
	sock, masterc := consolePair(t)
	id := newID(t)
	if err := h.rt.Create(ctx, id, spec, CreateOptions{IO: IO{ConsoleSocket: sock}}); err != nil {
		t.Fatal(err)
	}
	master := <-masterc
	if master == nil {
		t.FailNow()
	}
	ws, err := unix.IoctlGetWinsize(int(master.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row != 30 || ws.Col != 100 {
		t.Fatalf("console size %+v %v", ws, err)
	}
	if err := h.rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	talk(t, master, "hello\n", "got:hello")

	// exec with a terminal of its own.
	sock2, masterc2 := consolePair(t)
	proc, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"sh", "-c", `[ -t 0 ] && echo exec-tty-ok; exit 4`}, Terminal: true}, IO{ConsoleSocket: sock2})
	if err != nil {
		t.Fatal(err)
	}
	if m := <-masterc2; m != nil {
		talk(t, m, "", "exec-tty-ok")
	}
	if exit, err := proc.Wait(ctx); err != nil || exit.Code != 4 {
		t.Fatalf("exec with terminal: %+v %v", exit, err)
	}

	// A terminal needs a socket, and a socket a terminal.
	if err := h.rt.Create(ctx, newID(t), spec, CreateOptions{}); err == nil || !strings.Contains(err.Error(), "console socket") {
		t.Fatalf("terminal without socket: %v", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock3 := os.NewFile(uintptr(fds[0]), "s3")
	defer sock3.Close()
	defer unix.Close(fds[1])
	if _, err := h.rt.Exec(ctx, id, &specs.Process{Args: []string{"true"}}, IO{ConsoleSocket: sock3}); err == nil || !strings.Contains(err.Error(), "terminal is false") {
		t.Fatalf("socket without terminal: %v", err)
	}
}
