package rootfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/erofs/go-erofs"
)

var buildTime = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

var salt = []byte{0xca, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde}

func sampleTree() fstest.MapFS {
	return fstest.MapFS{
		".":                                    {Mode: fs.ModeDir | 0o755},
		"sbin":                                 {Mode: fs.ModeDir | 0o755},
		"sbin/init":                            {Mode: 0o755, Data: []byte("\x7fELF fake init")},
		"usr":                                  {Mode: fs.ModeDir | 0o755},
		"usr/lib":                              {Mode: fs.ModeDir | 0o755},
		"usr/lib/os-release":                   {Mode: 0o644, Data: []byte("ID=cairn\nVERSION_ID=1\n")},
		"usr/bin":                              {Mode: fs.ModeDir | 0o755},
		"usr/bin/suid":                         {Mode: fs.ModeSetuid | 0o4755&0o777, Data: []byte("s")},
		"usr/share/cairn/etc/hostname":         {Mode: 0o600, Data: []byte("box\n")},
		"etc":                                  {Mode: fs.ModeDir | 0o755},
		"etc/os-release":                       {Mode: fs.ModeSymlink | 0o777, Data: []byte("../usr/lib/os-release")},
		"tmp":                                  {Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		"lib/modules/6.1.0/kernel/fs/erofs.ko": {Mode: 0o644, Data: bytes.Repeat([]byte{1, 2, 3}, 5000)},
		"lib/modules/6.1.0/cairn.load":         {Mode: 0o644, Data: []byte("erofs\n")},
		"empty":                                {Mode: 0o644},
		"proc":                                 {Mode: fs.ModeDir | 0o555},
		"abs-link":                             {Mode: fs.ModeSymlink | 0o777, Data: []byte("/sbin/init")},
	}
}

func build(t *testing.T, src fs.FS) (string, Verity) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "root.img")
	v, err := Build(context.Background(), src, out, Options{BuildTime: buildTime, Salt: salt})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out, v
}

func fileSHA(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestBuildTreeMetadata(t *testing.T) {
	out, v := build(t, sampleTree())
	if v.HashOffset != v.DataBlocks*4096 || v.Salt != fmt.Sprintf("%x", salt) || len(v.RootHash) != 64 {
		t.Fatalf("bad verity info %+v", v)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatalf("erofs.Open: %v", err)
	}
	tests := []struct {
		path   string
		mode   fs.FileMode
		data   string
		target string
		nlink  int
	}{
		{".", fs.ModeDir | 0o755, "", "", 8},
		{"sbin/init", 0o755, "\x7fELF fake init", "", 1},
		{"usr/bin/suid", fs.ModeSetuid | 0o755, "s", "", 1},
		{"usr/share/cairn/etc/hostname", 0o600, "box\n", "", 1},
		{"usr/share", fs.ModeDir | 0o555, "", "", 3}, // implicit MapFS dirs are 0555
		{"etc/os-release", fs.ModeSymlink | 0o777, "", "../usr/lib/os-release", 1},
		{"abs-link", fs.ModeSymlink | 0o777, "", "/sbin/init", 1},
		{"tmp", fs.ModeDir | fs.ModeSticky | 0o777, "", "", 2},
		{"proc", fs.ModeDir | 0o555, "", "", 2},
		{"empty", 0o644, "", "", 1},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			fi, err := fs.Lstat(img, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			// go-erofs v0.3.1's FileInfo.Mode() carries raw S_IF* bits;
			// Stat.Mode is the proper fs.FileMode.
			st, ok := fi.Sys().(*erofs.Stat)
			if !ok {
				t.Fatalf("Sys() is %T", fi.Sys())
			}
			if st.Mode != tc.mode {
				t.Errorf("mode %v, want %v", st.Mode, tc.mode)
			}
			if st.UID != 0 || st.GID != 0 {
				t.Errorf("owner %d:%d, want 0:0", st.UID, st.GID)
			}
			if int64(st.Mtime) != buildTime.Unix() {
				t.Errorf("mtime %d, want %d", st.Mtime, buildTime.Unix())
			}
			if st.Nlink != tc.nlink {
				t.Errorf("nlink %d, want %d", st.Nlink, tc.nlink)
			}
			if tc.mode.IsRegular() {
				b, err := fs.ReadFile(img, tc.path)
				if err != nil || string(b) != tc.data {
					t.Errorf("data %q (%v), want %q", b, err, tc.data)
				}
			}
			if tc.target != "" {
				got, err := fs.ReadLink(img, tc.path)
				if err != nil || got != tc.target {
					t.Errorf("link %q (%v), want %q", got, err, tc.target)
				}
			}
		})
	}
}

func TestFsckErofsExtract(t *testing.T) {
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		t.Skip("fsck.erofs not installed")
	}
	out, v := build(t, sampleTree())
	// fsck.erofs must see only the erofs part; give it a copy without the tree.
	data := filepath.Join(t.TempDir(), "data.img")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, b[:v.HashOffset], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{data, out} {
		if res, err := exec.Command("fsck.erofs", img).CombinedOutput(); err != nil {
			t.Fatalf("fsck.erofs %s: %v: %s", img, err, res)
		}
	}
	dir := filepath.Join(t.TempDir(), "x")
	if res, err := exec.Command("fsck.erofs", "--extract="+dir, data).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs --extract: %v: %s", err, res)
	}
	src := sampleTree()
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		mf, ok := src[filepath.ToSlash(rel)]
		if !ok {
			if fi.IsDir() && fi.Mode().Perm() == 0o555 {
				return nil // implicit MapFS directory
			}
			return fmt.Errorf("unexpected %s (%v)", rel, fi.Mode())
		}
		// erofs-utils 1.5 chowns after chmod on extract, which drops
		// setuid/setgid; special bits are checked in TestBuildTreeMetadata.
		if fi.Mode().Type() != mf.Mode.Type() || fi.Mode().Perm() != mf.Mode.Perm() {
			t.Errorf("%s: extracted mode %v, want %v", rel, fi.Mode(), mf.Mode)
		}
		if os.Geteuid() == 0 {
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s: owner %d:%d", rel, st.Uid, st.Gid)
			}
		}
		switch {
		case fi.Mode().IsRegular():
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, mf.Data) {
				t.Errorf("%s: content differs (%v)", rel, err)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			got, err := os.Readlink(p)
			if err != nil || got != string(mf.Data) {
				t.Errorf("%s: link %q, want %q", rel, got, mf.Data)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("dump.erofs"); err != nil {
		return
	}
	for _, c := range []struct{ path, want string }{
		{"/sbin/init", "Access: 0755/rwxr-xr-x"},
		{"/usr/share/cairn/etc/hostname", "Access: 0600/rw-------"},
		{"/proc", "Access: 0555/r-xr-xr-x"},
	} {
		res, err := exec.Command("dump.erofs", "--path="+c.path, data).CombinedOutput()
		if err != nil {
			t.Fatalf("dump.erofs --path=%s: %v: %s", c.path, err, res)
		}
		if !strings.Contains(string(res), "Uid: 0   Gid: 0") || !strings.Contains(string(res), c.want) {
			t.Errorf("dump.erofs %s: want 0:0 and %q:\n%s", c.path, c.want, res)
		}
	}
}

func TestVeritysetup(t *testing.T) {
	out, v := build(t, sampleTree())
	if err := Verify(out, v); err != nil {
		t.Fatalf("go-dmverity Verify: %v", err)
	}
	if _, err := exec.LookPath("veritysetup"); err != nil {
		t.Skip("veritysetup not installed")
	}
	verify := func(img string) error {
		args := []string{"verify", "--no-superblock", "--hash=sha256",
			"--data-block-size=4096", "--hash-block-size=4096",
			"--data-blocks=" + strconv.FormatUint(v.DataBlocks, 10),
			"--hash-offset=" + strconv.FormatUint(v.HashOffset, 10),
			"--salt=" + v.Salt, img, img, v.RootHash}
		res, err := exec.Command("veritysetup", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, res)
		}
		return nil
	}
	if err := verify(out); err != nil {
		t.Fatalf("veritysetup verify: %v", err)
	}
	tests := []struct {
		name string
		off  int64
	}{
		{"data block 0", 1500},
		{"last data block", int64(v.HashOffset) - 1},
		{"hash tree", int64(v.HashOffset) + 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			b[tc.off] ^= 0x01
			bad := filepath.Join(t.TempDir(), "bad.img")
			if err := os.WriteFile(bad, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := verify(bad); err == nil {
				t.Fatal("veritysetup verify accepted a corrupted image")
			}
			if err := Verify(bad, v); err == nil {
				t.Fatal("Verify accepted a corrupted image")
			}
		})
	}
}

func TestReproducible(t *testing.T) {
	a, va := build(t, sampleTree())
	b, vb := build(t, sampleTree())
	if va != vb || fileSHA(t, a) != fileSHA(t, b) {
		t.Fatalf("not reproducible: %+v vs %+v", va, vb)
	}
	// A different salt changes the root hash but not the data.
	out := filepath.Join(t.TempDir(), "c.img")
	vc, err := Build(context.Background(), sampleTree(), out, Options{BuildTime: buildTime, Salt: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if vc.RootHash == va.RootHash || vc.DataBlocks != va.DataBlocks {
		t.Fatalf("salt not applied: %+v vs %+v", vc, va)
	}
}

// TestDirFSLazyOpen builds from a real directory with more files than the
// file descriptor limit allows open at once.
func TestDirFSLazyOpen(t *testing.T) {
	dir := t.TempDir()
	const n = 400
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%03d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Repeat("x", i+1)), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("d00/f000", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 100
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	out, v := build(t, os.DirFS(dir))
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if err := Verify(out, v); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(img, "d19/f399")
	if err != nil || len(b) != n {
		t.Fatalf("d19/f399: %d bytes, %v", len(b), err)
	}
	fi, err := fs.Stat(img, "d05/f005")
	if err != nil || fi.Sys().(*erofs.Stat).Mode != 0o640 || fi.Sys().(*erofs.Stat).UID != 0 {
		t.Fatalf("d05/f005: %v %v", fi, err)
	}
	if tgt, err := fs.ReadLink(img, "link"); err != nil || tgt != "d00/f000" {
		t.Fatalf("link: %q %v", tgt, err)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name string
		src  fs.FS
		o    Options
		want string
	}{
		{"fifo", fstest.MapFS{"p": {Mode: fs.ModeNamedPipe}}, Options{BuildTime: buildTime}, "unsupported file type"},
		{"device", fstest.MapFS{"dev/null": {Mode: fs.ModeDevice | fs.ModeCharDevice}}, Options{BuildTime: buildTime}, "unsupported file type"},
		{"salt too long", fstest.MapFS{"a": {}}, Options{BuildTime: buildTime, Salt: make([]byte, 300)}, "salt"},
		{"missing root", os.DirFS("/nonexistent/dir"), Options{BuildTime: buildTime}, "walk source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(context.Background(), tc.src, filepath.Join(t.TempDir(), "x.img"), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Build(ctx, sampleTree(), filepath.Join(t.TempDir(), "x.img"), Options{BuildTime: buildTime}); err == nil {
		t.Fatal("Build ignored a cancelled context")
	}
}

// TestBuild30MB measures a root of about the production size.
func TestBuild30MB(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	src := fstest.MapFS{}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		b := make([]byte, 100_000)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		src[fmt.Sprintf("lib/modules/k/kernel/m%03d/mod%03d.ko", i%30, i)] = &fstest.MapFile{Mode: 0o644, Data: b}
	}
	start := time.Now()
	out, v := build(t, src)
	el := time.Since(start)
	t.Logf("30 MB root: erofs + verity in %v (%d data blocks)", el, v.DataBlocks)
	if err := Verify(out, v); err != nil {
		t.Fatal(err)
	}
}

// TestOwner: an entry whose FileInfo.Sys() is an Owner keeps that owner
// and its extended attributes; every other entry, including a host file's
// *syscall.Stat_t, is 0:0 without any.
func TestOwner(t *testing.T) {
	src := fstest.MapFS{
		"img/app":    {Data: []byte("a"), Mode: fs.ModeSetuid | 0o755, Sys: Owner{UID: 1000, GID: 1001}},
		"img/ping":   {Data: []byte("p"), Mode: 0o755, Sys: Owner{Xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20", "user.a": "b"}}},
		"img/data":   {Mode: fs.ModeDir | 0o750, Sys: Owner{UID: 33, GID: 34, Xattrs: map[string]string{"user.d": "1"}}},
		"img/link":   {Data: []byte("app"), Mode: fs.ModeSymlink | 0o777, Sys: Owner{UID: 7, GID: 8}},
		"plain":      {Data: []byte("p"), Mode: 0o644},
		"other-sys":  {Data: []byte("o"), Mode: 0o644, Sys: &Owner{UID: 5, GID: 5}},
		"img/pgroup": {Data: []byte("g"), Mode: 0o644, Sys: Owner{GID: 65534}},
	}
	out, _ := build(t, src)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path     string
		uid, gid uint32
		xattrs   map[string]string
	}{
		{"img/app", 1000, 1001, nil}, {"img/data", 33, 34, map[string]string{"user.d": "1"}}, {"img/link", 7, 8, nil},
		{"plain", 0, 0, nil}, {"other-sys", 0, 0, nil}, {"img/pgroup", 0, 65534, nil}, {"img", 0, 0, nil},
		{"img/ping", 0, 0, map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20", "user.a": "b"}},
	}
	for _, tc := range tests {
		fi, err := fs.Lstat(img, tc.path)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		st, ok := fi.Sys().(*erofs.Stat)
		if !ok || st.UID != tc.uid || st.GID != tc.gid || !maps.Equal(st.Xattrs, tc.xattrs) {
			t.Errorf("%s: owner %+v, want %d:%d, xattrs %q", tc.path, fi.Sys(), tc.uid, tc.gid, tc.xattrs)
		}
	}
}
