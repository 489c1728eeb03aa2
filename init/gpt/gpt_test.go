package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

const (
	typeState = "4d21b016-b534-45c2-a9fb-5c16e091fd2d"
	typeRoot  = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
)

type memDisk struct{ b []byte }

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("out of range")
	}
	return copy(p, m.b[off:]), nil
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("out of range")
	}
	return copy(m.b[off:], p), nil
}

type testPart struct {
	typ, uuid   string
	first, last uint64
	name        string
}

func mustGUID(t testing.TB, s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// buildGPT writes a protective MBR and a primary + backup GPT (128 entries
// of 128 bytes) into a zeroed image of size bytes.
func buildGPT(t testing.TB, size int64, parts []testPart) *memDisk {
	const ss = 512
	d := &memDisk{b: make([]byte, size)}
	last := uint64(size/ss) - 1
	entries := make([]byte, 128*128)
	for i, p := range parts {
		e := entries[i*128:]
		g := mustGUID(t, p.typ)
		copy(e[0:], g[:])
		u := mustGUID(t, p.uuid)
		copy(e[16:], u[:])
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, c := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}
	hdr := func(my, alt, ent uint64) []byte {
		h := make([]byte, ss)
		copy(h, signature)
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], last-33)
		copy(h[56:], []byte("0123456789abcdef"))
		binary.LittleEndian.PutUint64(h[72:], ent)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		setHeaderCRC(h, 92)
		return h
	}
	copy(d.b[ss:], hdr(1, last, 2))
	copy(d.b[2*ss:], entries)
	copy(d.b[(last-32)*ss:], entries)
	copy(d.b[last*ss:], hdr(last, 1, last-32))
	m := d.b[446:]
	m[4] = 0xee
	binary.LittleEndian.PutUint32(m[8:], 1)
	binary.LittleEndian.PutUint32(m[12:], uint32(last))
	d.b[510], d.b[511] = 0x55, 0xaa
	return d
}

func sample(t testing.TB, size int64) *memDisk {
	return buildGPT(t, size, []testPart{
		{typeRoot, "11111111-2222-3333-4444-555555555555", 2048, 4095, "ROOT-A"},
		{typeState, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", 4096, 6143, "STATE"},
	})
}

func TestGUID(t *testing.T) {
	const s = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	g, err := ParseGUID(strings.ToUpper(s))
	if err != nil {
		t.Fatal(err)
	}
	if g[0] != 0x28 || g[3] != 0xc1 || g[4] != 0x1f || g[6] != 0xd2 || g[8] != 0xba {
		t.Fatalf("byte order: % x", g)
	}
	if g.String() != s {
		t.Fatalf("String = %s", g)
	}
	for _, bad := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "c12a7328-f81f-11d2-ba4b-00a0c93ec93g", "c12a7328-f81f-11d2-ba4b_00a0c93ec93b"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) ok", bad)
		}
	}
}

func TestRead(t *testing.T) {
	d := sample(t, 8<<20)
	tb, err := Read(d, 512, int64(len(d.b)))
	if err != nil {
		t.Fatal(err)
	}
	if !tb.Primary || len(tb.Partitions) != 2 {
		t.Fatalf("got %+v", tb)
	}
	p, ok := tb.ByUUID(mustGUID(t, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"))
	if !ok || p.Index != 2 || p.Name != "STATE" || p.FirstLBA != 4096 || p.LastLBA != 6143 {
		t.Fatalf("ByUUID: %+v %v", p, ok)
	}
	if p2, ok := tb.ByType(mustGUID(t, typeState)); !ok || p2 != p {
		t.Fatalf("ByType: %+v", p2)
	}
}

func TestReadHostile(t *testing.T) {
	const size = 8 << 20
	last := int64(size/512 - 1)
	for _, tc := range []struct {
		name   string
		mutate func(b []byte)
		backup bool // still readable via the backup
	}{
		{"primary signature", func(b []byte) { b[512] = 'X' }, true},
		{"primary header crc", func(b []byte) { b[512+40]++ }, true},
		{"primary entries crc", func(b []byte) { b[1024+5]++ }, true},
		{"both signatures", func(b []byte) { b[512] = 'X'; b[last*512] = 'X' }, false},
		{"zero disk", func(b []byte) { clear(b) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := sample(t, size)
			tc.mutate(d.b)
			tb, err := Read(d, 512, size)
			if tc.backup {
				if err != nil || tb.Primary || len(tb.Partitions) != 2 {
					t.Fatalf("backup fallback: %v %+v", err, tb)
				}
				return
			}
			if err == nil {
				t.Fatal("read succeeded")
			}
		})
	}
}

// resign rewrites the primary header CRC after a field change, to test the
// checks behind the CRC.
func resign(b []byte, f func(h []byte)) {
	h := b[512:1024]
	f(h)
	setHeaderCRC(h, binary.LittleEndian.Uint32(h[12:]))
}

func TestReadHostileSigned(t *testing.T) {
	const size = 8 << 20
	for _, tc := range []struct {
		name string
		f    func(h []byte)
	}{
		{"header size huge", func(h []byte) { binary.LittleEndian.PutUint32(h[12:], 4096) }},
		{"header size small", func(h []byte) { binary.LittleEndian.PutUint32(h[12:], 10) }},
		{"entry size small", func(h []byte) { binary.LittleEndian.PutUint32(h[84:], 8) }},
		{"entry count huge", func(h []byte) { binary.LittleEndian.PutUint32(h[80:], 1<<31) }},
		{"entry count zero", func(h []byte) { binary.LittleEndian.PutUint32(h[80:], 0) }},
		{"entries beyond disk", func(h []byte) { binary.LittleEndian.PutUint64(h[72:], 1<<60) }},
		{"entries at lba 0", func(h []byte) { binary.LittleEndian.PutUint64(h[72:], 0) }},
		{"last usable beyond disk", func(h []byte) { binary.LittleEndian.PutUint64(h[48:], 1<<40) }},
		{"my lba wrong", func(h []byte) { binary.LittleEndian.PutUint64(h[24:], 7) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := sample(t, size)
			resign(d.b, tc.f)
			// Also break the backup so the fallback cannot hide the check.
			d.b[(size/512-1)*512] = 'X'
			if _, err := Read(d, 512, size); err == nil {
				t.Fatal("read succeeded")
			}
		})
	}
	// A partition outside the usable range is rejected, even with valid CRCs.
	d := buildGPT(t, size, []testPart{{typeRoot, "11111111-2222-3333-4444-555555555555", 2048, 1 << 30, "X"}})
	if _, err := Read(d, 512, size); err == nil {
		t.Fatal("partition beyond disk accepted")
	}
	// Truncated disk.
	d = sample(t, size)
	if _, err := Read(&memDisk{b: d.b[:1000]}, 512, 1000); err == nil {
		t.Fatal("truncated disk accepted")
	}
	if _, err := Read(d, 520, size); err == nil {
		t.Fatal("odd sector size accepted")
	}
}

func TestGrow(t *testing.T) {
	const small, big = 8 << 20, 64 << 20
	d := sample(t, small)
	orig := bytes.Clone(d.b)
	d.b = append(d.b, make([]byte, big-small)...)
	tb, err := Read(d, 512, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Grow(d, tb, big, 1); err == nil {
		t.Fatal("grew a partition that is not the last")
	}
	res, err := Grow(d, tb, big, 2)
	if err != nil {
		t.Fatal(err)
	}
	last := uint64(big/512 - 1)
	wantEnd := uint64(big-Align)/512 - 1 // the last MiB holds the backup GPT
	if !res.Grown || res.OldLastLBA != 6143 || res.NewLastLBA != wantEnd {
		t.Fatalf("res = %+v, want end %d", res, wantEnd)
	}
	// Re-read: primary and (with primary destroyed) backup agree.
	tb2, err := Read(d, 512, big)
	if err != nil {
		t.Fatal(err)
	}
	if p := tb2.Partitions[1]; p.LastLBA != wantEnd || tb2.Header.AlternateLBA != last || tb2.Header.LastUsableLBA != last-33 {
		t.Fatalf("after grow: %+v %+v", p, tb2.Header)
	}
	if tb2.Partitions[0] != tb.Partitions[0] {
		t.Fatal("partition 1 changed")
	}
	// Only the expected bytes differ in the old area (primary header fields,
	// STATE's last LBA, the pmbr size).
	for i := range orig {
		if orig[i] == d.b[i] {
			continue
		}
		switch {
		case i >= 446+12 && i < 446+16: // pmbr size
		case i >= 512+16 && i < 512+20, i >= 512+32 && i < 512+40, i >= 512+48 && i < 512+56, i >= 512+88 && i < 512+92:
		case i >= 1024+128+40 && i < 1024+128+48:
		case i >= small-33*512: // old backup, now inside STATE
		default:
			t.Fatalf("byte %d changed: %#x -> %#x", i, orig[i], d.b[i])
		}
	}
	copy(d.b[512:], make([]byte, 512))
	tb3, err := Read(d, 512, big)
	if err != nil || tb3.Primary || tb3.Partitions[1].LastLBA != wantEnd {
		t.Fatalf("backup after grow: %v %+v", err, tb3)
	}
	// Growing again is a no-op.
	tb4, _ := Read(sampleGrown(t, d), 512, big)
	if res, err := Grow(d, tb4, big, 2); err != nil || res.Grown {
		t.Fatalf("second grow: %+v %v", res, err)
	}
}

func sampleGrown(t *testing.T, d *memDisk) *memDisk {
	t.Helper()
	// restore the primary from the backup by growing nothing: rebuild via
	// Read of backup and rewrite with Grow semantics is out of scope; just
	// reuse the image after copying the backup header fields back.
	last := int64(len(d.b)/512 - 1)
	h := bytes.Clone(d.b[last*512 : last*512+512])
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[32:], uint64(last))
	binary.LittleEndian.PutUint64(h[72:], 2)
	setHeaderCRC(h, 92)
	copy(d.b[512:], h)
	return d
}

func TestGrowSgdisk(t *testing.T) {
	sg, err := exec.LookPath("sgdisk")
	if err != nil {
		t.Skip("sgdisk not installed")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		out, err := exec.Command(sg, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("sgdisk %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-o", "-n", "1:1M:+8M", "-t", "1:EF00", "-n", "2:0:+8M", "-t", "2:"+typeState, "-c", "2:STATE", img)
	if err := os.Truncate(img, 200<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tb, err := Read(f, 512, 200<<20)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := tb.ByType(mustGUID(t, typeState))
	if !ok {
		t.Fatal("no STATE")
	}
	res, err := Grow(f, tb, 200<<20, p.Index)
	if err != nil || !res.Grown {
		t.Fatalf("grow: %+v %v", res, err)
	}
	out := run("-v", img)
	if !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v:\n%s", out)
	}
	out = run("-i", "2", img)
	if !strings.Contains(out, "Last sector: 407551") {
		t.Fatalf("sgdisk -i 2:\n%s", out)
	}
}

func FuzzRead(f *testing.F) {
	d := sample(f, 1<<20)
	f.Add(d.b[:64<<10], false)
	f.Add(d.b[:4096], true)
	f.Fuzz(func(t *testing.T, b []byte, flip bool) {
		disk := &memDisk{b: b}
		tb, err := Read(disk, 512, int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range tb.Partitions {
			if p.FirstLBA > p.LastLBA || p.LastLBA > tb.Header.LastUsableLBA {
				t.Fatalf("bad partition accepted: %+v", p)
			}
		}
		if flip && tb.Primary && len(tb.Partitions) > 0 {
			last := tb.Partitions[len(tb.Partitions)-1]
			_, _ = Grow(disk, tb, int64(len(b)), last.Index)
		}
	})
}
