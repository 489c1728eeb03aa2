package apt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Request asks for one package.
type Request struct {
	// Pin is the locked package; its Name may be empty when the lock has no
	// entry and only Family can be used.
	Pin Pin
	// Family, if set, is where to fall back to when the pinned version has
	// vanished from the archive (or nothing is pinned).
	Family *Family
}

// Result describes a fetched, verified .deb.
type Result struct {
	Path                  string // the .deb in the cache directory
	Name, Version, SHA256 string
	Fallback              bool   // the pin could not be used
	Pinned                string // "name=version" of the pin, when Fallback
}

// Fetcher fetches packages into a cache directory.
type Fetcher struct {
	Dir    string                        // cache directory for .deb files (created if missing)
	Runner Runner                        // nil means ExecRunner
	Log    func(format string, a ...any) // warnings; nil discards them
}

func (f *Fetcher) runner() Runner {
	if f.Runner == nil {
		return ExecRunner{}
	}
	return f.Runner
}

func (f *Fetcher) logf(format string, a ...any) {
	if f.Log != nil {
		f.Log(format, a...)
	}
}

// Fetch returns a cached or downloaded .deb for req. A cached file whose
// sha256 matches the pin is used without running apt at all. A download
// whose sha256 differs from the pin is an error (never a fallback). If the
// pinned version is gone from the archive, the newest family member (with
// req.Family) or the package's candidate version (without) is fetched instead, verified against the archive's SHA256,
// and a warning is logged.
func (f *Fetcher) Fetch(ctx context.Context, req Request) (*Result, error) {
	p := req.Pin
	if p.Name != "" {
		if res, err := f.cached(p.Name, p.Version, p.SHA256); err != nil || res != nil {
			return res, err
		}
		res, dlErr := f.download(ctx, p.Name, p.Version, p.SHA256)
		if dlErr == nil {
			return res, nil
		}
		if errors.Is(dlErr, ErrChecksum) {
			return nil, dlErr
		}
		recs, err := Show(ctx, f.runner(), p.Name, p.Version)
		if err != nil {
			return nil, fmt.Errorf("%w (and checking the archive: %v)", dlErr, err)
		}
		for _, r := range recs {
			if r.Version == p.Version {
				return nil, dlErr // still in the archive: a real download failure
			}
		}
		f.logf("warning: pinned %s=%s is no longer in the archive; falling back", p.Name, p.Version)
	} else if req.Family == nil {
		return nil, errors.New("apt: empty request")
	} else {
		f.logf("warning: no pin for %s<N>%s in the lock file; using the newest", req.Family.Prefix, req.Family.Suffix)
	}
	// A family falls back to its newest member (a kernel ABI that left the
	// archive is replaced by a newer ABI); a single package to its candidate.
	name := p.Name
	if req.Family != nil {
		var err error
		if name, err = Newest(ctx, f.runner(), *req.Family); err != nil {
			return nil, fmt.Errorf("apt: fallback for %s=%s: %w", p.Name, p.Version, err)
		}
	}
	res, err := f.fallback(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("apt: fallback for %s=%s: %w", p.Name, p.Version, err)
	}
	res.Fallback = true
	if p.Name != "" {
		res.Pinned = p.Name + "=" + p.Version
	}
	f.logf("warning: using %s=%s (sha256 %s) instead of the pin; update the lock file", res.Name, res.Version, res.SHA256)
	return res, nil
}

func (f *Fetcher) fallback(ctx context.Context, name string) (*Result, error) {
	r := f.runner()
	ver, err := Candidate(ctx, r, name)
	if err != nil {
		return nil, err
	}
	if ver == "" {
		return nil, fmt.Errorf("%s has no installable candidate version", name)
	}
	recs, err := Show(ctx, r, name, ver)
	if err != nil {
		return nil, err
	}
	var sum string
	for _, rec := range recs {
		if rec.Package == name && rec.Version == ver && rec.SHA256 != "" {
			sum = rec.SHA256
			break
		}
	}
	if sum == "" {
		return nil, fmt.Errorf("apt-cache show %s=%s gives no SHA256", name, ver)
	}
	if res, err := f.cached(name, ver, sum); err != nil || res != nil {
		return res, err
	}
	return f.download(ctx, name, ver, sum)
}

// debGlob is the file name pattern apt-get download uses: name_version_arch.deb,
// with an epoch's ":" written as "%3a".
func debGlob(name, version string) string {
	return name + "_" + strings.ReplaceAll(version, ":", "%3a") + "_*.deb"
}

// cached returns the cached .deb of name=version if its sha256 matches.
func (f *Fetcher) cached(name, version, want string) (*Result, error) {
	matches, err := filepath.Glob(filepath.Join(f.Dir, debGlob(name, version)))
	if err != nil {
		return nil, fmt.Errorf("apt: looking in cache: %w", err)
	}
	for _, m := range matches {
		got, err := FileSHA256(m)
		if err != nil {
			return nil, fmt.Errorf("apt: %w", err)
		}
		if got == want {
			return &Result{Path: m, Name: name, Version: version, SHA256: got}, nil
		}
		f.logf("warning: cached %s has sha256 %s, want %s; ignoring it", m, got, want)
	}
	return nil, nil
}

// ErrChecksum marks a downloaded file whose sha256 differs from the expected one.
var ErrChecksum = errors.New("sha256 mismatch")

// download runs apt-get download in a fresh temporary directory under f.Dir,
// verifies the sha256 and moves the file into the cache.
func (f *Fetcher) download(ctx context.Context, name, version, want string) (*Result, error) {
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("apt: creating cache: %w", err)
	}
	tmp, err := os.MkdirTemp(f.Dir, ".download-")
	if err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt-get download must be able to write here even when it drops to _apt.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	spec := name + "=" + version
	if _, err := f.runner().Run(ctx, tmp, "apt-get", "download", "--", spec); err != nil {
		return nil, fmt.Errorf("apt: downloading %s: %w", spec, err)
	}
	matches, err := filepath.Glob(filepath.Join(tmp, debGlob(name, version)))
	if err != nil || len(matches) != 1 {
		return nil, fmt.Errorf("apt: downloading %s: expected one %s, found %d", spec, debGlob(name, version), len(matches))
	}
	got, err := FileSHA256(matches[0])
	if err != nil {
		return nil, fmt.Errorf("apt: %w", err)
	}
	if got != want {
		return nil, fmt.Errorf("apt: downloaded %s has sha256 %s, want %s: %w", spec, got, want, ErrChecksum)
	}
	dst := filepath.Join(f.Dir, filepath.Base(matches[0]))
	if err := os.Rename(matches[0], dst); err != nil {
		return nil, fmt.Errorf("apt: storing %s: %w", spec, err)
	}
	return &Result{Path: dst, Name: name, Version: version, SHA256: got}, nil
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(name string) (string, error) {
	fh, err := os.Open(name)
	if err != nil {
		return "", fmt.Errorf("hashing: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("hashing %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
