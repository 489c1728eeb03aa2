package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
)

// ent describes one tar entry for tests.
type ent struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	uid, gid   int
	pax        map[string]string
}

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: time.Unix(1700000000, 0), PAXRecords: e.pax, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox makes base/{root,outside/sentinel}; it returns root and a checker
// that fails when anything outside root changed.
func sandbox(t testing.TB) (string, func()) {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	sentinel := filepath.Join(outside, "sentinel")
	if err := os.WriteFile(sentinel, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, func() {
		t.Helper()
		names, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) != 2 {
			t.Errorf("sandbox base has %d entries, want 2 (root, outside)", len(names))
		}
		out, _ := os.ReadDir(outside)
		if len(out) != 1 {
			t.Errorf("outside dir has %d entries, want 1", len(out))
		}
		var st unix.Stat_t
		if err := unix.Lstat(sentinel, &st); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
		if st.Nlink != 1 || st.Size != 4 || st.Mode&0o7777 != 0o644 {
			t.Errorf("sentinel changed: nlink=%d size=%d mode=%o", st.Nlink, st.Size, st.Mode)
		}
		if b, _ := os.ReadFile(sentinel); string(b) != "keep" {
			t.Errorf("sentinel content changed: %q", b)
		}
		fi, err := os.Lstat(outside)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("outside dir changed: %v %v", fi, err)
		}
		// No device nodes other than 0/0 whiteouts inside root.
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil {
				typ := st.Mode & unix.S_IFMT
				if (typ == unix.S_IFCHR && st.Rdev != 0) || typ == unix.S_IFBLK {
					t.Errorf("device node created: %s", p)
				}
			}
			return nil
		})
	}
}

func unpackBytes(t testing.TB, root string, data []byte, opts Options) (Stats, error) {
	t.Helper()
	r, err := Decompress(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return Unpack(context.Background(), r, root, opts)
}

func TestUnpackBasic(t *testing.T) {
	testhost.Root(t)
	root, check := sandbox(t)
	data := mkTar(t,
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o750},
		ent{name: "etc/passwd", body: "root:x:0:0::/root:/bin/sh\n", uid: 12, gid: 34},
		ent{name: "./bin/tool", body: "#!/bin/sh\n", mode: 0o4755},
		ent{name: "bin/link", typ: tar.TypeLink, link: "bin/tool"},
		ent{name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/busybox"},
		ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		ent{name: "x/attr", body: "a", pax: map[string]string{"SCHILY.xattr.user.foo": "bar", "SCHILY.xattr.trusted.overlay.redirect": "/x"}},
		ent{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		ent{name: "ro/file", body: "r"},
	)
	st, err := unpackBytes(t, root, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check()
	if st.Entries != 9 {
		t.Errorf("entries = %d", st.Entries)
	}
	tests := []struct {
		path string
		mode fs.FileMode
		uid  int
	}{
		{"etc", fs.ModeDir | 0o750, 0},
		{"etc/passwd", 0o644, 12},
		{"bin/tool", fs.ModeSetuid | 0o755, 0},
		{"bin", fs.ModeDir | 0o755, 0},
		{"run/fifo", fs.ModeNamedPipe | 0o600, 0},
		{"ro", fs.ModeDir | 0o555, 0},
	}
	for _, tc := range tests {
		fi, err := os.Lstat(filepath.Join(root, tc.path))
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
		if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != tc.uid {
			t.Errorf("%s: uid %d want %d", tc.path, uid, tc.uid)
		}
		if tc.path == "etc" && !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
			t.Errorf("etc mtime %v", fi.ModTime())
		}
	}
	a, _ := os.Stat(filepath.Join(root, "bin/tool"))
	b, _ := os.Stat(filepath.Join(root, "bin/link"))
	if !os.SameFile(a, b) {
		t.Error("hardlink not linked")
	}
	if l, _ := os.Readlink(filepath.Join(root, "bin/sh")); l != "/bin/busybox" {
		t.Errorf("symlink = %q", l)
	}
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(filepath.Join(root, "x/attr"), "user.foo", buf)
	if err == nil && string(buf[:n]) != "bar" {
		t.Errorf("user.foo = %q", buf[:n])
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "x/attr"), "trusted.overlay.redirect", buf); err == nil {
		t.Error("trusted.overlay.redirect xattr from layer was applied")
	}
}

func TestUnpackWhiteouts(t *testing.T) {
	testhost.Root(t)
	root, check := sandbox(t)
	data := mkTar(t,
		ent{name: "a/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "a/.wh..wh..opq"},
		ent{name: "a/keep", body: "k"},
		ent{name: "b/.wh.gone"},
		ent{name: ".wh..wh.plnk"},
	)
	st, err := unpackBytes(t, root, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check()
	if st.Whiteouts != 2 {
		t.Errorf("whiteouts = %d", st.Whiteouts)
	}
	buf := make([]byte, 4)
	n, err := unix.Lgetxattr(filepath.Join(root, "a"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr: %q %v", buf[:n], err)
	}
	var s unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "b/gone"), &s); err != nil {
		t.Fatal(err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != 0 {
		t.Errorf("whiteout is mode %o rdev %d", s.Mode, s.Rdev)
	}
	for _, n := range []string{"b/.wh.gone", ".wh..wh.plnk", "a/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(root, n)); err == nil {
			t.Errorf("%s was created", n)
		}
	}
}

// hostileCases are the adversarial layers; each must leave everything
// outside root untouched.
func hostileCases(t testing.TB) []struct {
	name    string
	data    []byte
	opts    Options
	wantErr error
	check   func(t *testing.T, root string, st Stats)
} {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		_, _ = w.Write(b)
		_ = w.Close()
		return buf.Bytes()
	}
	zeros := make([]byte, 8<<20)
	bomb := mkTar(t, ent{name: "zeros", body: string(zeros)})
	notExist := func(p string) func(t *testing.T, root string, st Stats) {
		return func(t *testing.T, root string, st Stats) {
			if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
				t.Errorf("%s exists", p)
			}
		}
	}
	return []struct {
		name    string
		data    []byte
		opts    Options
		wantErr error
		check   func(t *testing.T, root string, st Stats)
	}{
		{name: "dotdot", data: mkTar(t, ent{name: "../outside/sentinel", body: "pwned"}), wantErr: ErrHostile},
		{name: "dotdot-deep", data: mkTar(t, ent{name: "a/../../outside/x", body: "pwned"}), wantErr: ErrHostile},
		{name: "absolute", data: mkTar(t, ent{name: "/outside/abs", body: "in"}),
			check: func(t *testing.T, root string, st Stats) {
				if b, err := os.ReadFile(filepath.Join(root, "outside/abs")); err != nil || string(b) != "in" {
					t.Errorf("absolute path not clamped into root: %v", err)
				}
			}},
		{name: "symlink-dir-escape-relative", data: mkTar(t,
			ent{name: "evil", typ: tar.TypeSymlink, link: "../outside"},
			ent{name: "evil/sentinel", body: "pwned"}), wantErr: ErrHostile},
		{name: "symlink-dir-escape-existing", data: mkTar(t,
			ent{name: "outside/", typ: tar.TypeDir, mode: 0o700},
			ent{name: "evil", typ: tar.TypeSymlink, link: "../../outside"},
			ent{name: "evil/sentinel", body: "pwned"}),
			check: func(t *testing.T, root string, st Stats) {
				// RESOLVE_IN_ROOT clamps "../../outside" to root/outside.
				if b, err := os.ReadFile(filepath.Join(root, "outside/sentinel")); err != nil || string(b) != "pwned" {
					t.Errorf("write through symlink not clamped into root: %q %v", b, err)
				}
			}},
		{name: "symlink-dir-escape-absolute", data: mkTar(t,
			ent{name: "evil", typ: tar.TypeSymlink, link: "/"},
			ent{name: "evil/../outside/sentinel", body: "pwned"}), wantErr: nil},
		{name: "symlink-overwrite-final", data: mkTar(t,
			ent{name: "f", typ: tar.TypeSymlink, link: "../outside/sentinel"},
			ent{name: "f", body: "replaced"}),
			check: func(t *testing.T, root string, st Stats) {
				fi, err := os.Lstat(filepath.Join(root, "f"))
				if err != nil || !fi.Mode().IsRegular() {
					t.Errorf("f should be a regular file: %v %v", fi, err)
				}
			}},
		{name: "symlink-dangling-parent", data: mkTar(t,
			ent{name: "d", typ: tar.TypeSymlink, link: "../outside/newdir"},
			ent{name: "d/x", body: "pwned"}), wantErr: ErrHostile},
		{name: "hardlink-dotdot", data: mkTar(t,
			ent{name: "h", typ: tar.TypeLink, link: "../outside/sentinel"}), wantErr: ErrHostile},
		{name: "hardlink-absolute", data: mkTar(t,
			ent{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}), wantErr: unix.ENOENT, check: notExist("h")},
		{name: "hardlink-through-symlink", data: mkTar(t,
			ent{name: "s", typ: tar.TypeSymlink, link: "../outside"},
			ent{name: "h", typ: tar.TypeLink, link: "s/sentinel"}), wantErr: unix.ENOENT, check: notExist("h")},
		{name: "hardlink-to-symlink-is-symlink", data: mkTar(t,
			ent{name: "s", typ: tar.TypeSymlink, link: "/etc/shadow"},
			ent{name: "h", typ: tar.TypeLink, link: "s"}),
			check: func(t *testing.T, root string, st Stats) {
				fi, err := os.Lstat(filepath.Join(root, "h"))
				if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
					t.Errorf("h should be the symlink itself: %v %v", fi, err)
				}
			}},
		{name: "hardlink-dir", data: mkTar(t,
			ent{name: "d/", typ: tar.TypeDir, mode: 0o755},
			ent{name: "h", typ: tar.TypeLink, link: "d"}), wantErr: ErrHostile},
		{name: "device-nodes", data: mkTar(t,
			ent{name: "dev/sda", typ: tar.TypeBlock, mode: 0o666},
			ent{name: "dev/mem", typ: tar.TypeChar, mode: 0o666},
			ent{name: "ok", body: "x"}),
			check: func(t *testing.T, root string, st Stats) {
				if st.SkippedDevices != 2 {
					t.Errorf("skipped devices = %d", st.SkippedDevices)
				}
				notExist("dev/sda")(t, root, st)
				notExist("dev/mem")(t, root, st)
			}},
		{name: "setuid-userns", opts: Options{UserNS: true}, data: mkTar(t,
			ent{name: "su", body: "x", mode: 0o6755},
			ent{name: "cap", body: "y", mode: 0o755, pax: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}}),
			check: func(t *testing.T, root string, st Stats) {
				fi, err := os.Lstat(filepath.Join(root, "su"))
				if err != nil || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
					t.Errorf("setuid not stripped: %v %v", fi, err)
				}
				if _, err := unix.Lgetxattr(filepath.Join(root, "cap"), "security.capability", make([]byte, 64)); err == nil {
					t.Error("file capability kept in userns mode")
				}
				if st.Stripped != 2 {
					t.Errorf("stripped = %d", st.Stripped)
				}
			}},
		{name: "setuid-kept-without-userns", data: mkTar(t, ent{name: "su", body: "x", mode: 0o4755}),
			check: func(t *testing.T, root string, st Stats) {
				fi, err := os.Lstat(filepath.Join(root, "su"))
				if err != nil || fi.Mode()&fs.ModeSetuid == 0 {
					t.Errorf("setuid dropped without userns: %v %v", fi, err)
				}
			}},
		{name: "bomb-stream", opts: Options{MaxBytes: 1 << 20}, data: gz(bomb), wantErr: ErrLimit},
		{name: "bomb-entries", opts: Options{MaxEntries: 10}, data: func() []byte {
			var es []ent
			for i := 0; i < 50; i++ {
				es = append(es, ent{name: "f" + strings.Repeat("x", i), body: ""})
			}
			return mkTar(t, es...)
		}(), wantErr: ErrLimit},
		{name: "bomb-header-size", opts: Options{MaxBytes: 1 << 20}, data: func() []byte {
			// A header claiming 1 TiB with no data behind it.
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			_ = tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
			return buf.Bytes()
		}(), wantErr: ErrLimit},
		{name: "whiteout-dotdot", data: mkTar(t, ent{name: ".wh.."}), wantErr: ErrHostile},
		{name: "whiteout-escape", data: mkTar(t, ent{name: "../outside/.wh.sentinel"}), wantErr: ErrHostile},
		{name: "whiteout-through-symlink", data: mkTar(t,
			ent{name: "s", typ: tar.TypeSymlink, link: "../outside"},
			ent{name: "s/.wh.sentinel"}), wantErr: ErrHostile},
		{name: "opaque-through-symlink", data: mkTar(t,
			ent{name: "s", typ: tar.TypeSymlink, link: "/../outside"},
			ent{name: "s/.wh..wh..opq"}), wantErr: ErrHostile},
		{name: "dir-replaces-symlink", data: mkTar(t,
			ent{name: "s", typ: tar.TypeSymlink, link: "../outside"},
			ent{name: "s/", typ: tar.TypeDir, mode: 0o777}),
			check: func(t *testing.T, root string, st Stats) {
				fi, err := os.Lstat(filepath.Join(root, "s"))
				if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 {
					t.Errorf("s should be a 0777 dir: %v %v", fi, err)
				}
			}},
	}
}

func TestUnpackHostile(t *testing.T) {
	testhost.Root(t)
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			root, check := sandbox(t)
			st, err := unpackBytes(t, root, tc.data, tc.opts)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Fatalf("error = %v, want %v", err, tc.wantErr)
			}
			check()
			if tc.check != nil {
				tc.check(t, root, st)
			}
		})
	}
}

func TestDecompress(t *testing.T) {
	plain := mkTar(t, ent{name: "a", body: strings.Repeat("hello", 1000)})
	var gzb, zsb bytes.Buffer
	gw := gzip.NewWriter(&gzb)
	_, _ = gw.Write(plain)
	_ = gw.Close()
	zw, _ := zstd.NewWriter(&zsb)
	_, _ = zw.Write(plain)
	_ = zw.Close()
	for _, tc := range []struct {
		name string
		in   []byte
	}{{"plain", plain}, {"gzip", gzb.Bytes()}, {"zstd", zsb.Bytes()}, {"empty", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Decompress(bytes.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			want := plain
			if tc.in == nil {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      bool
	}{
		{"a/b", "a/b", false},
		{"./a//b/", "a/b", false},
		{"/etc/passwd", "etc/passwd", false},
		{"a/../b", "b", false},
		{"..", "", true},
		{"a/../../b", "", true},
		{"./", ".", false},
		{"/", ".", false},
		{"a\x00b", "", true},
	} {
		got, err := CleanPath(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("CleanPath(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/abs", "a/../../b", "./.", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := CleanPath(s)
		if err != nil {
			return
		}
		if p != "." && (strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../")) {
			t.Fatalf("CleanPath(%q) = %q escapes", s, p)
		}
	})
}

// FuzzUnpack feeds arbitrary (and seeded hostile) tar streams to Unpack and
// checks that nothing outside the target directory changes and no device
// node appears. Run as root for full coverage (chown, mknod).
func FuzzUnpack(f *testing.F) {
	for _, tc := range hostileCases(f) {
		if len(tc.data) < 1<<16 {
			f.Add(tc.data, tc.opts.UserNS)
		}
	}
	f.Add(mkTar(f, ent{name: "a/", typ: tar.TypeDir}, ent{name: "a/.wh..wh..opq"}, ent{name: "a/.wh.b"}), false)
	f.Fuzz(func(t *testing.T, data []byte, userns bool) {
		root, check := sandbox(t)
		r, err := Decompress(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer r.Close()
		_, _ = Unpack(context.Background(), r, root, Options{UserNS: userns, MaxBytes: 4 << 20, MaxEntries: 1000})
		check()
		if userns {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if fi, err := d.Info(); err == nil && fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
						t.Errorf("setuid/setgid survived in userns mode: %s", p)
					}
				}
				return nil
			})
		}
	})
}
