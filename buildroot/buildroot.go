// Package buildroot provides Cairn's base artifacts (kernel, modules and
// systemd-boot binaries) from pinned Debian packages: fetched with apt,
// verified by sha256, cached, extracted once and indexed with a pure-Go
// depmod.
package buildroot

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"cairn.dev/cairn/buildroot/apt"
	"cairn.dev/cairn/buildroot/deb"
	"cairn.dev/cairn/buildroot/kmod"
)

// defaultLock is the repository's buildroot/debian.lock, built into the
// binary; Fetch uses it when Options.LockFile is empty.
//
//go:embed debian.lock
var defaultLock []byte

const (
	// DefaultFlavour is the kernel flavour used when Options.Flavour is empty.
	DefaultFlavour = "cloud-amd64"
	// KernelSeries is the kernel ABI series: packages are named
	// KernelSeries + <N> + "-" + flavour.
	KernelSeries = "linux-image-6.1.0-"
	// SystemdBootPackage carries systemd-bootx64.efi and linuxx64.efi.stub.
	SystemdBootPackage = "systemd-boot-efi"

	// extractVersion is bumped when the layout of an extraction (selected
	// paths, generated index files) changes, so stale cache entries are redone.
	extractVersion = "1"
	extractMarker  = ".cairn-extract"
)

// Options configures Fetch.
type Options struct {
	CacheDir string                           // default $XDG_CACHE_HOME/cairn or ~/.cache/cairn; .debs under CacheDir/debs, extracted under CacheDir/extract/<sha256>
	LockFile string                           // lock file path; empty means the copy of buildroot/debian.lock embedded at build time
	Flavour  string                           // kernel flavour, default "cloud-amd64" -> package linux-image-6.1.0-*-cloud-amd64
	Log      func(format string, args ...any) // warnings (fallback) go here; nil discards them

	// Runner runs apt-get/apt-cache; nil means the real tools. Tests set it.
	Runner apt.Runner
}

// Package records a Debian package a build used.
type Package struct {
	Name, Version, SHA256 string
	Fallback              bool
	Pinned                string // the pin as "name=version", if Fallback
}

// Artifacts are the extracted files a build needs.
type Artifacts struct {
	KernelRelease string // "6.1.0-56-cloud-amd64"
	Vmlinuz       string // path to extracted vmlinuz
	ModulesDir    string // path to extracted lib/modules/<release>, with modules.dep + modules.alias + modules.softdep generated (pure Go)
	SystemdBoot   string // path to systemd-bootx64.efi
	Stub          string // path to linuxx64.efi.stub
	Packages      []Package
}

// Fetch makes the pinned kernel and systemd-boot packages available and
// extracted in the cache. With a warm cache it runs no external command.
func Fetch(ctx context.Context, o Options) (*Artifacts, error) {
	if o.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("buildroot: no cache directory: %w", err)
		}
		o.CacheDir = filepath.Join(d, "cairn")
	}
	if o.Flavour == "" {
		o.Flavour = DefaultFlavour
	}
	if strings.ContainsAny(o.Flavour, "/ \t\n") {
		return nil, fmt.Errorf("buildroot: invalid flavour %q", o.Flavour)
	}
	var pins []apt.Pin
	var err error
	if o.LockFile == "" {
		pins, err = apt.ParseLock(bytes.NewReader(defaultLock))
	} else {
		pins, err = apt.ReadLock(o.LockFile)
	}
	if err != nil {
		return nil, fmt.Errorf("buildroot: %w", err)
	}

	fam := apt.Family{Prefix: KernelSeries, Suffix: "-" + o.Flavour}
	kreq := apt.Request{Family: &fam}
	var sreq apt.Request
	for _, p := range pins {
		if _, ok := fam.Match(p.Name); ok {
			if kreq.Pin.Name != "" {
				return nil, fmt.Errorf("buildroot: lock pins two %s<N>%s kernels (%s, %s)", fam.Prefix, fam.Suffix, kreq.Pin.Name, p.Name)
			}
			kreq.Pin = p
		}
		if p.Name == SystemdBootPackage {
			sreq.Pin = p
		}
	}
	if sreq.Pin.Name == "" {
		return nil, fmt.Errorf("buildroot: lock file has no %s entry", SystemdBootPackage)
	}

	f := &apt.Fetcher{Dir: filepath.Join(o.CacheDir, "debs"), Runner: o.Runner, Log: o.Log}
	kres, err := f.Fetch(ctx, kreq)
	if err != nil {
		return nil, fmt.Errorf("buildroot: kernel: %w", err)
	}
	sres, err := f.Fetch(ctx, sreq)
	if err != nil {
		return nil, fmt.Errorf("buildroot: %s: %w", SystemdBootPackage, err)
	}

	extractDir := filepath.Join(o.CacheDir, "extract")
	kdir, err := extractOnce(ctx, extractDir, kres, []string{"boot", "lib/modules", "usr/lib/modules"}, depmodAll)
	if err != nil {
		return nil, fmt.Errorf("buildroot: kernel: %w", err)
	}
	sdir, err := extractOnce(ctx, extractDir, sres, []string{"usr/lib/systemd/boot/efi"}, nil)
	if err != nil {
		return nil, fmt.Errorf("buildroot: %s: %w", SystemdBootPackage, err)
	}

	a := &Artifacts{
		SystemdBoot: filepath.Join(sdir, "usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
		Stub:        filepath.Join(sdir, "usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
		Packages:    []Package{toPackage(kres), toPackage(sres)},
	}
	a.ModulesDir, a.KernelRelease, err = findRelease(kdir)
	if err != nil {
		return nil, fmt.Errorf("buildroot: kernel %s: %w", kres.Name, err)
	}
	a.Vmlinuz = filepath.Join(kdir, "boot", "vmlinuz-"+a.KernelRelease)
	for _, p := range []string{a.Vmlinuz, a.SystemdBoot, a.Stub} {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("buildroot: expected file %s is missing from the extracted packages", p)
		}
	}
	return a, nil
}

func toPackage(r *apt.Result) Package {
	return Package{Name: r.Name, Version: r.Version, SHA256: r.SHA256, Fallback: r.Fallback, Pinned: r.Pinned}
}

// moduleRoots are where Debian kernel packages put lib/modules (before and
// after the /usr merge).
var moduleRoots = []string{"lib/modules", "usr/lib/modules"}

// findRelease returns the single lib/modules/<release> directory under root.
func findRelease(root string) (dir, release string, err error) {
	var found []string
	for _, mr := range moduleRoots {
		ents, err := os.ReadDir(filepath.Join(root, mr))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("listing modules: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() {
				found = append(found, filepath.Join(root, mr, e.Name()))
			}
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("want exactly one lib/modules/<release> directory, found %d", len(found))
	}
	return found[0], filepath.Base(found[0]), nil
}

// depmodAll generates the module index files of every release in root.
func depmodAll(ctx context.Context, root string) error {
	dir, _, err := findRelease(root)
	if err != nil {
		return err
	}
	return kmod.Depmod(ctx, dir)
}

// extractOnce extracts the .deb of r into extractDir/<sha256> unless a
// complete extraction of the current layout version is already there. The
// work happens in a temporary directory renamed into place, so a crash never
// leaves a partial extraction behind and concurrent builds are safe.
func extractOnce(ctx context.Context, extractDir string, r *apt.Result, include []string, post func(context.Context, string) error) (string, error) {
	final := filepath.Join(extractDir, r.SHA256)
	marker := filepath.Join(final, extractMarker)
	if b, err := os.ReadFile(marker); err == nil && string(b) == extractVersion {
		return final, nil
	}
	if err := os.MkdirAll(extractDir, 0o755); err != nil {
		return "", fmt.Errorf("creating extraction cache: %w", err)
	}
	// A directory without the current marker is stale or foreign: move it away.
	if _, err := os.Lstat(final); err == nil {
		old, err := os.MkdirTemp(extractDir, ".stale-")
		if err != nil {
			return "", fmt.Errorf("extraction cache: %w", err)
		}
		if err := os.Rename(final, filepath.Join(old, "x")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("moving stale extraction aside: %w", err)
		}
		_ = os.RemoveAll(old)
	}
	tmp, err := os.MkdirTemp(extractDir, "."+r.SHA256+".tmp-")
	if err != nil {
		return "", fmt.Errorf("extraction cache: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("extraction cache: %w", err)
	}
	fh, err := os.Open(r.Path)
	if err != nil {
		return "", fmt.Errorf("opening package: %w", err)
	}
	_, err = deb.Extract(ctx, fh, tmp, deb.Options{Include: include})
	fh.Close()
	if err != nil {
		return "", fmt.Errorf("extracting %s: %w", filepath.Base(r.Path), err)
	}
	if post != nil {
		if err := post(ctx, tmp); err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Base(r.Path), err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, extractMarker), []byte(extractVersion), 0o644); err != nil {
		return "", fmt.Errorf("extraction cache: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another build may have finished the same extraction first.
		if b, rerr := os.ReadFile(marker); rerr == nil && string(b) == extractVersion {
			return final, nil
		}
		return "", fmt.Errorf("extraction cache: %w", err)
	}
	return final, nil
}
