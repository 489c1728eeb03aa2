package qemu

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

// makeGPT builds a complete GPT image (512-byte sectors): protective MBR,
// primary and backup headers and entry arrays, with the given partitions
// (type, first LBA, last LBA). sectors must be at least 67.
func makeGPT(sectors int, parts [][3]any) []byte {
	img := make([]byte, sectors*512)
	le := binary.LittleEndian
	last := uint64(sectors - 1)
	// protective MBR
	pm := img[446:]
	pm[4] = 0xee
	le.PutUint32(pm[8:], 1)
	le.PutUint32(pm[12:], uint32(min(last, 0xffffffff)))
	img[510], img[511] = 0x55, 0xaa

	ent := make([]byte, 128*128)
	for i, p := range parts {
		e := ent[i*128:]
		typ := p[0].([16]byte)
		copy(e, typ[:])
		e[16] = byte(i + 1) // unique GUID
		le.PutUint64(e[32:], p[1].(uint64))
		le.PutUint64(e[40:], p[2].(uint64))
	}
	header := func(my, alt, entLBA uint64) []byte {
		h := make([]byte, 92)
		copy(h, "EFI PART")
		le.PutUint32(h[8:], 0x00010000)
		le.PutUint32(h[12:], 92)
		le.PutUint64(h[24:], my)
		le.PutUint64(h[32:], alt)
		le.PutUint64(h[40:], 34)
		le.PutUint64(h[48:], last-33)
		copy(h[56:72], "cairn-test-disk!")
		le.PutUint64(h[72:], entLBA)
		le.PutUint32(h[80:], 128)
		le.PutUint32(h[84:], 128)
		le.PutUint32(h[88:], crc32.ChecksumIEEE(ent))
		le.PutUint32(h[16:], crc32.ChecksumIEEE(h))
		return h
	}
	copy(img[512:], header(1, last, 2))
	copy(img[2*512:], ent)
	copy(img[(last-32)*512:], ent)
	copy(img[last*512:], header(last, 1, last-32))
	return img
}

var linuxRoot = [16]byte{0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09}

func TestFindESP(t *testing.T) {
	img := makeGPT(200, [][3]any{{linuxRoot, uint64(40), uint64(99)}, {espTypeGUID, uint64(100), uint64(163)}})
	p, err := FindESP(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if p.Index != 2 || p.Offset != 100*512 || p.Size != 64*512 {
		t.Errorf("ESP = %+v", p)
	}
}

func TestReadGPTHostile(t *testing.T) {
	good := makeGPT(200, [][3]any{{espTypeGUID, uint64(100), uint64(163)}})
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	resum := func(b []byte) {
		le := binary.LittleEndian
		le.PutUint32(b[512+88:], crc32.ChecksumIEEE(b[1024:1024+128*128]))
		le.PutUint32(b[512+16:], 0)
		le.PutUint32(b[512+16:], crc32.ChecksumIEEE(b[512:512+92]))
	}
	tests := []struct {
		name, want string
		img        []byte
	}{
		{"truncated", "no GPT signature", good[:600]},
		{"truncated header sector", "too small", good[:1000]},
		{"truncated table", "beyond the end", good[:1024+100]},
		{"truncated partitions", "outside the image", good[:150*512]},
		{"no signature", "no GPT signature", make([]byte, 8192)},
		{"header crc", "header CRC", mut(func(b []byte) { b[512+40]++ })},
		{"table crc", "entry array CRC", mut(func(b []byte) { b[1024+50]++ })},
		{"partition beyond end", "outside the image", mut(func(b []byte) {
			binary.LittleEndian.PutUint64(b[1024+40:], 1<<40)
			resum(b)
		})},
		{"first after last", "outside the image", mut(func(b []byte) {
			binary.LittleEndian.PutUint64(b[1024+32:], 170)
			resum(b)
		})},
		{"huge entry count", "bad entry count", mut(func(b []byte) {
			binary.LittleEndian.PutUint32(b[512+80:], 1<<30)
			resum(b)
		})},
		{"tiny entry size", "bad entry size", mut(func(b []byte) {
			binary.LittleEndian.PutUint32(b[512+84:], 16)
			resum(b)
		})},
		{"entry LBA out of range", "out of range", mut(func(b []byte) {
			binary.LittleEndian.PutUint64(b[512+72:], 1<<62)
			resum(b)
		})},
		{"no esp", "no EFI system partition", makeGPT(200, [][3]any{{linuxRoot, uint64(40), uint64(99)}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FindESP(bytes.NewReader(tt.img), int64(len(tt.img)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func FuzzReadGPT(f *testing.F) {
	f.Add(makeGPT(200, [][3]any{{espTypeGUID, uint64(100), uint64(163)}}))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, img []byte) {
		parts, err := ReadGPT(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.Offset < 0 || p.Size <= 0 || p.Offset+p.Size > int64(len(img)) {
				t.Fatalf("partition %+v outside image of %d bytes", p, len(img))
			}
		}
	})
}
