// Package testhost holds the checks that host tests share: whether they run
// as root, and where Debian's static busybox is. Outside CI a missing
// precondition skips the test; in CI (CI=true), where the Makefile installs
// everything and tests run as root, it fails it.
package testhost

import (
	"bufio"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// unavailable skips t, or fails it in CI.
func unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (required in CI)")
	}
	t.Skip(why)
}

// Root skips (fails in CI) unless the test runs as root.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "needs root")
	}
}

// Busybox returns the path of Debian's busybox-static: a static ELF (no
// PT_INTERP), so that it runs in an empty root.
func Busybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return p
		}
	}
	unavailable(t, "busybox-static not installed (apt-get install busybox-static)")
	return ""
}

// BuildGuest builds the full cairn-init (static) into dir and returns its
// path. Callers build it once per test binary and remove dir afterwards.
func BuildGuest(dir string) (string, error) {
	out := filepath.Join(dir, "cairn-init")
	cmd := exec.Command("go", "build", "-o", out, "cairn.dev/cairn/cmd/cairn-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cairn-init: %v\n%s", err, b)
	}
	return out, nil
}

// BusyboxRoot fills dir with a minimal root: the usual top directories,
// Debian's static busybox as /bin/busybox and a /bin link to it for each
// applet.
func BusyboxRoot(t testing.TB, dir string, applets ...string) {
	t.Helper()
	data, err := os.ReadFile(Busybox(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "dev", "sys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, app := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
}

// Guest is the full cairn-init, built once per test binary into a
// temporary directory, with a symlink to it under each of Links. Declare
// one per package and call Main from TestMain to remove it afterwards.
type Guest struct {
	Links []string

	once sync.Once
	dir  string
	err  error
}

// Dir builds the guest on first use and returns the directory holding
// cairn-init and its links.
func (g *Guest) Dir(t testing.TB) string {
	t.Helper()
	g.once.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-guest-test-")
		if err != nil {
			g.err = err
			return
		}
		g.dir = dir
		if _, g.err = BuildGuest(dir); g.err != nil {
			return
		}
		for _, l := range g.Links {
			if g.err = os.Symlink("cairn-init", filepath.Join(dir, l)); g.err != nil {
				return
			}
		}
	})
	if g.err != nil {
		t.Fatal(g.err)
	}
	return g.dir
}

// Main runs the tests, removes the guest if it was built and exits.
func (g *Guest) Main(m *testing.M) {
	code := m.Run()
	if g.dir != "" {
		_ = os.RemoveAll(g.dir)
	}
	os.Exit(code)
}

// PtyLines reads lines from a pty master, without their trailing \r,
// until it closes.
func PtyLines(master io.Reader) <-chan string {
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(master)
		for sc.Scan() {
			lines <- strings.TrimRight(sc.Text(), "\r")
		}
		close(lines)
	}()
	return lines
}

// ReadUntil consumes lines until one equals want; it fails t if they end
// first or none comes within 20 seconds.
func ReadUntil(t testing.TB, lines <-chan string, want string) {
	t.Helper()
	var seen []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("pty closed before %q; saw %q", want, seen)
			}
			if l == want {
				return
			}
			seen = append(seen, l)
		case <-timeout:
			t.Fatalf("no %q on the pty; saw %q", want, seen)
		}
	}
}
