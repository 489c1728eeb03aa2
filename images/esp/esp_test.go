package esp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var mtime = time.Date(2026, 3, 4, 5, 6, 8, 0, time.UTC)

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sampleFiles() []File {
	return []File{
		{Path: "/EFI/BOOT/BOOTX64.EFI", Data: randBytes(140891, 1)},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\neditor no\nconsole-mode keep\n")},
		{Path: "EFI/Linux/cairn-1.2.3+3.efi", Data: randBytes(3<<20+17, 2)},
		{Path: "EFI/Linux/cairn-1.2.4+3.efi", Data: randBytes(5000, 3)},
		{Path: "loader/entries/os-long-file-name-entry.conf", Data: []byte("title x\n")},
		{Path: "EMPTY.TXT", Data: nil},
		{Path: "dir with spaces/ünïcode näme.txt", Data: []byte("utf8")},
	}
}

func buildImage(t *testing.T, size int64, files []File) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "esp.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Build(f, size, files, mtime); err != nil {
		t.Fatalf("Build: %v", err)
	}
	return p
}

func fsck(t *testing.T, img string) {
	t.Helper()
	if _, err := exec.LookPath("fsck.fat"); err != nil {
		t.Skip("fsck.fat not installed")
	}
	out, err := exec.Command("fsck.fat", "-n", "-v", img).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.fat -n: %v\n%s", err, out)
	}
	for _, bad := range []string{"Warning", "WARNING", "Invalid", "Reclaimed", "differ", "not "} {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, bad) && !strings.Contains(line, "not bootable") {
				t.Errorf("fsck.fat reports: %s", line)
			}
		}
	}
}

func TestBuildFsck(t *testing.T) {
	tests := []struct {
		size        int64
		clusterSize int64
	}{
		{33 << 20, 512},
		{64 << 20, 512},
		{100 << 20, 1024},
		{129 << 20, 2048},
		{256 << 20, 2048},
		{600 << 20, 4096},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%dMiB", tc.size>>20), func(t *testing.T) {
			img := buildImage(t, tc.size, sampleFiles())
			st, err := os.Stat(img)
			if err != nil || st.Size() != tc.size {
				t.Fatalf("image size %v (%v), want %d", st.Size(), err, tc.size)
			}
			g, err := chooseGeometry(tc.size, minClusters)
			if err != nil || g.clusterSize() != tc.clusterSize {
				t.Errorf("cluster size %d (%v), want %d", g.clusterSize(), err, tc.clusterSize)
			}
			fsck(t, img)
		})
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name  string
		size  int64
		files []File
		want  string
	}{
		{"too small", 16 << 20, nil, "too small"},
		{"unaligned", 64<<20 + 1, nil, "multiple"},
		{"traversal", 64 << 20, []File{{Path: "../x"}}, "invalid name"},
		{"unclean", 64 << 20, []File{{Path: "a//b"}}, "not clean"},
		{"bad char", 64 << 20, []File{{Path: "a:b"}}, "invalid character"},
		{"trailing dot", 64 << 20, []File{{Path: "abc."}}, "ends with"},
		{"case duplicate", 64 << 20, []File{{Path: "EFI/a"}, {Path: "efi/A"}}, "conflicts"},
		{"file as dir", 64 << 20, []File{{Path: "a"}, {Path: "a/b"}}, "conflicts"},
		{"does not fit", 40 << 20, []File{{Path: "big", Data: make([]byte, 41<<20)}}, "do not fit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf sparseBuf
			err := Build(&buf, tc.size, tc.files, mtime)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// sparseBuf is an in-memory io.WriterAt/io.ReaderAt.
type sparseBuf struct{ b []byte }

func (s *sparseBuf) WriteAt(p []byte, off int64) (int, error) {
	if need := off + int64(len(p)); need > int64(len(s.b)) {
		s.b = append(s.b, make([]byte, need-int64(len(s.b)))...)
	}
	return copy(s.b[off:], p), nil
}

func (s *sparseBuf) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(s.b).ReadAt(p, off)
}

func TestReadBack(t *testing.T) {
	const size = 256 << 20
	img := buildImage(t, size, sampleFiles())
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, sf := range sampleFiles() {
		t.Run(sf.Path, func(t *testing.T) {
			got, err := ReadFile(f, 0, size, strings.ToLower(sf.Path))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, sf.Data) && !(len(got) == 0 && len(sf.Data) == 0) {
				t.Fatalf("content differs: %d vs %d bytes", len(got), len(sf.Data))
			}
		})
	}
	ents, err := ListDir(f, 0, size, "/EFI/Linux")
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{"cairn-1.2.3+3.efi", false, 3<<20 + 17}, {"cairn-1.2.4+3.efi", false, 5000}}
	if fmt.Sprint(ents) != fmt.Sprint(want) {
		t.Errorf("ListDir = %v, want %v", ents, want)
	}
	root, err := ListDir(f, 0, size, "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(root) != fmt.Sprint([]Entry{{"EFI", true, 0}, {"EMPTY.TXT", false, 0}, {"dir with spaces", true, 0}, {"loader", true, 0}}) {
		t.Errorf("root = %v", root)
	}
	if _, err := ReadFile(f, 0, size, "EFI/nope"); !IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

func TestMtools(t *testing.T) {
	for _, tool := range []string{"mdir", "mtype", "mren"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	const size = 256 << 20
	img := buildImage(t, size, sampleFiles())
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, stderr.String())
		}
		return out
	}
	dir := string(run("mdir", "-i", img, "::/EFI/Linux"))
	for _, name := range []string{"cairn-1.2.3+3.efi", "cairn-1.2.4+3.efi"} {
		if !strings.Contains(dir, name) {
			t.Errorf("mdir does not show %s:\n%s", name, dir)
		}
	}
	if !strings.Contains(string(run("mdir", "-i", img, "::/loader/entries")), "os-long-file-name-entry.conf") {
		t.Error("mdir does not show the long entry name")
	}
	for _, sf := range sampleFiles() {
		if len(sf.Data) == 0 {
			continue
		}
		got := run("mtype", "-i", img, "::/"+strings.TrimPrefix(sf.Path, "/"))
		if sha256.Sum256(got) != sha256.Sum256(sf.Data) {
			t.Errorf("mtype %s: content differs (%d vs %d bytes)", sf.Path, len(got), len(sf.Data))
		}
	}
	// Boot counting renames the UKI; the result must stay consistent.
	run("mren", "-i", img, "::/EFI/Linux/cairn-1.2.3+3.efi", "::/EFI/Linux/cairn-1.2.3+2-1.efi")
	fsck(t, img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadFile(f, 0, size, "EFI/Linux/cairn-1.2.3+2-1.efi")
	if err != nil || !bytes.Equal(got, sampleFiles()[2].Data) {
		t.Fatalf("renamed file: %v", err)
	}
}

func TestReproducible(t *testing.T) {
	sum := func() [32]byte {
		b, err := os.ReadFile(buildImage(t, 64<<20, sampleFiles()))
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	first, second := sum(), sum()
	if first != second {
		t.Fatal("not reproducible")
	}
}

func TestShortNames(t *testing.T) {
	used := map[[11]byte]bool{}
	tests := []struct {
		long, short string
		lfn         bool
	}{
		{"EFI", "EFI        ", false},
		{"BOOTX64.EFI", "BOOTX64 EFI", false},
		{"loader", "LOADER~1   ", true},
		{"cairn-1.2.3+3.efi", "CAIRN-~1EFI", true},
		{"cairn-1.2.4+3.efi", "CAIRN-~2EFI", true},
		{".hidden", "HIDDEN~1   ", true},
		{"BOOTX64.EFI", "BOOTX6~1EFI", true}, // taken above
	}
	for _, tc := range tests {
		sn, lfn := shortName(tc.long, used)
		used[sn] = true
		if string(sn[:]) != tc.short || lfn != tc.lfn {
			t.Errorf("shortName(%q) = %q %v, want %q %v", tc.long, sn, lfn, tc.short, tc.lfn)
		}
	}
}

// tinyImage builds the smallest kind of FAT32 volume (just above the FAT32
// cluster minimum, with one sector per cluster) for hostile-input tests and
// fuzz seeds.
func tinyImage(t testing.TB) []byte {
	const size = 33 << 20
	g, ok := geometryFor(size/sectorSize, 1)
	if !ok {
		t.Fatal("no geometry")
	}
	var buf sparseBuf
	files := []File{
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: bytes.Repeat([]byte("x"), 1500)},
		{Path: "EFI/Linux/cairn-1+3.efi", Data: []byte("uki")},
	}
	if err := build(&buf, size, g, files, mtime); err != nil {
		t.Fatal(err)
	}
	if g.clusters < minClusters || int64(len(buf.b)) > size {
		t.Fatalf("%d clusters in %d bytes", g.clusters, len(buf.b))
	}
	return append(buf.b, make([]byte, size-int64(len(buf.b)))...)
}

func TestReadHostile(t *testing.T) {
	good := tinyImage(t)
	le := binary.LittleEndian
	// Images are made when their case runs: each is tens of MiB.
	mut := func(f func(b []byte)) func() []byte {
		return func() []byte {
			b := bytes.Clone(good)
			f(b)
			return b
		}
	}
	same := func(b []byte) func() []byte { return func() []byte { return b } }
	g, _ := geometryFor(uint32(len(good)/sectorSize), 1)
	fatOff := int64(reservedSectors) * sectorSize
	// The BOOTX64.EFI chain starts at cluster 5 (root=2, EFI=3, BOOT=4).
	tests := []struct {
		name string
		img  func() []byte
		size int64
		path string
		want string
	}{
		{"ok", same(good), int64(len(good)), "EFI/BOOT/BOOTX64.EFI", ""},
		{"empty", same(nil), 0, "x", "invalid volume region"},
		{"truncated", same(good[:3000]), int64(len(good)), "EFI/BOOT/BOOTX64.EFI", "unexpected EOF"},
		{"no signature", mut(func(b []byte) { b[510] = 0 }), int64(len(good)), "x", "signature"},
		{"bad sector size", mut(func(b []byte) { le.PutUint16(b[11:], 100) }), int64(len(good)), "x", "bytes per sector"},
		{"zero spc", mut(func(b []byte) { b[13] = 0 }), int64(len(good)), "x", "sectors per cluster"},
		// The cluster count makes this FAT32, which has no fixed root directory.
		{"FAT32 with a fixed root", mut(func(b []byte) { le.PutUint16(b[17:], 16) }), int64(len(good)), "x", "FAT32 volume (66495 clusters) with 16 root directory entries"},
		// A FAT32-shaped boot sector with too few clusters is FAT12.
		{"too few clusters for FAT32", mut(func(b []byte) { le.PutUint32(b[32:], 4096) }), int64(len(good)), "x", "FAT12 volume"},
		{"huge volume", mut(func(b []byte) { le.PutUint32(b[32:], 0xFFFFFFFF) }), int64(len(good)), "x", "volume claims"},
		{"huge FAT", mut(func(b []byte) { le.PutUint32(b[36:], 0x7FFFFFFF) }), int64(len(good)), "x", "beyond the volume"},
		{"bad root", mut(func(b []byte) { le.PutUint32(b[44:], 0xFFFFFF) }), int64(len(good)), "x", "root cluster"},
		{"chain loop", mut(func(b []byte) { le.PutUint32(b[fatOff+5*4:], 5) }), int64(len(good)), "EFI/BOOT/BOOTX64.EFI", "loops"},
		{"chain to free", mut(func(b []byte) { le.PutUint32(b[fatOff+5*4:], 0) }), int64(len(good)), "EFI/BOOT/BOOTX64.EFI", "bad cluster"},
		{"root dir loop", mut(func(b []byte) { le.PutUint32(b[fatOff+2*4:], 2) }), int64(len(good)), "nope", "loops"},
		{"size past volume", mut(func(b []byte) {
			off := g.clusterOff(4) + 2*dirEntrySize // BOOT dir: ., .., then BOOTX64.EFI
			le.PutUint32(b[off+28:], 0xFFFFFFF0)
		}), int64(len(good)), "EFI/BOOT/BOOTX64.EFI", "more than the volume"},
		{"dotdot", same(good), int64(len(good)), "EFI/../EFI/BOOT/BOOTX64.EFI", "not allowed"},
		{"file as dir", same(good), int64(len(good)), "EFI/BOOT/BOOTX64.EFI/x", "not a directory"},
		{"dir as file", same(good), int64(len(good)), "EFI/BOOT", "is a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFile(bytes.NewReader(tc.img()), 0, tc.size, tc.path)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func FuzzReadFile(f *testing.F) {
	good := tinyImage(f)
	used := bytes.TrimRight(good, "\x00") // the volume's used part; read whole with size 1<<30
	f.Add(good[:8192], "EFI/BOOT/BOOTX64.EFI")
	f.Add(used, "EFI/Linux/cairn-1+3.efi")
	f.Add(used, "")
	f.Fuzz(func(t *testing.T, img []byte, p string) {
		r := bytes.NewReader(img)
		for _, size := range []int64{int64(len(img)), 1 << 30} {
			data, err := ReadFile(r, 0, size, p)
			if err == nil && int64(len(data)) > size {
				t.Fatalf("returned %d bytes from a %d-byte volume", len(data), size)
			}
			_, _ = ListDir(r, 0, size, p)
		}
	})
}

// TestReadFAT1216 reads FAT12 and FAT16 volumes made by mkfs.vfat and
// mtools: the fixed root directory, subdirectories and 12/16-bit chains.
func TestReadFAT1216(t *testing.T) {
	for _, tool := range []string{"mkfs.vfat", "mmd", "mcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	long := bytes.Repeat([]byte("0123456789abcdef"), 2000) // spans many clusters
	for _, tc := range []struct {
		fat, kib string
		want     int
	}{{"12", "1440", FAT12}, {"16", "20000", FAT16}} {
		t.Run("FAT"+tc.fat, func(t *testing.T) {
			dir := t.TempDir()
			img, src := filepath.Join(dir, "img"), filepath.Join(dir, "src")
			if err := os.WriteFile(src, long, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"mkfs.vfat", "-C", "-F", tc.fat, "-n", "TESTLABEL", img, tc.kib},
				{"mmd", "-i", img, "::/Sub Dir"},
				{"mcopy", "-i", img, src, "::/Sub Dir/a long file name.bin"},
				{"mcopy", "-i", img, src, "::/ROOT.BIN"},
			} {
				cmd := exec.Command(args[0], args[1:]...)
				cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%v: %v: %s", args, err, out)
				}
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			r, size := bytes.NewReader(b), int64(len(b))
			if typ, label, err := Probe(r); err != nil || typ != tc.want || label != "TESTLABEL" {
				t.Fatalf("Probe = %d, %q, %v", typ, label, err)
			}
			if got, err := ReadFile(r, 0, size, "sub dir/A LONG FILE NAME.bin"); err != nil || !bytes.Equal(got, long) {
				t.Fatalf("ReadFile: %d bytes, %v", len(got), err)
			}
			ents, err := ListDir(r, 0, size, "/")
			if err != nil || len(ents) != 2 || ents[0] != (Entry{Name: "Sub Dir", IsDir: true}) || ents[1] != (Entry{Name: "ROOT.BIN", Size: int64(len(long))}) {
				t.Fatalf("ListDir = %+v, %v", ents, err)
			}
			if got, err := ReadRootFile(r, 0, size, "root.bin", int64(len(long)), 1<<20); err != nil || !bytes.Equal(got, long) {
				t.Fatalf("ReadRootFile: %d bytes, %v", len(got), err)
			}
			if _, err := ReadRootFile(r, 0, size, "root.bin", int64(len(long))-1, 1<<20); err == nil || !strings.Contains(err.Error(), "more than") {
				t.Fatalf("ReadRootFile over the limit: %v", err)
			}
			for _, name := range []string{"missing", "sub dir"} { // a directory is not a file
				if _, err := ReadRootFile(r, 0, size, name, 1<<20, 1<<20); !IsNotExist(err) {
					t.Fatalf("ReadRootFile(%q): %v, want not found", name, err)
				}
			}
		})
	}
}
