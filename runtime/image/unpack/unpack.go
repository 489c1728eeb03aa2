// Package unpack extracts one OCI image layer (a tar stream) into its own
// directory in the layout overlayfs expects for a lower layer: OCI whiteouts
// (".wh.NAME") become 0/0 character devices and opaque markers
// (".wh..wh..opq") become the trusted.overlay.opaque xattr.
//
// The unpacker treats every layer as hostile. All paths are resolved inside
// the target directory by the kernel (openat2 with RESOLVE_IN_ROOT), the final
// component is never followed, ".." that would climb above the root rejects
// the layer, hardlinks may only point at files inside the same layer, device
// nodes are never created, setuid/setgid bits and file capabilities are
// stripped in user-namespace mode, and the amount of data and the number of
// entries are bounded.
package unpack

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// ErrHostile is wrapped by errors for layers that try to escape their
// directory or are otherwise malformed on purpose.
var ErrHostile = errors.New("hostile layer")

// ErrLimit is wrapped by errors for layers that exceed a size or entry limit.
var ErrLimit = errors.New("layer exceeds limit")

// Default limits, used when the Options fields are zero.
const (
	DefaultMaxBytes   int64 = 32 << 30 // 32 GiB of uncompressed tar stream / file data
	DefaultMaxEntries       = 1 << 20  // one million entries
)

// Options control an Unpack.
type Options struct {
	// UserNS strips setuid/setgid bits and security.capability xattrs; set it
	// when the layer will run in a user-namespaced container.
	UserNS bool
	// MaxBytes bounds both the uncompressed tar stream and the sum of the
	// logical file sizes (sparse files count at their full size).
	MaxBytes int64
	// MaxEntries bounds the number of tar entries.
	MaxEntries int
}

// Stats describes what an Unpack did.
type Stats struct {
	Entries        int   // tar entries read
	Bytes          int64 // file data written (logical)
	Whiteouts      int   // whiteout and opaque markers converted
	SkippedDevices int   // character/block devices not created
	Stripped       int   // files whose setuid/setgid bits or capabilities were dropped (UserNS)
}

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	opaqueXattr    = "trusted.overlay.opaque"
	xattrPAX       = "SCHILY.xattr."
)

// Decompress returns a reader of the uncompressed tar stream of r, sniffing
// gzip and zstd by their magic numbers; anything else is passed through.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("unpack: sniff compression: %w", err)
	}
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("unpack: gzip: %w", err)
		}
		return zr, nil
	case len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(1<<30), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, fmt.Errorf("unpack: zstd: %w", err)
		}
		return zstdCloser{zr}, nil
	default:
		return io.NopCloser(br), nil
	}
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// limitReader fails with ErrLimit once more than n bytes were read.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, fmt.Errorf("unpack: uncompressed stream: %w", ErrLimit)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, fmt.Errorf("unpack: uncompressed stream: %w", ErrLimit)
	}
	return n, err
}

// LimitReader returns a reader that fails with an error wrapping ErrLimit
// after more than n bytes; callers that hash the uncompressed stream use it so
// that the hash, too, stops at the limit.
func LimitReader(r io.Reader, n int64) io.Reader { return &limitReader{r: r, n: n} }

type dirMeta struct {
	path     string
	mode     uint32
	uid, gid int
	mtime    time.Time
}

type unpacker struct {
	root  int // O_PATH fd of the target directory
	opts  Options
	chown bool
	buf   []byte
	dirs  []dirMeta
	stats Stats
}

// Unpack extracts the uncompressed tar stream r into dir, which must exist and
// should be empty. It stops at the end-of-archive marker and does not drain r.
func Unpack(ctx context.Context, r io.Reader, dir string, opts Options) (Stats, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("unpack: open %s: %w", dir, err)
	}
	defer unix.Close(root)
	u := &unpacker{root: root, opts: opts, chown: os.Geteuid() == 0, buf: make([]byte, 1<<20)}
	tr := tar.NewReader(LimitReader(r, opts.MaxBytes))
	for {
		if err := ctx.Err(); err != nil {
			return u.stats, fmt.Errorf("unpack: %w", err)
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return u.stats, fmt.Errorf("unpack: read tar header: %w", err)
		}
		u.stats.Entries++
		if u.stats.Entries > opts.MaxEntries {
			return u.stats, fmt.Errorf("unpack: more than %d entries: %w", opts.MaxEntries, ErrLimit)
		}
		if err := u.entry(hdr, tr); err != nil {
			return u.stats, fmt.Errorf("unpack: %q: %w", hdr.Name, err)
		}
	}
	for _, d := range u.dirs {
		if err := u.finishDir(d); err != nil {
			return u.stats, fmt.Errorf("unpack: %q: %w", d.path, err)
		}
	}
	return u.stats, nil
}

// CleanPath turns a tar entry name into a path relative to the layer root.
// Leading slashes are dropped (absolute names are relative to the root, as
// Docker treats them); a ".." that would climb above the root is an error
// wrapping ErrHostile. The root itself is returned as ".".
func CleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("NUL in path: %w", ErrHostile)
	}
	depth := 0
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", fmt.Errorf("path climbs out of the layer: %w", ErrHostile)
			}
		default:
			depth++
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return ".", nil
	}
	return p[1:], nil
}

func (u *unpacker) entry(hdr *tar.Header, tr *tar.Reader) error {
	p, err := CleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if hdr.Size < 0 {
		return fmt.Errorf("negative size: %w", ErrHostile)
	}
	if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeGNUSparse {
		u.stats.Bytes += hdr.Size
		if u.stats.Bytes > u.opts.MaxBytes {
			return fmt.Errorf("file data above %d bytes: %w", u.opts.MaxBytes, ErrLimit)
		}
	}
	if p == "." {
		// The layer root: only a directory makes sense; its metadata is
		// applied like any other directory.
		if hdr.Typeflag == tar.TypeDir {
			u.dirs = append(u.dirs, dirMeta{path: ".", mode: u.mode(hdr), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime})
		}
		return nil
	}
	dir, base := path.Split(p)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return u.whiteout(dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		u.stats.SkippedDevices++
		return nil
	}
	parent, err := u.mkdirAll(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)

	switch hdr.Typeflag {
	case tar.TypeDir:
		var st unix.Stat_t
		err := unix.Fstatat(parent, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := removeAt(parent, base); err != nil {
				return err
			}
			if err := unix.Mkdirat(parent, base, 0o700); err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
		if err := u.xattrsAt(parent, base, hdr); err != nil {
			return err
		}
		u.dirs = append(u.dirs, dirMeta{path: p, mode: u.mode(hdr), uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime})
		return nil
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := removeAt(parent, base); err != nil {
			return err
		}
		fd, err := unix.Openat(parent, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		f := os.NewFile(uintptr(fd), base)
		_, err = io.CopyBuffer(writerOnly{f}, tr, u.buf)
		if err == nil {
			err = u.fileMeta(fd, hdr)
		}
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return setTimes(parent, base, hdr.ModTime)
	case tar.TypeSymlink:
		if err := removeAt(parent, base); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, base); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if u.chown {
			if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("lchown: %w", err)
			}
		}
		return setTimes(parent, base, hdr.ModTime)
	case tar.TypeLink:
		return u.hardlink(parent, p, base, hdr.Linkname)
	case tar.TypeFifo:
		if err := removeAt(parent, base); err != nil {
			return err
		}
		if err := unix.Mknodat(parent, base, unix.S_IFIFO|0o600, 0); err != nil {
			return fmt.Errorf("mkfifo: %w", err)
		}
		if u.chown {
			if err := unix.Fchownat(parent, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if err := unix.Fchmodat(parent, base, u.mode(hdr), 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
		return setTimes(parent, base, hdr.ModTime)
	default:
		// Unknown or GNU-specific types carry no file; ignore them.
		return nil
	}
}

type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

func (u *unpacker) mode(hdr *tar.Header) uint32 {
	m := uint32(hdr.Mode) & 0o7777
	if u.opts.UserNS && m&(unix.S_ISUID|unix.S_ISGID) != 0 && hdr.Typeflag != tar.TypeDir {
		m &^= unix.S_ISUID | unix.S_ISGID
		u.stats.Stripped++
	}
	return m
}

// fileMeta sets owner, mode and xattrs on an open regular file.
func (u *unpacker) fileMeta(fd int, hdr *tar.Header) error {
	if u.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	// chmod after chown: chown clears setuid bits.
	if err := unix.Fchmod(fd, u.mode(hdr)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPAX)
		if !ok || !u.xattrAllowed(name) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

// xattrAllowed keeps user.* and (outside user namespaces) file capabilities;
// trusted.* (overlay control attributes) and other security.* are dropped.
func (u *unpacker) xattrAllowed(name string) bool {
	if strings.HasPrefix(name, "user.") {
		return true
	}
	if name == "security.capability" {
		if u.opts.UserNS {
			u.stats.Stripped++
			return false
		}
		return true
	}
	return false
}

func (u *unpacker) xattrsAt(parent int, base string, hdr *tar.Header) error {
	has := false
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPAX) {
			has = true
		}
	}
	if !has {
		return nil
	}
	fd, err := unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open dir: %w", err)
	}
	defer unix.Close(fd)
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPAX)
		if !ok || !u.xattrAllowed(name) {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

func (u *unpacker) whiteout(dir, base string) error {
	if strings.HasPrefix(base, whiteoutMeta) && base != opaqueMarker {
		return nil // aufs metadata (.wh..wh.plnk etc.)
	}
	u.stats.Whiteouts++
	parent, err := u.mkdirAll(dir)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if base == opaqueMarker {
		fd, err := unix.Openat(parent, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open opaque dir: %w", err)
		}
		defer unix.Close(fd)
		if err := unix.Fsetxattr(fd, opaqueXattr, []byte("y"), 0); err != nil {
			return fmt.Errorf("set opaque xattr: %w", err)
		}
		return nil
	}
	name := base[len(whiteoutPrefix):]
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("bad whiteout: %w", ErrHostile)
	}
	if err := removeAt(parent, name); err != nil {
		return err
	}
	if err := unix.Mknodat(parent, name, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("create whiteout: %w", err)
	}
	return nil
}

// hardlink links p to target; both are resolved inside the layer root, and
// the target must already exist in this layer and must not be a directory.
func (u *unpacker) hardlink(parent int, p, base, linkname string) error {
	t, err := CleanPath(linkname)
	if err != nil {
		return fmt.Errorf("hardlink target: %w", err)
	}
	if t == "." {
		return fmt.Errorf("hardlink to the layer root: %w", ErrHostile)
	}
	if t == p {
		return nil
	}
	tdir, tbase := path.Split(t)
	tparent, err := u.openDir(tdir)
	if err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkname, err)
	}
	defer unix.Close(tparent)
	var st unix.Stat_t
	if err := unix.Fstatat(tparent, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hardlink target %q: %w", linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hardlink to a directory: %w", ErrHostile)
	}
	if err := removeAt(parent, base); err != nil {
		return err
	}
	if err := unix.Linkat(tparent, tbase, parent, base, 0); err != nil {
		return fmt.Errorf("link: %w", err)
	}
	return nil
}

// openDir opens dir (relative to the root) with every symlink resolved inside
// the root.
func (u *unpacker) openDir(dir string) (int, error) {
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(u.root, dir, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return -1, fmt.Errorf("open %q: %w", dir, err)
	}
	return fd, nil
}

// mkdirAll opens dir inside the root, creating missing components with mode
// 0755 (as Docker and containerd do for implicit parents).
func (u *unpacker) mkdirAll(dir string) (int, error) {
	fd, err := u.openDir(dir)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	cur, err := unix.Dup(u.root)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	prefix := ""
	for _, c := range strings.Split(strings.Trim(dir, "/"), "/") {
		if c == "" {
			continue
		}
		prefix = path.Join(prefix, c)
		next, err := u.openDir(prefix)
		if errors.Is(err, unix.ENOENT) {
			// Either c does not exist, or it is a dangling symlink; never
			// create through a symlink: replace nothing, fail instead.
			var st unix.Stat_t
			if serr := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil {
				unix.Close(cur)
				return -1, fmt.Errorf("parent %q is not a directory: %w", prefix, ErrHostile)
			}
			if merr := unix.Mkdirat(cur, c, 0o755); merr != nil && !errors.Is(merr, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("mkdir %q: %w", prefix, merr)
			}
			next, err = unix.Openat(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				err = fmt.Errorf("open %q: %w", prefix, err)
			}
		}
		unix.Close(cur)
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

func (u *unpacker) finishDir(d dirMeta) error {
	fd, err := unix.Openat2(u.root, d.path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		// Replaced by a later entry (file or symlink): nothing to do.
		return nil
	}
	defer unix.Close(fd)
	if u.chown {
		if err := unix.Fchown(fd, d.uid, d.gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, d.mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return setTimes(fd, "", d.mtime)
}

func setTimes(dirfd int, name string, mtime time.Time) error {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	if mtime.IsZero() || mtime.Unix() < 0 {
		ts = unix.Timespec{}
	}
	times := []unix.Timespec{ts, ts}
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		// futimens on dirfd itself.
		return wrap("utimens", unix.UtimesNanoAt(dirfd, "", times, unix.AT_EMPTY_PATH))
	}
	return wrap("utimens", unix.UtimesNanoAt(dirfd, name, times, flags))
}

func wrap(op string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// removeAt removes name in dirfd (recursively if it is a directory); a
// missing name is not an error. Symlinks are never followed.
func removeAt(dirfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("stat %q: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return wrap("unlink", unix.Unlinkat(dirfd, name, 0))
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err == nil {
		for _, n := range names {
			if err = removeAt(fd, n); err != nil {
				break
			}
		}
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("remove %q: %w", name, err)
	}
	return wrap("rmdir", unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR))
}
