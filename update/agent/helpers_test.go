package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/go-dmverity/pkg/verity"
)

// peSection is a section for mkPE.
type peSection struct {
	name string
	data []byte
}

// mkPE writes a minimal PE32+ image with the given sections (raw data
// 512-aligned after 1 KiB of headers).
func mkPE(secs []peSection) []byte {
	le := binary.LittleEndian
	const lfanew, optSize = 0x80, 240
	hdr := make([]byte, 0x400)
	hdr[0], hdr[1] = 'M', 'Z'
	le.PutUint32(hdr[0x3c:], lfanew)
	copy(hdr[lfanew:], "PE\x00\x00")
	coff := lfanew + 4
	le.PutUint16(hdr[coff:], 0x8664)
	le.PutUint16(hdr[coff+2:], uint16(len(secs)))
	le.PutUint16(hdr[coff+16:], optSize)
	opt := coff + 20
	le.PutUint16(hdr[opt:], 0x20b)
	le.PutUint32(hdr[opt+32:], 0x1000)
	le.PutUint32(hdr[opt+36:], 0x200)
	out := append([]byte(nil), hdr...)
	table := opt + optSize
	for i, s := range secs {
		ptr := len(out)
		out = append(out, s.data...)
		for len(out)%0x200 != 0 {
			out = append(out, 0)
		}
		e := out[table+i*40:]
		copy(e[:8], s.name)
		le.PutUint32(e[8:], uint32(len(s.data)))
		le.PutUint32(e[12:], uint32(0x1000*(i+1)))
		le.PutUint32(e[16:], uint32((len(s.data)+0x1ff)&^0x1ff))
		le.PutUint32(e[20:], uint32(ptr))
	}
	return out
}

// ukiParams describe a test UKI.
type ukiParams struct {
	version, slot, partuuid, rootHash, salt string
	blocks                                  uint64
}

func (p ukiParams) cmdline() string {
	salt := p.salt
	if salt == "" {
		salt = "-"
	}
	return fmt.Sprintf("console=ttyS0 panic=1 quiet cairn.slot=%s cairn.version=%s cairn.root=PARTUUID=%s cairn.verity.roothash=%s cairn.verity.salt=%s cairn.verity.blocks=%d",
		p.slot, p.version, p.partuuid, p.rootHash, salt, p.blocks)
}

func mkUKI(p ukiParams) []byte {
	return mkPE([]peSection{
		{".osrel", []byte("ID=cairn\nVERSION_ID=" + p.version + "\n")},
		{".cmdline", []byte(p.cmdline())},
		{".linux", bytes.Repeat([]byte("K"), 3000)},
	})
}

// rootImage is a test root image: data blocks and the dm-verity tree.
type rootImage struct {
	data     []byte // the whole image, tree included
	blocks   uint64
	rootHash string
	salt     string
}

// mkRoot appends a dm-verity tree to data (padded to 4 KiB) with
// go-dmverity, as images/rootfs does.
func mkRoot(t testing.TB, data []byte, salt []byte) rootImage {
	t.Helper()
	p := filepath.Join(t.TempDir(), "root.img")
	blocks := (uint64(len(data)) + verityBlock - 1) / verityBlock
	padded := make([]byte, blocks*verityBlock)
	copy(padded, data)
	if err := os.WriteFile(p, padded, 0o644); err != nil {
		t.Fatal(err)
	}
	params := verity.DefaultParams()
	params.DataBlockSize, params.HashBlockSize = verityBlock, verityBlock
	params.DataBlocks = blocks
	params.Salt, params.SaltSize = salt, uint16(len(salt))
	params.HashAreaOffset = blocks * verityBlock
	params.NoSuperblock = true
	root, err := verity.Create(&params, p, p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return rootImage{data: img, blocks: blocks, rootHash: hex.EncodeToString(root), salt: hex.EncodeToString(salt)}
}

// randomData returns n pseudo-random bytes from seed.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// Partition UUIDs of the test disk.
const (
	uuidA = "9e764f8a-6b64-8fdf-9621-04a211a8eddc"
	uuidB = "a0cc0c0e-3ffe-818f-8173-7afc671489b3"
)

// testDisk is a file standing in for the disk: two slot regions, and a
// directory standing in for the mounted ESP.
type testDisk struct {
	f     *os.File
	slots map[string]*Slot
	esp   string
}

func newTestDisk(t testing.TB, slotSize int64) *testDisk {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(1<<20 + 2*slotSize); err != nil {
		t.Fatal(err)
	}
	d := &testDisk{f: f, esp: t.TempDir(), slots: map[string]*Slot{
		"A": {Name: "A", PartUUID: uuidA, Dev: &Region{F: f, Off: 1 << 20, Len: slotSize}},
		"B": {Name: "B", PartUUID: uuidB, Dev: &Region{F: f, Off: 1<<20 + slotSize, Len: slotSize}},
	}}
	if err := os.MkdirAll(filepath.Join(d.esp, "EFI", "Linux"), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// writeSlot puts img into slot name, as a previous install would have.
func (d *testDisk) writeSlot(t testing.TB, name string, img []byte) {
	t.Helper()
	if _, err := d.slots[name].Dev.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
}

// slotBytes returns the first n bytes of slot name.
func (d *testDisk) slotBytes(t testing.TB, name string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.slots[name].Dev.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func (d *testDisk) ukiDir() string { return filepath.Join(d.esp, "EFI", "Linux") }

// espFiles lists the ESP's EFI/Linux directory.
func (d *testDisk) espFiles(t testing.TB) []string {
	t.Helper()
	ents, err := os.ReadDir(d.ukiDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// fakeClock advances only when slept on.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }
