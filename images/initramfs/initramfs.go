// Package initramfs writes reproducible initramfs archives: newc ("070701")
// cpio, optionally zstd-compressed.
//
// Output depends only on the entries and the given mtime: entries are
// sorted by path, owners are 0:0, inode numbers are assigned in order, and
// every directory (including implicit parents, with mode 0755) gets an
// explicit record before its children.
package initramfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Kind is the type of an archive entry.
type Kind int

// Entry kinds.
const (
	Dir Kind = iota
	File
	Symlink
	CharDev
)

func (k Kind) String() string {
	switch k {
	case Dir:
		return "dir"
	case File:
		return "file"
	case Symlink:
		return "symlink"
	case CharDev:
		return "chardev"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Entry is one archive member.
type Entry struct {
	Path   string      // slash-separated, relative to the archive root ("init", "dev/console"); a leading "/" is removed
	Kind   Kind        //
	Mode   fs.FileMode // permission bits (0o7777 incl. setuid/setgid/sticky as fs.ModeSetuid etc. or raw 0o4000...); 0 means 0755 for Dir, 0644 for File, 0600 for CharDev
	Data   []byte      // File: contents (used if Source is empty)
	Source string      // File: host path to read the contents from
	Target string      // Symlink: link target
	Major  uint32      // CharDev
	Minor  uint32      // CharDev
}

// Console and Null are the device nodes every Cairn initramfs carries.
var (
	Console = Entry{Path: "dev/console", Kind: CharDev, Mode: 0o600, Major: 5, Minor: 1}
	Null    = Entry{Path: "dev/null", Kind: CharDev, Mode: 0o666, Major: 1, Minor: 3}
)

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
	sIFCHR = 0o020000
)

func cleanPath(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" || p == "." {
		return "", errors.New("empty path (the root directory is implicit)")
	}
	if path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." {
		return "", fmt.Errorf("path %q is not clean or escapes the archive", p)
	}
	return p, nil
}

func permBits(m fs.FileMode, def uint32) uint32 {
	if m == 0 {
		return def
	}
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	// Allow raw octal special bits too (0o4755).
	v |= uint32(m) & 0o7000
	return v
}

// normalize validates entries, adds missing parent directories (0755) and
// sorts by path.
func normalize(entries []Entry) ([]Entry, error) {
	byPath := make(map[string]int, len(entries))
	out := make([]Entry, 0, len(entries)+8)
	for _, e := range entries {
		p, err := cleanPath(e.Path)
		if err != nil {
			return nil, fmt.Errorf("initramfs: entry %q: %w", e.Path, err)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("initramfs: duplicate entry %q", p)
		}
		switch e.Kind {
		case Dir, File, CharDev:
		case Symlink:
			if e.Target == "" {
				return nil, fmt.Errorf("initramfs: symlink %q has no target", p)
			}
		default:
			return nil, fmt.Errorf("initramfs: entry %q: unsupported kind %v", p, e.Kind)
		}
		e.Path = p
		byPath[p] = len(out)
		out = append(out, e)
	}
	n := len(out)
	for i := 0; i < n; i++ {
		for d := path.Dir(out[i].Path); d != "."; d = path.Dir(d) {
			if j, ok := byPath[d]; ok {
				if out[j].Kind != Dir {
					return nil, fmt.Errorf("initramfs: parent %q of %q is a %v, not a directory", d, out[i].Path, out[j].Kind)
				}
				break
			}
			byPath[d] = len(out)
			out = append(out, Entry{Path: d, Kind: Dir, Mode: 0o755})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

type newcWriter struct {
	w     io.Writer
	off   int64
	ino   uint32
	mtime uint32
	err   error
}

var zeros [4]byte

func (c *newcWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

func (c *newcWriter) pad() {
	if r := c.off % 4; r != 0 {
		c.write(zeros[:4-r])
	}
}

func (c *newcWriter) header(name string, mode, nlink, size, major, minor uint32) {
	c.ino++
	ino := c.ino
	if name == "TRAILER!!!" {
		ino = 0
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, c.mtime, size, 0, 0, major, minor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
}

// WriteCPIO writes entries as an uncompressed newc archive to w.
func WriteCPIO(ctx context.Context, w io.Writer, entries []Entry, mtime time.Time) error {
	es, err := normalize(entries)
	if err != nil {
		return err
	}
	mt := mtime.Unix()
	if mt < 0 || mt > 0xffffffff {
		return fmt.Errorf("initramfs: mtime %v out of range for newc", mtime)
	}
	c := &newcWriter{w: w, mtime: uint32(mt)}
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		switch e.Kind {
		case Dir:
			c.header(e.Path, sIFDIR|permBits(e.Mode, 0o755), 2, 0, 0, 0)
		case CharDev:
			c.header(e.Path, sIFCHR|permBits(e.Mode, 0o600), 1, 0, e.Major, e.Minor)
		case Symlink:
			c.header(e.Path, sIFLNK|0o777, 1, uint32(len(e.Target)), 0, 0)
			c.write([]byte(e.Target))
			c.pad()
		case File:
			data := e.Data
			if e.Source != "" {
				data, err = os.ReadFile(e.Source)
				if err != nil {
					return fmt.Errorf("initramfs: read %s for %q: %w", e.Source, e.Path, err)
				}
			}
			if int64(len(data)) > 0xffffffff {
				return fmt.Errorf("initramfs: %q is larger than 4 GiB", e.Path)
			}
			c.header(e.Path, sIFREG|permBits(e.Mode, 0o644), 1, uint32(len(data)), 0, 0)
			c.write(data)
			c.pad()
		}
	}
	c.ino = 0
	c.header("TRAILER!!!", 0, 1, 0, 0, 0)
	if c.err != nil {
		return fmt.Errorf("initramfs: write: %w", c.err)
	}
	return nil
}

// Write writes entries as a zstd-compressed newc archive to w (the format
// Linux unpacks with CONFIG_RD_ZSTD). The output is reproducible.
func Write(ctx context.Context, w io.Writer, entries []Entry, mtime time.Time) error {
	zw, err := zstd.NewWriter(w,
		zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return fmt.Errorf("initramfs: zstd: %w", err)
	}
	if err := WriteCPIO(ctx, zw, entries, mtime); err != nil {
		zw.Close()
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("initramfs: zstd close: %w", err)
	}
	return nil
}
