package disk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"cairn.dev/cairn/images/esp"
)

var mtime = time.Date(2026, 7, 8, 9, 10, 12, 0, time.UTC)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func espFiles() []esp.File {
	return []esp.File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: randBytes(140000, 1)},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\n")},
		{Path: "EFI/Linux/cairn-1.0+3.efi", Data: randBytes(2<<20, 2)},
	}
}

func buildDisk(t *testing.T, rootSize int) (string, []byte, Layout) {
	t.Helper()
	dir := t.TempDir()
	root := randBytes(rootSize, 3)
	rootPath := filepath.Join(dir, "root.img")
	if err := os.WriteFile(rootPath, root, 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "disk.img")
	l, err := Build(context.Background(), img, Options{OSName: "cairn-test", ESPFiles: espFiles(), RootA: rootPath, MTime: mtime})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return img, root, l
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// extract copies [off, off+size) of img to a new sparse temp file, copying
// only the data ranges.
func extract(t *testing.T, img string, off, size int64) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), "part.img")
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(size); err != nil {
		t.Fatal(err)
	}
	end := off + size
	for pos := off; pos < end; {
		d, err := seekData(in, pos)
		if err != nil {
			t.Fatal(err)
		}
		if d < 0 || d >= end {
			break
		}
		h, err := seekHole(in, d)
		if err != nil {
			t.Fatal(err)
		}
		h = min(h, end)
		if _, err := io.Copy(io.NewOffsetWriter(out, d-off), io.NewSectionReader(in, d, h-d)); err != nil {
			t.Fatal(err)
		}
		pos = h
	}
	return p
}

func TestLayout(t *testing.T) {
	l := NewLayout("cairn-test")
	want := []struct {
		label, typ string
		off, size  int64
	}{
		{"ESP", TypeESP, 1 << 20, 256 << 20},
		{"ROOT-A", TypeRootX8664, 257 << 20, 1 << 30},
		{"ROOT-B", TypeRootX8664, 1281 << 20, 1 << 30},
		{"STATE", TypeVar, 2305 << 20, 256 << 20},
	}
	if len(l.Partitions) != len(want) || l.Size != 2562<<20 {
		t.Fatalf("layout %+v", l)
	}
	seen := map[string]bool{l.DiskGUID: true}
	for i, w := range want {
		p := l.Partitions[i]
		if p.Number != i+1 || p.Label != w.label || p.Type != w.typ || p.Offset != w.off || p.Size != w.size {
			t.Errorf("partition %d = %+v, want %+v", i+1, p, w)
		}
		u, err := uuid.Parse(p.PartUUID)
		if err != nil || u.Version() != 8 || u.Variant() != uuid.RFC4122 || p.PartUUID != strings.ToLower(p.PartUUID) {
			t.Errorf("%s: PARTUUID %q not a lower-case v8 UUID (%v)", p.Label, p.PartUUID, err)
		}
		if seen[p.PartUUID] {
			t.Errorf("%s: duplicate GUID", p.Label)
		}
		seen[p.PartUUID] = true
	}
	if !reflect.DeepEqual(l, NewLayout("cairn-test")) {
		t.Error("layout not deterministic")
	}
	if NewLayout("other-os").Partitions[1].PartUUID == l.Partitions[1].PartUUID {
		t.Error("PARTUUID does not depend on the OS name")
	}
	if p, ok := l.Partition("STATE"); !ok || p.Number != 4 {
		t.Error("Partition(STATE) lookup failed")
	}
}

func TestBuild(t *testing.T) {
	img, root, l := buildDisk(t, 3<<20+123)
	st, err := os.Stat(img)
	if err != nil || st.Size() != l.Size {
		t.Fatalf("image size %d, want %d (%v)", st.Size(), l.Size, err)
	}
	got, err := ReadLayout(img)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, l) {
		t.Errorf("ReadLayout = %+v\nwant %+v", got, l)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	t.Run("ESP", func(t *testing.T) {
		p, _ := l.Partition(LabelESP)
		for _, ef := range espFiles() {
			b, err := esp.ReadFile(f, p.Offset, p.Size, ef.Path)
			if err != nil || !bytes.Equal(b, ef.Data) {
				t.Errorf("%s: %v", ef.Path, err)
			}
		}
		if _, err := exec.LookPath("fsck.fat"); err == nil {
			run(t, "fsck.fat", "-n", extract(t, img, p.Offset, p.Size))
		}
	})
	t.Run("ROOT-A", func(t *testing.T) {
		p, _ := l.Partition(LabelRootA)
		b := make([]byte, len(root)+4096)
		if _, err := f.ReadAt(b, p.Offset); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:len(root)], root) || !bytes.Equal(b[len(root):], make([]byte, 4096)) {
			t.Error("ROOT-A payload differs")
		}
	})
	t.Run("ROOT-B sparse zero", func(t *testing.T) {
		p, _ := l.Partition(LabelRootB)
		d, err := seekData(f, p.Offset)
		if err != nil {
			t.Fatal(err)
		}
		if d >= 0 && d < p.Offset+p.Size {
			t.Errorf("ROOT-B has data at %d", d)
		}
	})
	t.Run("sgdisk", func(t *testing.T) {
		if _, err := exec.LookPath("sgdisk"); err != nil {
			t.Skip("sgdisk not installed")
		}
		if out := run(t, "sgdisk", "-v", img); !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v:\n%s", out)
		}
		out := run(t, "sgdisk", "-p", img)
		if !strings.Contains(strings.ToLower(out), "disk identifier (guid): "+l.DiskGUID) {
			t.Errorf("disk GUID missing:\n%s", out)
		}
		for _, re := range []string{
			`(?m)^\s+1\s+2048\s+526335\s+256\.0 MiB\s+EF00\s+ESP$`,
			`(?m)^\s+2\s+526336\s+2623487\s+1024\.0 MiB\s+8304\s+ROOT-A$`,
			`(?m)^\s+3\s+2623488\s+4720639\s+1024\.0 MiB\s+8304\s+ROOT-B$`,
			`(?m)^\s+4\s+4720640\s+5244927\s+256\.0 MiB\s+8310\s+STATE$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("sgdisk -p does not match %s:\n%s", re, out)
			}
		}
		for _, p := range l.Partitions {
			info := run(t, "sgdisk", "-i", fmt.Sprint(p.Number), img)
			if !strings.Contains(strings.ToLower(info), "partition unique guid: "+p.PartUUID) {
				t.Errorf("partition %d GUID:\n%s", p.Number, info)
			}
		}
	})
	t.Run("STATE ext4", func(t *testing.T) {
		if _, err := exec.LookPath("e2fsck"); err != nil {
			t.Skip("e2fsprogs not installed")
		}
		p, _ := l.Partition(LabelState)
		part := extract(t, img, p.Offset, p.Size)
		run(t, "e2fsck", "-fn", part)
		hdr := run(t, "dumpe2fs", "-h", part)
		for _, want := range []string{
			"Filesystem volume name:   STATE",
			"Filesystem UUID:          " + DeriveUUID("cairn-test", "STATE-fs"),
			"Block size:               4096",
			"Directory Hash Seed:      " + DeriveUUID("cairn-test", "STATE-hash-seed"),
			"Filesystem created:       Wed Jul  8 09:10:12 2026",
			"Last mount time:          n/a",
		} {
			if !strings.Contains(hdr, want+"\n") {
				t.Errorf("dumpe2fs lacks %q:\n%s", want, hdr)
			}
		}
		if strings.Contains(hdr, "resize_inode") || strings.Contains(hdr, "metadata_csum") {
			t.Errorf("unexpected features:\n%s", hdr)
		}
		// Growing at first boot: offline resize2fs is the proxy.
		if _, err := exec.LookPath("resize2fs"); err != nil {
			t.Skip("resize2fs not installed")
		}
		if err := os.Truncate(part, 20<<30); err != nil {
			t.Fatal(err)
		}
		run(t, "resize2fs", part)
		run(t, "e2fsck", "-fn", part)
		if hdr := run(t, "dumpe2fs", "-h", part); !strings.Contains(hdr, "Block count:              5242880\n") {
			t.Errorf("not grown:\n%s", hdr)
		}
	})
}

func TestReproducible(t *testing.T) {
	img1, _, _ := buildDisk(t, 1<<20)
	time.Sleep(1100 * time.Millisecond) // go-diskfs stamps time.Now() (seconds) into ext4
	img2, _, _ := buildDisk(t, 1<<20)
	s1, err := SHA256File(img1)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := SHA256File(img2)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Fatal("disk images differ")
	}
}

func TestSHA256File(t *testing.T) {
	const mb = 1 << 20
	tests := []struct {
		name   string
		size   int64
		chunks map[int64]int // offset -> length of random data
	}{
		{"empty", 0, nil},
		{"all hole", 10 * mb, nil},
		{"data only", 0, map[int64]int{0: 3*mb + 5}},
		{"data at start", 8 * mb, map[int64]int{0: 5000}},
		{"data at end", 8 * mb, map[int64]int{8*mb - 100: 100}},
		{"data in middle", 9 * mb, map[int64]int{3*mb + 7: 70000, 6 * mb: 1}},
		{"unaligned size", 5*mb + 3, map[int64]int{mb: 4096}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(tc.size); err != nil {
				t.Fatal(err)
			}
			for off, n := range tc.chunks {
				if _, err := f.WriteAt(randBytes(n, uint64(off)), off); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := SHA256File(p)
			if err != nil {
				t.Fatal(err)
			}
			if got != sha256.Sum256(b) {
				t.Fatal("SHA256File differs from sha256 of the contents")
			}
		})
	}
	if _, err := SHA256File("/nonexistent/file"); err == nil {
		t.Fatal("no error for a missing file")
	}
}

func TestNormalizeExt4Errors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	if err := normalizeExt4(f, 0, mtime, uuid.UUID{}); err == nil || !strings.Contains(err.Error(), "no ext4 superblock") {
		t.Fatalf("got %v", err)
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(RootSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no name", Options{}, "empty OS name"},
		{"root too big", Options{OSName: "x", RootA: big}, "larger than"},
		{"missing root", Options{OSName: "x", RootA: filepath.Join(dir, "nope")}, "no such file"},
		{"bad ESP file", Options{OSName: "x", ESPFiles: []esp.File{{Path: "../x"}}}, "ESP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(context.Background(), filepath.Join(dir, "d.img"), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestTiming logs the production-size timings (ESP with a 20 MB UKI, a
// 30 MB root payload, STATE, and the sparse hash).
func TestTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	dir := t.TempDir()
	rootPath := filepath.Join(dir, "root.img")
	if err := os.WriteFile(rootPath, randBytes(30<<20, 9), 0o644); err != nil {
		t.Fatal(err)
	}
	files := append(espFiles(), esp.File{Path: "EFI/Linux/big.efi", Data: randBytes(20<<20, 8)})
	l := NewLayout("cairn-timing")
	p, _ := l.Partition(LabelESP)

	espPath := filepath.Join(dir, "esp.img")
	ef, err := os.Create(espPath)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := esp.Build(ef, p.Size, files, mtime); err != nil {
		t.Fatal(err)
	}
	t.Logf("ESP alone (256 MiB, %d files, 22 MB data): %v", len(files), time.Since(start))
	ef.Close()

	img := filepath.Join(dir, "disk.img")
	start = time.Now()
	if _, err := Build(context.Background(), img, Options{OSName: "cairn-timing", ESPFiles: files, RootA: rootPath, MTime: mtime}); err != nil {
		t.Fatal(err)
	}
	t.Logf("disk.Build (GPT + ESP + 30 MB ROOT-A + STATE): %v", time.Since(start))
	start = time.Now()
	if _, err := SHA256File(img); err != nil {
		t.Fatal(err)
	}
	t.Logf("SHA256File of the %d MiB sparse image: %v", l.Size>>20, time.Since(start))
}
