package agent

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"cairn.dev/cairn/init/gpt"
)

type gptPart struct {
	typ, uuid   string
	first, last uint64
	name        string
}

// writeGPT writes a primary and a backup GPT (128 entries) into a new
// file of size bytes.
func writeGPT(t *testing.T, size int64, parts []gptPart) *os.File {
	t.Helper()
	const ss = 512
	b := make([]byte, size)
	last := uint64(size/ss) - 1
	entries := make([]byte, 128*128)
	for i, p := range parts {
		e := entries[i*128:]
		typ, err := gpt.ParseGUID(p.typ)
		if err != nil {
			t.Fatal(err)
		}
		u, err := gpt.ParseGUID(p.uuid)
		if err != nil {
			t.Fatal(err)
		}
		copy(e[0:], typ[:])
		copy(e[16:], u[:])
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		for j, c := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*j:], c)
		}
	}
	hdr := func(my, alt, ent uint64) []byte {
		h := make([]byte, ss)
		copy(h, "EFI PART")
		binary.LittleEndian.PutUint32(h[8:], 0x00010000)
		binary.LittleEndian.PutUint32(h[12:], 92)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], 34)
		binary.LittleEndian.PutUint64(h[48:], last-33)
		binary.LittleEndian.PutUint64(h[72:], ent)
		binary.LittleEndian.PutUint32(h[80:], 128)
		binary.LittleEndian.PutUint32(h[84:], 128)
		binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(entries))
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
		return h
	}
	copy(b[ss:], hdr(1, last, 2))
	copy(b[2*ss:], entries)
	copy(b[(last-32)*ss:], entries)
	copy(b[last*ss:], hdr(last, 1, last-32))
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

const (
	typeESP   = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	typeState = "4d21b016-b534-45c2-a9fb-5c16e091fd2d"
)

func TestSlotsFromGPT(t *testing.T) {
	const size = 8 << 20
	good := []gptPart{
		{typeESP, "aeded591-b0ce-8f32-8d8f-8b5416972a40", 2048, 4095, "ESP"},
		{rootTypeX86, uuidA, 4096, 8191, "ROOT-A"},
		{rootTypeX86, uuidB, 8192, 12287, "ROOT-B"},
		{typeState, "b2910a0d-cbb8-8a2d-bbff-5df6ee42b477", 12288, 16000, "STATE"},
	}
	f := writeGPT(t, size, good)
	slots, err := SlotsFromGPT(f, size, 512)
	if err != nil {
		t.Fatal(err)
	}
	a, b := slots["A"], slots["B"]
	if a.PartUUID != uuidA || b.PartUUID != uuidB || a.Dev.Size() != 2<<20 || b.Dev.Size() != 2<<20 {
		t.Fatalf("%+v %+v", a, b)
	}
	// Writes stay inside the slot; reads past its end stop there.
	if _, err := b.Dev.WriteAt([]byte("root B"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Dev.WriteAt([]byte("xx"), b.Dev.Size()-1); err == nil {
		t.Fatal("wrote past the slot")
	}
	raw := make([]byte, 6)
	f.ReadAt(raw, 8192*512)
	if string(raw) != "root B" {
		t.Fatalf("slot B at the wrong offset: %q", raw)
	}
	buf := make([]byte, 10)
	if n, err := b.Dev.ReadAt(buf, b.Dev.Size()-4); n != 4 || err == nil {
		t.Fatalf("read past the end: %d %v", n, err)
	}

	for _, tt := range []struct {
		name  string
		parts []gptPart
		want  string
	}{
		{"no ROOT-B", good[:2], "no ROOT-A and ROOT-B"},
		{"wrong type", []gptPart{good[1], {typeState, uuidB, 8192, 12287, "ROOT-B"}}, "no ROOT-A and ROOT-B"},
		{"two ROOT-A", []gptPart{good[1], {rootTypeX86, uuidB, 8192, 12287, "ROOT-A"}}, "two partitions"},
		{"ends before it starts", []gptPart{good[1], {rootTypeX86, uuidB, 8192, 8000, "ROOT-B"}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SlotsFromGPT(writeGPT(t, size, tt.parts), size, 512)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := SlotsFromGPT(f, size, 1000); err == nil {
		t.Fatal("accepted sector size 1000")
	}
}

func TestOtherSlot(t *testing.T) {
	for in, want := range map[string]string{"A": "B", "B": "A", "a": "", "": "", "C": ""} {
		got, err := OtherSlot(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
}
