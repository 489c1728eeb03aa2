// Package etc generates /etc on a tmpfs at boot: hostname, hosts,
// machine-id (kept on STATE), resolv.conf, the os-release link, and the
// files the OS file ships under /usr/share/cairn/etc.
package etc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Config says what to put into /etc.
type Config struct {
	Dir       string // the (tmpfs) /etc
	Hostname  string
	MachineID string // 32 lower-case hex digits
	Skeleton  string // e.g. /usr/share/cairn/etc; missing is fine
}

// Populate writes the generated files and then copies the skeleton over
// them (the OS file's own files win).
func Populate(c Config) error {
	files := map[string]string{
		"hostname":    c.Hostname + "\n",
		"machine-id":  c.MachineID + "\n",
		"hosts":       "127.0.0.1\tlocalhost " + c.Hostname + "\n::1\tlocalhost ip6-localhost\n",
		"resolv.conf": "# written by cairn; no DNS configured yet\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("etc: %w", err)
		}
	}
	link := filepath.Join(c.Dir, "os-release")
	_ = os.Remove(link)
	if err := os.Symlink("../usr/lib/os-release", link); err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	if c.Skeleton != "" {
		if err := CopyTree(c.Skeleton, c.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// CopyTree copies regular files, directories and symlinks (as links) from
// src into dst. Other file types are skipped.
func CopyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("etc: %w", err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("etc: %s outside %s", p, src)
		}
		out := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("etc: %w", err)
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(out, info.Mode().Perm()|0o700); err != nil {
				return fmt.Errorf("etc: %w", err)
			}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("etc: %w", err)
			}
			_ = os.Remove(out)
			if err := os.Symlink(target, out); err != nil {
				return fmt.Errorf("etc: %w", err)
			}
		case d.Type().IsRegular():
			if err := copyFile(p, out, info.Mode().Perm()); err != nil {
				return err
			}
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	defer in.Close()
	_ = os.Remove(dst)
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("etc: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	return nil
}

// ValidMachineID reports whether s is 32 lower-case hex digits, not all 0.
func ValidMachineID(s string) bool {
	if len(s) != 32 || strings.Trim(s, "0") == "" {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// LoadMachineID returns the valid machine id stored at path, if any.
func LoadMachineID(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	s := strings.TrimSpace(string(b))
	return s, ValidMachineID(s)
}

// NewMachineID returns a random 128-bit id (UUID v4 bits set, like
// systemd) read from random (crypto/rand if nil).
func NewMachineID(random io.Reader) (string, error) {
	if random == nil {
		random = rand.Reader
	}
	var raw [16]byte
	if _, err := io.ReadFull(random, raw[:]); err != nil {
		return "", fmt.Errorf("etc: machine-id: %w", err)
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	return hex.EncodeToString(raw[:]), nil
}

// SaveMachineID stores id at path atomically (temp file, fsync, rename,
// fsync of the directory).
func SaveMachineID(path, id string) error {
	if !ValidMachineID(id) {
		return fmt.Errorf("etc: bad machine id %q", id)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o444)
	if err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	_, werr := f.WriteString(id + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("etc: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("etc: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("etc: fsync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
