// Package deb reads Debian binary packages (.deb) and extracts their data
// archive into a directory, treating the package as hostile input: member
// paths are confined to the destination, symlinks are never written through,
// device nodes are skipped, and sizes are bounded.
package deb

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

const (
	// DefaultMaxBytes bounds the decompressed data.tar stream (and so the
	// bytes written) when Options.MaxBytes is zero.
	DefaultMaxBytes int64 = 2 << 30
	// DefaultMaxEntries bounds the number of tar entries when
	// Options.MaxEntries is zero.
	DefaultMaxEntries = 1 << 20
	// zstdMaxWindow bounds the decoder window (Debian uses at most 8 MiB).
	zstdMaxWindow = 128 << 20
)

// Options selects what Extract writes and bounds its work.
type Options struct {
	// Include lists slash-separated patterns relative to the package root
	// (no leading "./" or "/"), e.g. "lib/modules" or "boot/vmlinuz-*". An
	// entry is extracted if, for some pattern, the entry's leading path
	// components match the pattern's components (path.Match each), so a
	// pattern selects a whole subtree. Empty means everything.
	Include []string
	// MaxBytes bounds the decompressed data.tar stream; 0 means DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries bounds the number of tar entries; 0 means DefaultMaxEntries.
	MaxEntries int
}

// Result summarises an extraction.
type Result struct {
	Files, Dirs, Symlinks, Hardlinks int
	Bytes                            int64    // regular-file bytes written
	Skipped                          []string // entries not extracted because of their type (devices, fifos, ...)
}

// Extract reads a .deb from r and writes the selected entries of its
// data.tar.{xz,zst,gz} into dest, which must exist. Hostile paths, symlink
// tricks and oversized input yield errors naming the member and offset.
func Extract(ctx context.Context, r io.Reader, dest string, o Options) (*Result, error) {
	for _, p := range o.Include {
		if _, err := path.Match(p, ""); err != nil || path.IsAbs(p) || p == "" {
			return nil, fmt.Errorf("deb: bad include pattern %q", p)
		}
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, fmt.Errorf("deb: opening destination: %w", err)
	}
	defer root.Close()

	ar, err := NewArReader(bufio.NewReaderSize(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("deb: %w", err)
	}
	sawVersion := false
	for {
		h, err := ar.Next()
		if err == io.EOF {
			return nil, errors.New("deb: no data.tar member found")
		}
		if err != nil {
			return nil, fmt.Errorf("deb: %w", err)
		}
		switch {
		case h.Name == "debian-binary":
			b, err := io.ReadAll(io.LimitReader(ar, 64))
			if err != nil {
				return nil, fmt.Errorf("deb: reading debian-binary: %w", err)
			}
			if !strings.HasPrefix(string(b), "2.") {
				return nil, fmt.Errorf("deb: member debian-binary at offset %d: unsupported format version %q", h.Offset, b)
			}
			sawVersion = true
		case strings.HasPrefix(h.Name, "data.tar"):
			if !sawVersion {
				return nil, fmt.Errorf("deb: member %q at offset %d comes before debian-binary", h.Name, h.Offset)
			}
			dec, closeDec, err := decompressor(h.Name, ar)
			if err != nil {
				return nil, fmt.Errorf("deb: member %q at offset %d: %w", h.Name, h.Offset, err)
			}
			res, err := extractTar(ctx, dec, root, o, h)
			closeDec()
			return res, err
		}
	}
}

// decompressor picks the decoder for a data.tar member by its suffix.
func decompressor(name string, r io.Reader) (io.Reader, func(), error) {
	switch path.Ext(name) {
	case ".tar":
		return r, func() {}, nil
	case ".xz":
		x, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("xz header: %w", err)
		}
		return x, func() {}, nil
	case ".zst":
		z, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return z, z.Close, nil
	case ".gz":
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip header: %w", err)
		}
		return g, func() { _ = g.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unsupported compression %q", path.Ext(name))
}

// countingReader counts bytes and fails once more than limit were read.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

var errTooLarge = errors.New("size limit exceeded")

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		// Allow EOF detection: only fail if there is actually more data.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("decompressed data.tar exceeds %d bytes: %w", c.limit, errTooLarge)
		}
		return 0, err
	}
	if rem := c.limit - c.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type extractor struct {
	root   *os.Root
	o      Options
	res    Result
	budget int64 // remaining regular-file bytes
}

func extractTar(ctx context.Context, r io.Reader, root *os.Root, o Options, h *ArHeader) (*Result, error) {
	maxBytes, maxEntries := o.MaxBytes, o.MaxEntries
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	cr := &countingReader{r: r, limit: maxBytes}
	tr := tar.NewReader(cr)
	e := &extractor{root: root, o: o, budget: maxBytes}
	for entries := 0; ; entries++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("deb: extracting %q: %w", h.Name, err)
		}
		off := cr.n
		hdr, err := tr.Next()
		if err == io.EOF {
			// Read the rest of the stream (tar padding, compression trailer)
			// so checksums are verified and truncation is noticed.
			if _, err := io.Copy(io.Discard, cr); err != nil {
				return nil, fmt.Errorf("deb: member %q: after the tar end at decompressed offset %d: %w", h.Name, cr.n, noEOF(err))
			}
			return &e.res, nil
		}
		if err != nil {
			return nil, fmt.Errorf("deb: member %q: tar header at decompressed offset %d: %w", h.Name, off, noEOF(err))
		}
		if entries >= maxEntries {
			return nil, fmt.Errorf("deb: member %q: more than %d tar entries: %w", h.Name, maxEntries, errTooLarge)
		}
		if err := e.entry(tr, hdr); err != nil {
			return nil, fmt.Errorf("deb: member %q: tar entry %q at decompressed offset %d: %w", h.Name, hdr.Name, off, err)
		}
	}
}

// cleanName maps a tar entry name to a path relative to the destination, or
// "" for the root itself. It rejects absolute paths and any ".." component.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsRune(name, 0) {
		return "", errors.New("empty or NUL-containing name")
	}
	if path.IsAbs(name) {
		return "", errors.New("absolute path")
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", errors.New("path contains \"..\"")
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

func (e *extractor) included(rel string) bool {
	if len(e.o.Include) == 0 {
		return true
	}
	parts := strings.Split(rel, "/")
	for _, p := range e.o.Include {
		pp := strings.Split(path.Clean(p), "/")
		if len(parts) < len(pp) {
			continue
		}
		ok := true
		for i := range pp {
			if m, _ := path.Match(pp[i], parts[i]); !m {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// checkParents ensures no existing ancestor of rel is a symlink or non-directory,
// so nothing is ever written through a link (even one pointing inside dest).
func (e *extractor) checkParents(rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := e.root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			break // the rest will be created as real directories
		}
		if err != nil {
			return fmt.Errorf("checking parent %q: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("refusing to write through symlink %q", p)
		}
		if !fi.IsDir() {
			return fmt.Errorf("parent %q is not a directory", p)
		}
	}
	return e.root.MkdirAll(dir, 0o755)
}

// clearTarget removes an existing non-directory at rel (a later tar entry
// replaces an earlier one, as with tar and dpkg) and refuses to replace a
// directory with something else.
func (e *extractor) clearTarget(rel string) error {
	fi, err := e.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking target: %w", err)
	}
	if fi.IsDir() {
		return errors.New("target exists as a directory")
	}
	if err := e.root.Remove(rel); err != nil {
		return fmt.Errorf("replacing existing entry: %w", err)
	}
	return nil
}

func (e *extractor) entry(tr *tar.Reader, hdr *tar.Header) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil // the package root "./"
	}
	if !e.included(rel) {
		return nil
	}
	perm := fs.FileMode(hdr.Mode) & fs.ModePerm // never setuid/setgid/sticky
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := e.checkParents(rel); err != nil {
			return err
		}
		fi, err := e.root.Lstat(rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := e.root.Mkdir(rel, perm|0o700); err != nil {
				return fmt.Errorf("creating directory: %w", err)
			}
		case err != nil:
			return fmt.Errorf("checking directory: %w", err)
		case !fi.IsDir():
			return errors.New("directory entry collides with an existing non-directory")
		}
		e.res.Dirs++
		return nil
	case tar.TypeReg, tar.TypeGNUSparse: // archive/tar maps the old TypeRegA to TypeReg; sparse files expand to Size bytes
		if hdr.Size < 0 || hdr.Size > e.budget {
			return fmt.Errorf("file of %d bytes exceeds the remaining size budget of %d bytes: %w", hdr.Size, e.budget, errTooLarge)
		}
		if err := e.checkParents(rel); err != nil {
			return err
		}
		if err := e.clearTarget(rel); err != nil {
			return err
		}
		f, err := e.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, perm|0o600)
		if err != nil {
			return fmt.Errorf("creating file: %w", err)
		}
		n, err := io.CopyN(f, tr, hdr.Size)
		e.budget -= n
		e.res.Bytes += n
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing file (%d of %d bytes): %w", n, hdr.Size, noEOF(err))
		}
		if perm&0o600 != 0o600 {
			if err := e.root.Chmod(rel, perm); err != nil {
				return fmt.Errorf("setting mode: %w", err)
			}
		}
		e.res.Files++
		return nil
	case tar.TypeSymlink:
		if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
			return errors.New("symlink with empty or NUL-containing target")
		}
		if err := e.checkParents(rel); err != nil {
			return err
		}
		if err := e.clearTarget(rel); err != nil {
			return err
		}
		// The target is stored verbatim (it may point anywhere, as in the
		// package); it is never followed by the extractor.
		if err := e.root.Symlink(hdr.Linkname, rel); err != nil {
			return fmt.Errorf("creating symlink: %w", err)
		}
		e.res.Symlinks++
		return nil
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "" {
			return fmt.Errorf("hardlink target %q: invalid (%v)", hdr.Linkname, err)
		}
		fi, err := e.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("hardlink target %q: %w", hdr.Linkname, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hardlink target %q is not a regular file", hdr.Linkname)
		}
		if err := e.checkParents(target); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if err := e.checkParents(rel); err != nil {
			return err
		}
		if err := e.clearTarget(rel); err != nil {
			return err
		}
		if err := e.root.Link(target, rel); err != nil {
			return fmt.Errorf("creating hardlink: %w", err)
		}
		e.res.Hardlinks++
		return nil
	default:
		// Character and block devices, fifos and unknown types are not
		// needed from a package and are never created.
		e.res.Skipped = append(e.res.Skipped, rel)
		return nil
	}
}
