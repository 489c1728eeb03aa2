package bake

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"

	"cairn.dev/cairn/images/rootfs"
)

// bakedFS serves the layout directory with the metadata the erofs root
// must record: flattened image entries keep their owner and permission bits
// from the image; everything else (the layout's own files, directories the
// unpacker made implicitly) is root-owned, 0755 for directories and 0644
// for files, whatever the build host's umask was.
type bakedFS struct {
	dir  fs.FS
	meta map[string]meta // keyed by path relative to the layout directory
}

func (b *bakedFS) info(name string, fi fs.FileInfo) fs.FileInfo {
	m, ok := b.meta[name]
	if !ok {
		m.perm = 0o644
		if fi.IsDir() {
			m.perm = 0o755
		}
	}
	mode := fi.Mode().Type() | m.perm
	if fi.Mode()&fs.ModeSymlink != 0 {
		mode = fs.ModeSymlink | 0o777
	}
	return &ownedInfo{FileInfo: fi, mode: mode, owner: rootfs.Owner{UID: m.uid, GID: m.gid, Xattrs: m.xattrs}}
}

func (b *bakedFS) Open(name string) (fs.File, error) {
	f, err := b.dir.Open(name)
	if err != nil {
		return nil, err
	}
	return &ownedFile{File: f, fs: b, name: name}, nil
}

func (b *bakedFS) Stat(name string) (fs.FileInfo, error) {
	fi, err := fs.Stat(b.dir, name)
	if err != nil {
		return nil, err
	}
	return b.info(name, fi), nil
}

func (b *bakedFS) ReadDir(name string) ([]fs.DirEntry, error) {
	des, err := fs.ReadDir(b.dir, name)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, len(des))
	for i, d := range des {
		out[i] = &ownedEntry{DirEntry: d, fs: b, name: path.Join(name, d.Name())}
	}
	return out, nil
}

func (b *bakedFS) ReadLink(name string) (string, error) { return fs.ReadLink(b.dir, name) }

func (b *bakedFS) Lstat(name string) (fs.FileInfo, error) {
	fi, err := fs.Lstat(b.dir, name)
	if err != nil {
		return nil, err
	}
	return b.info(name, fi), nil
}

type ownedInfo struct {
	fs.FileInfo
	mode  fs.FileMode
	owner rootfs.Owner
}

func (i *ownedInfo) Mode() fs.FileMode { return i.mode }
func (i *ownedInfo) Sys() any          { return i.owner }

type ownedEntry struct {
	fs.DirEntry
	fs   *bakedFS
	name string
}

func (e *ownedEntry) Info() (fs.FileInfo, error) {
	fi, err := e.DirEntry.Info()
	if err != nil {
		return nil, err
	}
	return e.fs.info(e.name, fi), nil
}

type ownedFile struct {
	fs.File
	fs   *bakedFS
	name string
}

func (f *ownedFile) Stat() (fs.FileInfo, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return nil, err
	}
	return f.fs.info(f.name, fi), nil
}

// Mount returns base with sub visible at the directory at (a slash path
// without leading slash, whose parent must be a directory of base). Names
// at or below at are served by sub; the parent's listing gains at.
func Mount(base fs.FS, at string, sub fs.FS) fs.FS {
	return &mountFS{base: base, at: at, sub: sub}
}

type mountFS struct {
	base fs.FS
	at   string
	sub  fs.FS
}

func (m *mountFS) route(name string) (fs.FS, string) {
	if name == m.at {
		return m.sub, "."
	}
	if rest, ok := strings.CutPrefix(name, m.at+"/"); ok {
		return m.sub, rest
	}
	return m.base, name
}

func (m *mountFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	fsys, n := m.route(name)
	f, err := fsys.Open(n)
	if err != nil {
		return nil, err
	}
	if name == m.at {
		return &renamedFile{File: f, name: path.Base(m.at)}, nil
	}
	return f, nil
}

func (m *mountFS) Stat(name string) (fs.FileInfo, error) {
	fsys, n := m.route(name)
	fi, err := fs.Stat(fsys, n)
	if err != nil {
		return nil, err
	}
	if name == m.at {
		return renamedInfo{FileInfo: fi, name: path.Base(m.at)}, nil
	}
	return fi, nil
}

func (m *mountFS) ReadDir(name string) ([]fs.DirEntry, error) {
	fsys, n := m.route(name)
	des, err := fs.ReadDir(fsys, n)
	if err != nil {
		return nil, err
	}
	if name != path.Dir(m.at) {
		return des, nil
	}
	fi, err := m.Stat(m.at)
	if err != nil {
		return nil, err
	}
	base := path.Base(m.at)
	if slices.ContainsFunc(des, func(d fs.DirEntry) bool { return d.Name() == base }) {
		return nil, &fs.PathError{Op: "readdir", Path: m.at, Err: errors.New("mount point already exists in the base tree")}
	}
	des = append(des, fs.FileInfoToDirEntry(fi))
	slices.SortFunc(des, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return des, nil
}

func (m *mountFS) ReadLink(name string) (string, error) {
	fsys, n := m.route(name)
	return fs.ReadLink(fsys, n)
}

func (m *mountFS) Lstat(name string) (fs.FileInfo, error) {
	fsys, n := m.route(name)
	fi, err := fs.Lstat(fsys, n)
	if err != nil {
		return nil, err
	}
	if name == m.at {
		return renamedInfo{FileInfo: fi, name: path.Base(m.at)}, nil
	}
	return fi, nil
}

type renamedInfo struct {
	fs.FileInfo
	name string
}

func (r renamedInfo) Name() string { return r.name }

type renamedFile struct {
	fs.File
	name string
}

func (r *renamedFile) Stat() (fs.FileInfo, error) {
	fi, err := r.File.Stat()
	if err != nil {
		return nil, err
	}
	return renamedInfo{FileInfo: fi, name: r.name}, nil
}
