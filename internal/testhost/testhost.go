// Package testhost holds the checks that host tests share: whether they run
// as root, and where Debian's static busybox is. Outside CI a missing
// precondition skips the test; in CI (CI=true), where the Makefile installs
// everything and tests run as root, it fails it.
package testhost

import (
	"debug/elf"
	"os"
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
