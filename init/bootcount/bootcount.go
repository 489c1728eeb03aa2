// Package bootcount blesses a systemd-boot boot-counted entry: it reads the
// LoaderBootCountPath and LoaderEntrySelected EFI variables (through
// efivarfs) and renames the counted file on the ESP to its name without the
// "+LEFT[-DONE]" counter, like systemd-bless-boot.
package bootcount

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
)

// LoaderGUID is the vendor GUID of systemd-boot's loader variables.
const LoaderGUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"

// Variable names.
const (
	VarBootCountPath = "LoaderBootCountPath"
	VarEntrySelected = "LoaderEntrySelected"
)

// maxVar bounds a variable's size (paths are short).
const maxVar = 64 << 10

// ParseString decodes an efivarfs string variable: 4 attribute bytes, then
// UTF-16LE, optionally NUL-terminated.
func ParseString(b []byte) (string, error) {
	if len(b) < 4 {
		return "", fmt.Errorf("bootcount: variable of %d bytes, no attributes", len(b))
	}
	if len(b) > maxVar {
		return "", fmt.Errorf("bootcount: variable of %d bytes too large", len(b))
	}
	b = b[4:]
	if len(b)%2 != 0 {
		return "", fmt.Errorf("bootcount: odd UTF-16 length %d", len(b))
	}
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), nil
}

// Vars are the loader variables relevant to blessing.
type Vars struct {
	EntrySelected string // e.g. "cairn-1.0.0+2-1.efi"
	BootCountPath string // e.g. `\EFI\Linux\cairn-1.0.0+2-1.efi`; "" if not counting
}

// ReadVars reads the loader variables from an efivarfs mount. A missing
// variable is not an error (the field stays empty).
func ReadVars(efivars string) (Vars, error) {
	var v Vars
	for _, x := range []struct {
		name string
		dst  *string
	}{{VarEntrySelected, &v.EntrySelected}, {VarBootCountPath, &v.BootCountPath}} {
		b, err := os.ReadFile(filepath.Join(efivars, x.name+"-"+LoaderGUID))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return v, fmt.Errorf("bootcount: read %s: %w", x.name, err)
		}
		if *x.dst, err = ParseString(b); err != nil {
			return v, fmt.Errorf("bootcount: %s: %w", x.name, err)
		}
	}
	return v, nil
}

// Counter splits a boot-counted file name into its blessed name and the
// counters: "cairn-1.0.0+2-1.efi" -> ("cairn-1.0.0.efi", 2, 1, true).
// ok is false when the name carries no counter.
func Counter(name string) (blessed string, left, done int, ok bool) {
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	i := strings.LastIndexByte(stem, '+')
	if i <= 0 {
		return name, 0, 0, false
	}
	ctr := stem[i+1:]
	l, d, hasDone := strings.Cut(ctr, "-")
	var err error
	if left, err = atoi(l); err != nil {
		return name, 0, 0, false
	}
	if hasDone {
		if done, err = atoi(d); err != nil {
			return name, 0, 0, false
		}
	}
	return stem[:i] + ext, left, done, true
}

func atoi(s string) (int, error) {
	if s == "" || len(s) > 9 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("bad counter %q", s)
	}
	return strconv.Atoi(s)
}

// ESPPath converts an EFI path (`\EFI\Linux\x.efi`) to a slash-separated
// path relative to the ESP root, rejecting anything that could leave it.
func ESPPath(efiPath string) (string, error) {
	p := strings.ReplaceAll(efiPath, `\`, "/")
	p = strings.TrimLeft(p, "/")
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("bootcount: bad path %q", efiPath)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return "", fmt.Errorf("bootcount: bad path %q", efiPath)
		}
	}
	return p, nil
}

// Bless renames the counted file named by the EFI path countPath, inside the
// mounted ESP at espRoot, to its blessed name and fsyncs the directory. It
// returns the old and new base names. If the counted file is gone but the
// blessed one exists, it reports success with old == new (already blessed).
func Bless(espRoot, countPath string) (oldName, newName string, err error) {
	rel, err := ESPPath(countPath)
	if err != nil {
		return "", "", err
	}
	dir, base := path.Split(rel)
	blessed, _, _, ok := Counter(base)
	if !ok {
		return "", "", fmt.Errorf("bootcount: %q has no boot counter", base)
	}
	d := filepath.Join(espRoot, filepath.FromSlash(dir))
	src, dst := filepath.Join(d, base), filepath.Join(d, blessed)
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		if _, err2 := os.Lstat(dst); err2 == nil {
			return blessed, blessed, nil
		}
		return "", "", fmt.Errorf("bootcount: %w", err)
	} else if err != nil {
		return "", "", fmt.Errorf("bootcount: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return "", "", fmt.Errorf("bootcount: %s already exists", dst)
	}
	if err := os.Rename(src, dst); err != nil {
		return "", "", fmt.Errorf("bootcount: %w", err)
	}
	// Sync the file under its new name, then the directory: on vfat a
	// directory sync alone leaves the renamed entry empty (size 0) until
	// the file's inode is written back, and a power cut before that
	// leaves no bootable entry.
	f, err := os.Open(dst)
	if err != nil {
		return base, blessed, fmt.Errorf("bootcount: fsync: %w", err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return base, blessed, fmt.Errorf("bootcount: fsync %s: %w", dst, err)
	}
	df, err := os.Open(d)
	if err != nil {
		return base, blessed, fmt.Errorf("bootcount: fsync dir: %w", err)
	}
	defer df.Close()
	if err := df.Sync(); err != nil {
		return base, blessed, fmt.Errorf("bootcount: fsync %s: %w", d, err)
	}
	return base, blessed, nil
}
