// Package testhost holds the checks that host tests share: whether they run
// as root, and where Debian's static busybox is. Outside CI a missing
// precondition skips the test; in CI (CI=true), where the Makefile installs
// everything and tests run as root, it fails it.
package testhost

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
