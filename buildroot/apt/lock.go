// Package apt fetches pinned Debian packages with apt-get/apt-cache into a
// local cache, verifying their sha256, and falls back to the newest package
// of a family (e.g. the newest linux-image-6.1.0-<N>-cloud-amd64) when a
// pinned version has vanished from the archive.
package apt

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// Pin is one lock-file entry: an exact package version and its sha256.
type Pin struct {
	Name, Version, SHA256 string
}

// ParseLock parses a lock file: one "name version sha256" line per package;
// blank lines and lines starting with "#" are ignored.
func ParseLock(r io.Reader) ([]Pin, error) {
	var pins []Pin
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("lock line %d: want \"name version sha256\", got %d fields", n, len(f))
		}
		p := Pin{Name: f[0], Version: f[1], SHA256: strings.ToLower(f[2])}
		if !validPackageName(p.Name) {
			return nil, fmt.Errorf("lock line %d: invalid package name %q", n, p.Name)
		}
		if !validVersion(p.Version) {
			return nil, fmt.Errorf("lock line %d: invalid version %q", n, p.Version)
		}
		if b, err := hex.DecodeString(p.SHA256); err != nil || len(b) != 32 {
			return nil, fmt.Errorf("lock line %d: invalid sha256 %q", n, f[2])
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("lock line %d: package %q pinned twice", n, p.Name)
		}
		seen[p.Name] = true
		pins = append(pins, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading lock: %w", err)
	}
	return pins, nil
}

// ReadLock reads and parses the lock file at name.
func ReadLock(name string) ([]Pin, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	defer f.Close()
	pins, err := ParseLock(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return pins, nil
}

// validPackageName follows Debian policy §5.6.1: [a-z0-9][a-z0-9+.-]+.
func validPackageName(s string) bool {
	if len(s) < 2 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '+' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validVersion accepts the Debian version alphabet ([epoch:]upstream[-rev]).
func validVersion(s string) bool {
	if s == "" || !(s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune(".+-~:", c):
		default:
			return false
		}
	}
	return true
}
