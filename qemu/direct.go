package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// UKIDir is where Cairn's ESP keeps its unified kernel images (type #2 entries).
const UKIDir = "EFI/Linux"

// UKI is a unified kernel image found on an ESP, taken apart.
type UKI struct {
	Name           string // file name in EFI/Linux
	Version        string // VERSION_ID from .osrel
	TriesLeft      int    // systemd-boot boot counter (+LEFT[-DONE]); -1 without one
	Linux, Initrd  []byte
	Cmdline, OSRel string
}

// espFS is the read-only view of an ESP that direct boot needs.
type espFS interface {
	ReadDir(dir string) ([]string, error) // file names (not paths) in dir
	ReadFile(path string) ([]byte, error)
}

var counterRe = regexp.MustCompile(`\+(\d+)(?:-(\d+))?\.efi$`)

// triesLeft parses systemd-boot's boot-counter suffix ("name+3-0.efi").
func triesLeft(name string) int {
	m := counterRe.FindStringSubmatch(strings.ToLower(name))
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// osrelValue returns key's value from an os-release text.
func osrelValue(osrel, key string) string {
	sc := bufio.NewScanner(strings.NewReader(osrel))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || k != key {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			return uq
		}
		return strings.Trim(v, `"'`)
	}
	return ""
}

// versionCompare orders versions like systemd's strverscmp_improved for the
// common cases: digit runs compare numerically, other runs bytewise.
func versionCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := splitRun(a, true)
			nb, rb := splitRun(b, true)
			na, nb = strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if da != db {
			// a digit run sorts after a non-digit run ("1.10" > "1.a")
			if da {
				return 1
			}
			return -1
		}
		if a[0] != b[0] {
			return cmpInt(int(a[0]), int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return cmpInt(len(a), len(b))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func splitRun(s string, digits bool) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) == digits {
		i++
	}
	return s[:i], s[i:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// chooseUKI reads every EFI/Linux/*.efi on the ESP and returns the one
// systemd-boot would pick by default: entries with tries left (or no counter)
// before exhausted ones, then the highest VERSION_ID, then the highest name.
func chooseUKI(fsys espFS, parse func([]byte) (UKI, error)) (UKI, error) {
	names, err := fsys.ReadDir(UKIDir)
	if err != nil {
		return UKI{}, fmt.Errorf("list ESP %s: %w", UKIDir, err)
	}
	var ukis []UKI
	var errs []error
	for _, n := range names {
		if !strings.HasSuffix(strings.ToLower(n), ".efi") || strings.ContainsAny(n, `/\`) {
			continue
		}
		b, err := fsys.ReadFile(path.Join(UKIDir, n))
		if err != nil {
			errs = append(errs, fmt.Errorf("read ESP %s/%s: %w", UKIDir, n, err))
			continue
		}
		u, err := parse(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("ESP %s/%s: %w", UKIDir, n, err))
			continue
		}
		u.Name = n
		u.TriesLeft = triesLeft(n)
		u.Version = osrelValue(u.OSRel, "VERSION_ID")
		ukis = append(ukis, u)
	}
	if len(ukis) == 0 {
		if len(errs) > 0 {
			return UKI{}, fmt.Errorf("no usable UKI in ESP %s: %w", UKIDir, errors.Join(errs...))
		}
		return UKI{}, fmt.Errorf("no UKI (*.efi) in ESP %s", UKIDir)
	}
	sort.SliceStable(ukis, func(i, j int) bool {
		a, b := ukis[i], ukis[j]
		if (a.TriesLeft == 0) != (b.TriesLeft == 0) {
			return b.TriesLeft == 0
		}
		if c := versionCompare(a.Version, b.Version); c != 0 {
			return c > 0
		}
		return versionCompare(a.Name, b.Name) > 0
	})
	return ukis[0], nil
}

// cleanCmdline turns a UKI .cmdline section into an -append value.
func cleanCmdline(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	return strings.Join(strings.Fields(string(b)), " ")
}

// writeBootFiles writes the UKI's kernel and initrd into dir for -kernel/-initrd.
func writeBootFiles(u UKI, dir, extraAppend string) (BootFiles, error) {
	if len(u.Linux) == 0 {
		return BootFiles{}, fmt.Errorf("UKI %s has no .linux section", u.Name)
	}
	b := BootFiles{Kernel: filepath.Join(dir, "vmlinuz"), Append: u.Cmdline}
	if err := os.WriteFile(b.Kernel, u.Linux, 0o600); err != nil {
		return BootFiles{}, fmt.Errorf("write kernel: %w", err)
	}
	if len(u.Initrd) > 0 {
		b.Initrd = filepath.Join(dir, "initrd")
		if err := os.WriteFile(b.Initrd, u.Initrd, 0o600); err != nil {
			return BootFiles{}, fmt.Errorf("write initrd: %w", err)
		}
	}
	if extraAppend != "" {
		b.Append = strings.TrimSpace(b.Append + " " + extraAppend)
	}
	return b, nil
}
