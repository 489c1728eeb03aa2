// Package testenv gives tests the real build inputs (the pinned Debian kernel
// and systemd-boot) instead of files prepared by hand on one machine.
//
// Artifacts runs buildroot.Fetch with the default options: a warm cache
// (~/.cache/cairn, or $XDG_CACHE_HOME/cairn) costs a few milliseconds; a cold
// one is filled with apt-get download, verified against the lock file's
// sha256 and extracted once. Nothing is cached in memory. When the packages
// cannot be had (no apt-get, no network), tests fail under CI=true and skip
// with the reason elsewhere.
package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"cairn.dev/cairn/buildroot"
	"cairn.dev/cairn/buildroot/apt"
)

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Artifacts returns the extracted pinned kernel, modules and systemd-boot
// binaries, fetching them into the default cache first if needed.
func Artifacts(t testing.TB) *buildroot.Artifacts {
	t.Helper()
	a, err := buildroot.Fetch(t.Context(), buildroot.Options{Log: t.Logf})
	if err != nil {
		unavailable(t, "Debian build inputs unavailable: %v", err)
	}
	return a
}

// DebPath returns the cached, sha256-verified .deb of pkg, one of the
// packages Artifacts uses (buildroot.SystemdBootPackage or the kernel's
// linux-image-* package); it lives in CacheDir/debs as name_version_arch.deb.
func DebPath(t testing.TB, pkg string) string {
	t.Helper()
	a := Artifacts(t)
	for _, p := range a.Packages {
		if p.Name != pkg {
			continue
		}
		d, err := os.UserCacheDir() // as buildroot.Fetch with an empty Options.CacheDir
		if err != nil {
			t.Fatalf("no cache directory: %v", err)
		}
		// The package is in the cache now, so this only finds and re-verifies it.
		f := &apt.Fetcher{Dir: filepath.Join(d, "cairn", "debs"), Log: t.Logf}
		r, err := f.Fetch(t.Context(), apt.Request{Pin: apt.Pin{Name: p.Name, Version: p.Version, SHA256: p.SHA256}})
		if err != nil {
			unavailable(t, "cached %s=%s: %v", p.Name, p.Version, err)
		}
		return r.Path
	}
	var names []string
	for _, p := range a.Packages {
		names = append(names, p.Name)
	}
	t.Fatalf("testenv: %s is not one of the fetched packages %v", pkg, names)
	return ""
}
