package initramfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

var mtime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func sampleEntries(t *testing.T) []Entry {
	src := filepath.Join(t.TempDir(), "init.bin")
	if err := os.WriteFile(src, []byte("#!init\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []Entry{
		{Path: "/init", Kind: File, Mode: 0o755, Source: src},
		Console, Null,
		{Path: "proc", Kind: Dir}, {Path: "sys", Kind: Dir}, {Path: "run", Kind: Dir}, {Path: "sysroot", Kind: Dir},
		{Path: "lib/modules/6.1.0/kernel/fs/erofs/erofs.ko", Kind: File, Data: bytes.Repeat([]byte{0x7f}, 1001)},
		{Path: "lib/modules/6.1.0/cairn.load", Kind: File, Data: []byte("erofs\ndm-verity\n")},
		{Path: "bin/sh", Kind: Symlink, Target: "/init"},
	}
}

type rec struct {
	name                      string
	mode, uid, gid, nlink, mt uint64
	size, ino, rmajor, rminor uint64
	data                      []byte
}

// parseNewc is a strict test-only newc reader.
func parseNewc(t *testing.T, b []byte) []rec {
	t.Helper()
	var out []rec
	off := 0
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		f := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		r := rec{ino: f(0), mode: f(1), uid: f(2), gid: f(3), nlink: f(4), mt: f(5), size: f(6), rmajor: f(9), rminor: f(10)}
		nameLen := int(f(11))
		off += 110
		r.name = string(b[off : off+nameLen-1])
		off = (off + nameLen + 3) &^ 3
		r.data = b[off : off+int(r.size)]
		off = (off + int(r.size) + 3) &^ 3
		if r.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d trailing bytes", len(b)-off)
			}
			return out
		}
		out = append(out, r)
	}
}

func TestWriteCPIO(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteCPIO(context.Background(), &buf, sampleEntries(t), mtime); err != nil {
		t.Fatal(err)
	}
	recs := parseNewc(t, buf.Bytes())
	want := []struct {
		name       string
		mode       uint64
		size       int
		rmaj, rmin uint64
		data       string
	}{
		{"bin", 0o40755, 0, 0, 0, ""},
		{"bin/sh", 0o120777, 5, 0, 0, "/init"},
		{"dev", 0o40755, 0, 0, 0, ""},
		{"dev/console", 0o20600, 0, 5, 1, ""},
		{"dev/null", 0o20666, 0, 1, 3, ""},
		{"init", 0o100755, 7, 0, 0, "#!init\n"},
		{"lib", 0o40755, 0, 0, 0, ""},
		{"lib/modules", 0o40755, 0, 0, 0, ""},
		{"lib/modules/6.1.0", 0o40755, 0, 0, 0, ""},
		{"lib/modules/6.1.0/cairn.load", 0o100644, 16, 0, 0, "erofs\ndm-verity\n"},
		{"lib/modules/6.1.0/kernel", 0o40755, 0, 0, 0, ""},
		{"lib/modules/6.1.0/kernel/fs", 0o40755, 0, 0, 0, ""},
		{"lib/modules/6.1.0/kernel/fs/erofs", 0o40755, 0, 0, 0, ""},
		{"lib/modules/6.1.0/kernel/fs/erofs/erofs.ko", 0o100644, 1001, 0, 0, ""},
		{"proc", 0o40755, 0, 0, 0, ""},
		{"run", 0o40755, 0, 0, 0, ""},
		{"sys", 0o40755, 0, 0, 0, ""},
		{"sysroot", 0o40755, 0, 0, 0, ""},
	}
	if len(recs) != len(want) {
		for _, r := range recs {
			t.Logf("%s %o", r.name, r.mode)
		}
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	inos := map[uint64]bool{}
	for i, w := range want {
		r := recs[i]
		if r.name != w.name || r.mode != w.mode || int(r.size) != w.size || r.rmajor != w.rmaj || r.rminor != w.rmin {
			t.Errorf("record %d: got %s %o size %d dev %d,%d; want %s %o size %d dev %d,%d",
				i, r.name, r.mode, r.size, r.rmajor, r.rminor, w.name, w.mode, w.size, w.rmaj, w.rmin)
		}
		if w.data != "" && string(r.data) != w.data {
			t.Errorf("%s: data %q, want %q", w.name, r.data, w.data)
		}
		if r.uid != 0 || r.gid != 0 || r.mt != uint64(mtime.Unix()) {
			t.Errorf("%s: uid %d gid %d mtime %d", r.name, r.uid, r.gid, r.mt)
		}
		if inos[r.ino] || r.ino == 0 {
			t.Errorf("%s: inode %d reused", r.name, r.ino)
		}
		inos[r.ino] = true
	}
}

func TestWriteZstdCpioTool(t *testing.T) {
	var a, b bytes.Buffer
	ctx := context.Background()
	if err := Write(ctx, &a, sampleEntries(t), mtime); err != nil {
		t.Fatal(err)
	}
	if err := Write(ctx, &b, sampleEntries(t), mtime); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("output not reproducible")
	}
	d, err := zstd.NewReader(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var plain bytes.Buffer
	if _, err := plain.ReadFrom(d); err != nil {
		t.Fatalf("zstd decode: %v", err)
	}
	parseNewc(t, plain.Bytes())

	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("zstd not installed")
	}
	f := filepath.Join(t.TempDir(), "initrd.zst")
	if err := os.WriteFile(f, a.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", "zstd -dc "+f+" | cpio -itv --quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("zstd | cpio: %v: %s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"crw-------   1 root     root       5,   1 Jan  2  2026 dev/console",
		"crw-rw-rw-   1 root     root       1,   3 Jan  2  2026 dev/null",
		"drwxr-xr-x   2 root     root            0 Jan  2  2026 lib/modules",
		"-rwxr-xr-x   1 root     root            7 Jan  2  2026 init",
		"lrwxrwxrwx   1 root     root            5 Jan  2  2026 bin/sh -> /init",
	} {
		if !strings.Contains(listing, want+"\n") {
			t.Errorf("cpio listing lacks %q:\n%s", want, listing)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{"traversal", []Entry{{Path: "../etc/passwd", Kind: File}}, "escapes"},
		{"unclean", []Entry{{Path: "a//b", Kind: File}}, "not clean"},
		{"dotdot inside", []Entry{{Path: "a/../../b", Kind: File}}, "not clean"},
		{"root", []Entry{{Path: "/", Kind: Dir}}, "empty path"},
		{"duplicate", []Entry{{Path: "a", Kind: Dir}, {Path: "/a", Kind: Dir}}, "duplicate"},
		{"parent is file", []Entry{{Path: "a", Kind: File}, {Path: "a/b", Kind: File}}, "not a directory"},
		{"empty symlink", []Entry{{Path: "a", Kind: Symlink}}, "no target"},
		{"bad kind", []Entry{{Path: "a", Kind: Kind(42)}}, "unsupported kind"},
		{"missing source", []Entry{{Path: "a", Kind: File, Source: "/nonexistent/x"}}, "read /nonexistent/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteCPIO(context.Background(), &bytes.Buffer{}, tc.entries, mtime)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}
