package bake

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"strings"

	"cairn.dev/cairn/runtime/image/unpack"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// ErrHostile is wrapped by errors for layers that try to leave the image's
// root (path traversal, links climbing out, writes through symlinks).
var ErrHostile = unpack.ErrHostile

// meta is what the erofs root records of one flattened entry: owner,
// permission bits (with setuid, setgid and sticky) and the extended
// attributes kept (keptXattr).
type meta struct {
	uid, gid uint32
	perm     fs.FileMode
	xattrs   map[string]string
}

// Bounds on the extended attributes of one entry (the kernel's: a value
// of at most 64 KiB; erofs keeps an inode's inline xattrs small).
const (
	maxXattrValue = 64 << 10
	maxXattrBytes = 64 << 10
)

// keptXattr reports whether an extended attribute from a layer is carried
// into the erofs root: file capabilities and the user namespace. Others
// (security.selinux, trusted.*, ACLs) belong to the build host or need
// policy the runtime does not have.
func keptXattr(name string) bool {
	return name == "security.capability" || (strings.HasPrefix(name, "user.") && len(name) > len("user."))
}

// headerXattrs returns the kept extended attributes of a tar header's PAX
// records (SCHILY.xattr.NAME), or an error when they exceed the bounds.
func headerXattrs(hdr *tar.Header) (map[string]string, error) {
	var out map[string]string
	total := 0
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || !keptXattr(name) {
			continue
		}
		if len(v) > maxXattrValue || len(name) > 255 {
			return nil, fmt.Errorf("extended attribute %q of %d bytes: %w", name, len(v), unpack.ErrLimit)
		}
		if total += len(name) + len(v); total > maxXattrBytes {
			return nil, fmt.Errorf("extended attributes of more than %d bytes: %w", maxXattrBytes, unpack.ErrLimit)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out, nil
}

// layerChecker follows the layers of an image bottom-up and refuses what
// mutate.Extract would silently drop or what would write outside the
// intended path: entries below a symlink, and relative links whose target
// climbs above the image root.
type layerChecker struct {
	symlinks map[string]bool
	entries  int
}

func newLayerChecker() *layerChecker { return &layerChecker{symlinks: map[string]bool{}} }

// check reads one uncompressed layer.
func (c *layerChecker) check(ctx context.Context, r io.Reader) error {
	tr := tar.NewReader(unpack.LimitReader(r, unpack.DefaultMaxBytes))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar header: %w", err)
		}
		if c.entries++; c.entries > unpack.DefaultMaxEntries {
			return fmt.Errorf("more than %d entries: %w", unpack.DefaultMaxEntries, unpack.ErrLimit)
		}
		if err := c.entry(hdr); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
}

func (c *layerChecker) entry(hdr *tar.Header) error {
	p, err := unpack.CleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if p == "." {
		return nil
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > math.MaxUint32 || int64(hdr.Gid) > math.MaxUint32 {
		return fmt.Errorf("owner %d:%d out of range: %w", hdr.Uid, hdr.Gid, ErrHostile)
	}
	if err := c.underSymlink(p); err != nil {
		return err
	}
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if base == ".wh..wh..opq" {
		c.forget(dir, false)
		return nil
	}
	if name, ok := strings.CutPrefix(base, ".wh."); ok {
		if !strings.HasPrefix(name, ".wh.") {
			c.forget(path.Join(dir, name), true)
		}
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		if !path.IsAbs(hdr.Linkname) {
			if _, err := unpack.CleanPath(path.Join("/", dir) + "/" + hdr.Linkname); err != nil {
				return fmt.Errorf("symlink to %q climbs out of the image: %w", hdr.Linkname, ErrHostile)
			}
		}
		c.forget(p, true)
		c.symlinks[p] = true
	case tar.TypeLink:
		t, err := unpack.CleanPath(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		if err := c.underSymlink(t); err != nil {
			return fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		c.forget(p, true)
	case tar.TypeDir:
		delete(c.symlinks, p)
	default:
		c.forget(p, true)
	}
	return nil
}

// underSymlink fails when a parent of p is a symlink.
func (c *layerChecker) underSymlink(p string) error {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if c.symlinks[d] {
			return fmt.Errorf("written through the symlink %q: %w", d, ErrHostile)
		}
	}
	return nil
}

// forget drops the symlinks below p (and p itself when self is set).
func (c *layerChecker) forget(p string, self bool) {
	if self {
		delete(c.symlinks, p)
	}
	prefix := p + "/"
	if p == "" || p == "." {
		prefix = ""
	}
	for s := range c.symlinks {
		if strings.HasPrefix(s, prefix) {
			delete(c.symlinks, s)
		}
	}
}

// flatten checks the layers of img, then applies them in order into dir
// (which must exist and be empty) with whiteouts and opaque directories
// resolved, through the hardened unpacker. Device nodes, FIFOs and sockets
// are dropped. It returns every entry's owner and mode, keyed by its path
// relative to dir, and the sum of the regular files' sizes.
func flatten(ctx context.Context, img v1.Image, dir string) (map[string]meta, int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, 0, fmt.Errorf("layers: %w", err)
	}
	c := newLayerChecker()
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, 0, fmt.Errorf("layer %d: %w", i, err)
		}
		err = c.check(ctx, rc)
		rc.Close()
		if err != nil {
			d, _ := l.Digest()
			return nil, 0, fmt.Errorf("layer %d (%s): %w", i, d, err)
		}
	}

	pr, pw := io.Pipe()
	type result struct {
		m    map[string]meta
		size int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		m, size, err := filterFlat(ctx, img, pw)
		pw.CloseWithError(err)
		done <- result{m, size, err}
	}()
	_, uerr := unpack.Unpack(ctx, pr, dir, unpack.Options{})
	if uerr == nil {
		_, uerr = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(errUnpackDone)
	res := <-done
	if res.err != nil && !errors.Is(res.err, errUnpackDone) {
		return nil, 0, res.err
	}
	if uerr != nil {
		return nil, 0, uerr
	}
	return res.m, res.size, nil
}

var errUnpackDone = errors.New("unpack finished")

// filterFlat writes the flattened tar stream of img to w, without device
// nodes, FIFOs and sockets, and with hardlinks last (their target may come
// from a lower layer, which mutate.Extract writes later).
func filterFlat(ctx context.Context, img v1.Image, w io.Writer) (map[string]meta, int64, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	tw := tar.NewWriter(w)
	m := map[string]meta{}
	var size int64
	var links []*tar.Header
	root := os.Geteuid() == 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("flatten: %w", err)
		}
		p, err := unpack.CleanPath(hdr.Name)
		if err != nil {
			return nil, 0, fmt.Errorf("flatten: %q: %w", hdr.Name, err)
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink:
		case tar.TypeLink:
			links = append(links, hdr)
			continue
		default:
			continue
		}
		md := headerMeta(hdr)
		if hdr.Typeflag != tar.TypeSymlink {
			if md.xattrs, err = headerXattrs(hdr); err != nil {
				return nil, 0, fmt.Errorf("flatten: %q: %w", hdr.Name, err)
			}
		}
		m[p] = md
		stripXattrs(hdr)
		if hdr.Typeflag == tar.TypeReg {
			size += hdr.Size
		}
		if !root {
			ownerAccess(hdr)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("flatten: %w", err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, 0, fmt.Errorf("flatten: %q: %w", hdr.Name, err)
		}
	}
	for _, hdr := range links {
		p, _ := unpack.CleanPath(hdr.Name)
		t, err := unpack.CleanPath(hdr.Linkname)
		if err != nil {
			return nil, 0, fmt.Errorf("flatten: %q: %w", hdr.Name, err)
		}
		tm, ok := m[t]
		if !ok {
			continue // target whited out or dropped
		}
		m[p] = tm
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("flatten: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, 0, fmt.Errorf("flatten: %w", err)
	}
	return m, size, nil
}

// stripXattrs drops the extended attributes from the header written to the
// on-disk copy: the erofs root takes them from the meta, and setting
// security.capability on the build host needs privilege.
func stripXattrs(hdr *tar.Header) {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			delete(hdr.PAXRecords, k)
		}
	}
	//lint:ignore SA1019 tar.Reader fills the deprecated Xattrs too, and tar.Writer writes them.
	hdr.Xattrs = nil
}

// ownerAccess makes the on-disk copy of an entry usable by a build user who
// is not root (and so cannot override permissions): files u+rw, directories
// u+rwx, so that a mode-0000 file such as /etc/shadow can be read into the
// erofs root and a mode-0500 directory filled. The image's mode is recorded
// in the meta first; the erofs entry gets that one.
func ownerAccess(hdr *tar.Header) {
	switch hdr.Typeflag {
	case tar.TypeDir:
		hdr.Mode |= 0o700
	case tar.TypeReg:
		hdr.Mode |= 0o600
	}
}

func headerMeta(hdr *tar.Header) meta {
	perm := fs.FileMode(hdr.Mode) & fs.ModePerm
	if hdr.Mode&0o4000 != 0 {
		perm |= fs.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		perm |= fs.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		perm |= fs.ModeSticky
	}
	return meta{uid: uint32(hdr.Uid), gid: uint32(hdr.Gid), perm: perm}
}
