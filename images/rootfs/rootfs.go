// Package rootfs builds Cairn's read-only root filesystem image: an
// uncompressed erofs image (github.com/erofs/go-erofs) followed by a
// dm-verity hash tree (github.com/containerd/go-dmverity) on the same file,
// without a verity superblock.
//
// Every inode carries the build time as mtime and is owned by 0:0, unless
// the source's fs.FileInfo.Sys() returns an Owner (baked container images
// keep their files' owners), so the image depends only on the tree, the
// owners it declares, the build time and the salt.
package rootfs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/containerd/go-dmverity/pkg/verity"
	"github.com/erofs/go-erofs"
)

// BlockSize is the erofs block size and the dm-verity data and hash block size.
const BlockSize = 4096

// Owner, returned by a source entry's fs.FileInfo.Sys(), sets the owner of
// its inode and its extended attributes (full names such as
// "security.capability"; nil for none); entries whose Sys() is anything else
// are owned by 0:0 and have none.
type Owner struct {
	UID, GID uint32
	Xattrs   map[string]string
}

// Options configure Build.
type Options struct {
	BuildTime time.Time // erofs build time and every inode's mtime (required for reproducibility)
	Salt      []byte    // dm-verity salt (0..256 bytes); the same salt gives the same root hash
}

// Verity describes the dm-verity tree appended to the image; it maps 1:1 to
// the kernel command line (cairn.verity.*) and to
// `veritysetup verify --no-superblock --data-blocks=DataBlocks
// --hash-offset=HashOffset --salt=Salt img img RootHash`.
type Verity struct {
	RootHash   string // hex
	Salt       string // hex
	DataBlocks uint64 // number of 4096-byte data blocks (the erofs image, padded)
	HashOffset uint64 // byte offset of the hash tree = DataBlocks*4096
}

// Build writes the erofs image of src to the file out (created or
// truncated), pads it to a 4096-byte boundary and appends the dm-verity hash
// tree. src may be any fs.FS (fstest.MapFS, os.DirFS, ...). Supported file
// types are directories, regular files and symlinks; symlinks need src to
// implement fs.ReadLinkFS (os.DirFS and fstest.MapFS do). Files are opened
// one at a time while the image is written, so large trees do not exhaust
// file descriptors.
func Build(ctx context.Context, src fs.FS, out string, o Options) (Verity, error) {
	if len(o.Salt) > verity.MaxSaltSize {
		return Verity{}, fmt.Errorf("rootfs: salt is %d bytes, max %d", len(o.Salt), verity.MaxSaltSize)
	}
	if o.BuildTime.Unix() < 0 {
		return Verity{}, fmt.Errorf("rootfs: build time %v before 1970", o.BuildTime)
	}
	if err := writeErofs(ctx, src, out, o.BuildTime); err != nil {
		return Verity{}, fmt.Errorf("rootfs: erofs: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Verity{}, fmt.Errorf("rootfs: %w", err)
	}
	v, err := AppendVerity(out, o.Salt)
	if err != nil {
		return Verity{}, fmt.Errorf("rootfs: %w", err)
	}
	return v, nil
}

// AppendVerity pads the file at p to a multiple of 4096 bytes and appends a
// dm-verity hash tree (sha256, 4096/4096, format 1, no superblock) covering
// the padded contents.
func AppendVerity(p string, salt []byte) (Verity, error) {
	st, err := os.Stat(p)
	if err != nil {
		return Verity{}, fmt.Errorf("verity: %w", err)
	}
	if st.Size() == 0 {
		return Verity{}, errors.New("verity: empty data file")
	}
	blocks := (uint64(st.Size()) + BlockSize - 1) / BlockSize
	if err := os.Truncate(p, int64(blocks*BlockSize)); err != nil {
		return Verity{}, fmt.Errorf("verity: pad: %w", err)
	}
	params := verityParams(blocks, salt)
	root, err := verity.Create(&params, p, p)
	if err != nil {
		return Verity{}, fmt.Errorf("verity: create hash tree: %w", err)
	}
	return Verity{
		RootHash:   hex.EncodeToString(root),
		Salt:       hex.EncodeToString(salt),
		DataBlocks: blocks,
		HashOffset: blocks * BlockSize,
	}, nil
}

func verityParams(blocks uint64, salt []byte) verity.Params {
	p := verity.DefaultParams()
	p.DataBlockSize = BlockSize
	p.HashBlockSize = BlockSize
	p.DataBlocks = blocks
	p.Salt = append([]byte(nil), salt...)
	p.SaltSize = uint16(len(salt))
	p.HashAreaOffset = blocks * BlockSize
	p.NoSuperblock = true
	return p
}

// Verify checks the hash tree of an image built by Build against v.
func Verify(p string, v Verity) error {
	salt, err := hex.DecodeString(v.Salt)
	if err != nil {
		return fmt.Errorf("verity: salt: %w", err)
	}
	root, err := hex.DecodeString(v.RootHash)
	if err != nil {
		return fmt.Errorf("verity: root hash: %w", err)
	}
	params := verityParams(v.DataBlocks, salt)
	if v.HashOffset != v.DataBlocks*BlockSize {
		return fmt.Errorf("verity: hash offset %d != data blocks*%d", v.HashOffset, BlockSize)
	}
	if err := verity.Verify(&params, p, p, root); err != nil {
		return fmt.Errorf("verity: verify %s: %w", p, err)
	}
	return nil
}

func writeErofs(ctx context.Context, src fs.FS, out string, buildTime time.Time) (err error) {
	// Pre-walk: validate file types and count subdirectories for nlink.
	subdirs := map[string]uint32{}
	err = fs.WalkDir(src, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch t := d.Type(); {
		case t.IsDir():
			subdirs[p] += 0
			if p != "." {
				subdirs[path.Dir(p)]++
			}
		case t.IsRegular(), t&fs.ModeSymlink != 0:
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk source: %w", err)
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	sec, nsec := uint64(buildTime.Unix()), uint32(buildTime.Nanosecond())
	w := erofs.Create(f, erofs.WithBuildTime(sec, nsec), erofs.WithBlockSize(BlockSize))
	nfs := &normFS{ctx: ctx, src: src, mtime: sec, mtimeNs: nsec}
	if err := w.CopyFrom(nfs); err != nil {
		_ = w.Close()
		return fmt.Errorf("copy tree: %w", err)
	}
	for d, n := range subdirs {
		name := "/" + d
		if d == "." {
			name = "/"
		}
		if err := w.SetNlink(name, 2+n); err != nil {
			_ = w.Close()
			return fmt.Errorf("set nlink of %s: %w", d, err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	// Close the lazily opened file that may still be open after an error.
	nfs.closeOpen()
	return nil
}

// normFS wraps a source fs.FS: it reports every entry as owned by 0:0 (or
// its Owner) with the build time as mtime (via *erofs.Stat, which go-erofs honours), and it
// opens regular files lazily (on first Read, closed at EOF), because
// go-erofs's CopyFrom keeps every file it opened until Close.
type normFS struct {
	ctx     context.Context
	src     fs.FS
	mtime   uint64
	mtimeNs uint32
	open    *lazyFile
}

func (n *normFS) info(fi fs.FileInfo) fs.FileInfo {
	st := &erofs.Stat{
		Mode:    fi.Mode(),
		Size:    fi.Size(),
		Mtime:   n.mtime,
		MtimeNs: n.mtimeNs,
	}
	if o, ok := fi.Sys().(Owner); ok {
		st.UID, st.GID = o.UID, o.GID
		if len(o.Xattrs) > 0 {
			st.Xattrs = o.Xattrs
		}
	}
	return &normInfo{FileInfo: fi, st: st}
}

func (n *normFS) Open(name string) (fs.File, error) {
	fi, err := fs.Stat(n.src, name)
	if err != nil {
		return nil, err
	}
	if fi.Mode().IsRegular() {
		return &lazyFile{fs: n, name: name, info: n.info(fi)}, nil
	}
	f, err := n.src.Open(name)
	if err != nil {
		return nil, err
	}
	return &normFile{File: f, fs: n}, nil
}

func (n *normFS) Stat(name string) (fs.FileInfo, error) {
	fi, err := fs.Stat(n.src, name)
	if err != nil {
		return nil, err
	}
	return n.info(fi), nil
}

func (n *normFS) ReadDir(name string) ([]fs.DirEntry, error) {
	des, err := fs.ReadDir(n.src, name)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(des))
	for i, d := range des {
		out[i] = &normDirEntry{DirEntry: d, fs: n}
	}
	return out, nil
}

func (n *normFS) ReadLink(name string) (string, error) {
	return fs.ReadLink(n.src, name)
}

func (n *normFS) closeOpen() {
	if n.open != nil {
		_ = n.open.Close()
	}
}

type normInfo struct {
	fs.FileInfo
	st *erofs.Stat
}

func (i *normInfo) Sys() any { return i.st }

type normDirEntry struct {
	fs.DirEntry
	fs *normFS
}

func (d *normDirEntry) Info() (fs.FileInfo, error) {
	fi, err := d.DirEntry.Info()
	if err != nil {
		return nil, err
	}
	return d.fs.info(fi), nil
}

type normFile struct {
	fs.File
	fs *normFS
}

func (f *normFile) Stat() (fs.FileInfo, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return nil, err
	}
	return f.fs.info(fi), nil
}

// lazyFile opens the underlying file on the first Read and closes it at EOF.
type lazyFile struct {
	fs   *normFS
	name string
	info fs.FileInfo
	f    fs.File
	done bool
}

func (l *lazyFile) Stat() (fs.FileInfo, error) { return l.info, nil }

func (l *lazyFile) Read(p []byte) (int, error) {
	if l.done {
		return 0, io.EOF
	}
	if err := l.fs.ctx.Err(); err != nil {
		return 0, err
	}
	if l.f == nil {
		f, err := l.fs.src.Open(l.name)
		if err != nil {
			return 0, err
		}
		l.f = f
		l.fs.open = l
	}
	n, err := l.f.Read(p)
	if err == io.EOF {
		l.done = true
		if cerr := l.Close(); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func (l *lazyFile) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if l.fs.open == l {
		l.fs.open = nil
	}
	return err
}
