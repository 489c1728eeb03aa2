package deb

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	dt "cairn.dev/cairn/buildroot/internal/debtest"
)

// tree lists dir as "path type[:content|->target]" lines.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" ->"+l)
		case d.IsDir():
			out = append(out, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			fi, _ := d.Info()
			out = append(out, rel+" "+fi.Mode().Perm().String()+" "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// sandbox returns dest (inside a parent with an "outside" file) and a
// function checking that nothing but dest appeared in the parent and that
// "outside" was not touched.
func sandbox(t *testing.T) (string, func()) {
	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(parent, "outside")
	if err := os.WriteFile(outside, []byte("orig"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dest, func() {
		t.Helper()
		ents, _ := os.ReadDir(parent)
		if len(ents) != 2 {
			t.Errorf("parent has %d entries, want dest and outside only", len(ents))
		}
		if b, _ := os.ReadFile(outside); string(b) != "orig" {
			t.Errorf("file outside dest was modified: %q", b)
		}
	}
}

func TestExtract(t *testing.T) {
	withMode := func(e dt.Entry, mode int64) dt.Entry { e.Mode = mode; return e }
	dev := func(name string, typ byte) dt.Entry {
		return dt.Entry{Header: tar.Header{Typeflag: typ, Name: name, Mode: 0o600, Devmajor: 1, Devminor: 3}}
	}
	tests := []struct {
		name    string
		suffix  string
		entries []dt.Entry
		opt     Options
		want    []string // tree after extraction (checked on success)
		wantErr string
	}{
		{
			name:   "all types xz",
			suffix: ".xz",
			entries: []dt.Entry{dt.Dir("./"), dt.Dir("./usr/"), dt.File("./usr/a", "A"), dt.Symlink("./usr/l", "a"),
				dt.Symlink("./usr/abs", "/etc/passwd"), dt.Hardlink("./usr/h", "./usr/a"), dev("./dev-null", tar.TypeChar),
				dev("./blk", tar.TypeBlock), dev("./fifo", tar.TypeFifo)},
			want: []string{"usr/", "usr/a -rw-r--r-- A", "usr/abs ->/etc/passwd", "usr/h -rw-r--r-- A", "usr/l ->a"},
		},
		{name: "zstd", suffix: ".zst", entries: []dt.Entry{dt.File("./f", "zz")}, want: []string{"f -rw-r--r-- zz"}},
		{name: "gzip", suffix: ".gz", entries: []dt.Entry{dt.File("./f", "gg")}, want: []string{"f -rw-r--r-- gg"}},
		{name: "uncompressed", suffix: "", entries: []dt.Entry{dt.File("./f", "tt")}, want: []string{"f -rw-r--r-- tt"}},
		{name: "implicit parents", suffix: ".gz", entries: []dt.Entry{dt.File("a/b/c", "x")}, want: []string{"a/", "a/b/", "a/b/c -rw-r--r-- x"}},
		{name: "setuid stripped", suffix: ".gz", entries: []dt.Entry{withMode(dt.File("./s", "x"), 0o4755)}, want: []string{"s -rwxr-xr-x x"}},
		{name: "read-only file", suffix: ".gz", entries: []dt.Entry{withMode(dt.File("./r", "x"), 0o444)}, want: []string{"r -r--r--r-- x"}},
		{
			name:    "include patterns",
			suffix:  ".gz",
			entries: []dt.Entry{dt.File("./boot/vmlinuz-1", "k"), dt.File("./boot/config-1", "c"), dt.File("./lib/modules/1/a.ko", "m"), dt.File("./usr/share/doc/x", "d")},
			opt:     Options{Include: []string{"boot/vmlinuz-*", "lib/modules"}},
			want:    []string{"boot/", "boot/vmlinuz-1 -rw-r--r-- k", "lib/", "lib/modules/", "lib/modules/1/", "lib/modules/1/a.ko -rw-r--r-- m"},
		},
		{name: "later entry replaces file", suffix: ".gz", entries: []dt.Entry{dt.File("f", "1"), dt.File("f", "2")}, want: []string{"f -rw-r--r-- 2"}},
		{
			name:    "file replaces symlink without writing through it",
			suffix:  ".gz",
			entries: []dt.Entry{dt.Symlink("l", "../outside"), dt.File("l", "new")},
			want:    []string{"l -rw-r--r-- new"},
		},
		// Hostile inputs.
		{name: "dotdot", suffix: ".gz", entries: []dt.Entry{dt.File("../outside", "x")}, wantErr: `tar entry "../outside" at decompressed offset 0: path contains ".."`},
		{name: "inner dotdot", suffix: ".gz", entries: []dt.Entry{dt.File("./a/../../outside", "x")}, wantErr: `path contains ".."`},
		{name: "harmless-looking dotdot", suffix: ".gz", entries: []dt.Entry{dt.File("a/../b", "x")}, wantErr: `path contains ".."`},
		{name: "absolute", suffix: ".gz", entries: []dt.Entry{dt.File("/etc/evil", "x")}, wantErr: "absolute path"},
		{name: "write through escaping symlink", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", ".."), dt.File("l/outside", "x")}, wantErr: `tar entry "l/outside" at decompressed offset 512: refusing to write through symlink "l"`},
		{name: "write through absolute symlink", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", "/tmp"), dt.File("l/x", "x")}, wantErr: `refusing to write through symlink "l"`},
		{name: "write through inner symlink", suffix: ".gz", entries: []dt.Entry{dt.Dir("d"), dt.Symlink("l", "d"), dt.File("l/x", "x")}, wantErr: `refusing to write through symlink "l"`},
		{name: "mkdir through symlink", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", ".."), dt.Dir("l/sub")}, wantErr: `refusing to write through symlink "l"`},
		{name: "dir over symlink", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", ".."), dt.Dir("l")}, wantErr: "collides with an existing non-directory"},
		{name: "file over dir", suffix: ".gz", entries: []dt.Entry{dt.Dir("d"), dt.File("d", "x")}, wantErr: "target exists as a directory"},
		{name: "parent is file", suffix: ".gz", entries: []dt.Entry{dt.File("f", "x"), dt.File("f/g", "x")}, wantErr: `parent "f" is not a directory`},
		{name: "hardlink outside", suffix: ".gz", entries: []dt.Entry{dt.Hardlink("h", "../outside")}, wantErr: `hardlink target "../outside": invalid`},
		{name: "hardlink absolute", suffix: ".gz", entries: []dt.Entry{dt.Hardlink("h", "/etc/passwd")}, wantErr: "absolute path"},
		{name: "hardlink to symlink", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", "../outside"), dt.Hardlink("h", "l")}, wantErr: `hardlink target "l" is not a regular file`},
		{name: "hardlink via symlinked dir", suffix: ".gz", entries: []dt.Entry{dt.Dir("d"), dt.File("d/f", "x"), dt.Symlink("l", "d"), dt.Hardlink("h", "l/f")}, wantErr: `refusing to write through symlink "l"`},
		{name: "hardlink missing", suffix: ".gz", entries: []dt.Entry{dt.Hardlink("h", "nope")}, wantErr: `hardlink target "nope"`},
		{name: "empty symlink target", suffix: ".gz", entries: []dt.Entry{dt.Symlink("l", "")}, wantErr: "empty or NUL-containing target"},
		{name: "file over budget", suffix: ".gz", entries: []dt.Entry{dt.File("big", strings.Repeat("x", 5000))}, opt: Options{MaxBytes: 4096}, wantErr: "size limit exceeded"},
		{name: "stream over budget", suffix: ".gz", entries: []dt.Entry{dt.File("skipped", strings.Repeat("x", 1<<20))}, opt: Options{MaxBytes: 64 << 10, Include: []string{"nothing"}}, wantErr: "decompressed data.tar exceeds 65536 bytes"},
		{name: "too many entries", suffix: ".gz", entries: []dt.Entry{dt.Dir("a"), dt.Dir("b"), dt.Dir("c")}, opt: Options{MaxEntries: 2}, wantErr: "more than 2 tar entries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest, check := sandbox(t)
			defer check()
			res, err := Extract(context.Background(), bytes.NewReader(dt.Deb(t, tc.suffix, tc.entries...)), dest, tc.opt)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), `member "data.tar`+tc.suffix+`"`) {
					t.Errorf("error %q does not name the member", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tree(t, dest); strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if tc.name == "all types xz" && (res.Files != 1 || res.Hardlinks != 1 || res.Symlinks != 2 || len(res.Skipped) != 3) {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

func TestExtractBadPackages(t *testing.T) {
	good := dt.Deb(t, ".gz", dt.File("./f", strings.Repeat("data", 1000)))
	control := dt.Member{Name: "control.tar.gz", Data: dt.Compress(t, ".gz", dt.Tar(t, dt.File("control", "x")))}
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"not ar", []byte("hello world, this is no deb"), "bad magic"},
		{"no data", dt.Ar(dt.Member{Name: "debian-binary", Data: []byte("2.0\n")}, control), "no data.tar member"},
		{"data first", dt.Ar(dt.Member{Name: "data.tar", Data: dt.Tar(t)}), "comes before debian-binary"},
		{"bad version", dt.Ar(dt.Member{Name: "debian-binary", Data: []byte("3.0\n")}), "unsupported format version"},
		{"bzip2", dt.Ar(dt.Member{Name: "debian-binary", Data: []byte("2.0\n")}, dt.Member{Name: "data.tar.bz2", Data: []byte("BZh")}), `unsupported compression ".bz2"`},
		{"bad xz", dt.Ar(dt.Member{Name: "debian-binary", Data: []byte("2.0\n")}, dt.Member{Name: "data.tar.xz", Data: []byte("nope")}), `member "data.tar.xz" at offset 72: xz header`},
		{"garbage tar", dt.Ar(dt.Member{Name: "debian-binary", Data: []byte("2.0\n")}, dt.Member{Name: "data.tar", Data: bytes.Repeat([]byte{'x'}, 1024)}), "tar header at decompressed offset 0"},
		{"truncated data member", good[:len(good)-40], `member "data.tar.gz"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest, check := sandbox(t)
			defer check()
			_, err := Extract(context.Background(), bytes.NewReader(tc.in), dest, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestExtractTruncatedEverywhere(t *testing.T) {
	for _, suffix := range []string{"", ".gz", ".xz", ".zst"} {
		good := dt.Deb(t, suffix, dt.Dir("./d"), dt.File("./d/f", strings.Repeat("0123456789", 300)))
		for n := 0; n < len(good); n += 7 {
			dest := t.TempDir()
			if _, err := Extract(context.Background(), bytes.NewReader(good[:n]), dest, Options{}); err == nil {
				t.Fatalf("%s cut at %d of %d: no error", suffix, n, len(good))
			}
		}
	}
}

func TestExtractCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Extract(ctx, bytes.NewReader(dt.Deb(t, ".gz", dt.File("f", "x"))), t.TempDir(), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestExtractBadInclude(t *testing.T) {
	for _, p := range []string{"[", "/abs", ""} {
		if _, err := Extract(context.Background(), bytes.NewReader(nil), t.TempDir(), Options{Include: []string{p}}); err == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(dt.Deb(f, ".gz", dt.Dir("./d"), dt.File("./d/f", "x"), dt.Symlink("./d/l", "../.."), dt.Hardlink("./h", "./d/f")))
	f.Add(dt.Deb(f, "", dt.Symlink("l", "/"), dt.File("l/etc/x", "x")))
	f.Add(dt.Deb(f, ".zst", dt.File("a", "b")))
	f.Add(dt.Deb(f, ".xz", dt.File("a", "b")))
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "dest")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		_, _ = Extract(context.Background(), bytes.NewReader(b), dest, Options{MaxBytes: 1 << 20, MaxEntries: 1000})
		ents, err := os.ReadDir(parent)
		if err != nil || len(ents) != 1 {
			t.Fatalf("extraction escaped dest: %v %v", ents, err)
		}
	})
}
