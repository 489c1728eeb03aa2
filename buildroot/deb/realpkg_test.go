// The real-package test lives in package deb_test: it gets the .deb through
// internal/testenv, which imports buildroot, which imports this package.
package deb_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/buildroot"
	"cairn.dev/cairn/buildroot/deb"
	"cairn.dev/cairn/internal/testenv"
)

// TestExtractRealPackage extracts the pinned systemd-boot-efi .deb and
// compares the tree with dpkg-deb -x.
func TestExtractRealPackage(t *testing.T) {
	pkg := testenv.DebPath(t, buildroot.SystemdBootPackage)
	f, err := os.Open(pkg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dest := t.TempDir()
	if _, err := deb.Extract(context.Background(), f, dest, deb.Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dest, "usr/lib/systemd/boot/efi/systemd-bootx64.efi"))
	if err != nil || fi.Size() < 50_000 {
		t.Fatalf("systemd-bootx64.efi: %v %v", fi, err)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed; skipping comparison")
	}
	ref := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", pkg, ref).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v: %s", err, out)
	}
	got, want := deb.Tree(t, dest), deb.Tree(t, ref)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree differs from dpkg-deb -x:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
