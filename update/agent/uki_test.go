package agent

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

var goodUKI = ukiParams{version: "2.0", slot: "B", partuuid: uuidB, rootHash: strings.Repeat("ab", 32), blocks: 10}

func TestReadUKI(t *testing.T) {
	info, err := ReadUKI(bytes.NewReader(mkUKI(goodUKI)), int64(len(mkUKI(goodUKI))))
	if err != nil {
		t.Fatal(err)
	}
	c := info.Cmdline
	if c.Slot != "B" || c.Version != "2.0" || c.RootPARTUUID != uuidB || c.VerityRootHash != goodUKI.rootHash ||
		c.VerityBlocks != 10 || c.VeritySalt != "" || info.VersionID != "2.0" {
		t.Fatalf("got %+v %+v", info, c)
	}
}

func TestReadUKIHostile(t *testing.T) {
	good := mkUKI(goodUKI)
	le := binary.LittleEndian
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	lfanew := int(le.Uint32(good[0x3c:]))
	coff := lfanew + 4
	table := coff + 20 + 240
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"tiny", []byte("MZ")},
		{"no MZ", edit(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"lfanew out of range", edit(func(b []byte) []byte { le.PutUint32(b[0x3c:], 0xfffffff0); return b })},
		{"lfanew past headers", edit(func(b []byte) []byte { le.PutUint32(b[0x3c:], peHeaderLimit); return b })},
		{"no PE signature", edit(func(b []byte) []byte { b[lfanew] = 'X'; return b })},
		{"zero sections", edit(func(b []byte) []byte { le.PutUint16(b[coff+2:], 0); return b })},
		{"too many sections", edit(func(b []byte) []byte { le.PutUint16(b[coff+2:], 97); return b })},
		{"section table beyond headers", edit(func(b []byte) []byte { le.PutUint16(b[coff+2:], 96); return b[:0x400] })},
		{"huge optional header", edit(func(b []byte) []byte { le.PutUint16(b[coff+16:], 0xffff); return b })},
		{"PE32 not PE32+", edit(func(b []byte) []byte { le.PutUint16(b[coff+20:], 0x10b); return b })},
		{"cmdline beyond file", edit(func(b []byte) []byte { le.PutUint32(b[table+40+20:], 0x7fffffff); return b })},
		{"cmdline too large", edit(func(b []byte) []byte {
			le.PutUint32(b[table+40+8:], maxSectionRead+1)
			le.PutUint32(b[table+40+16:], maxSectionRead+1)
			return b
		})},
		{"linux beyond file", edit(func(b []byte) []byte { le.PutUint32(b[table+80+20:], 0x7fffffff); return b })},
		{"no linux", edit(func(b []byte) []byte { copy(b[table+80:], ".text\x00\x00\x00"); return b })},
		{"no cmdline", edit(func(b []byte) []byte { copy(b[table+40:], ".data\x00\x00\x00"); return b })},
		{"duplicate cmdline", edit(func(b []byte) []byte { copy(b[table:], ".cmdline"); return b })},
		{"truncated", good[:len(good)-100]},
		{"bad cmdline", mkPE([]peSection{{".cmdline", []byte("cairn.root=/dev/sda")}, {".linux", []byte("k")}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if info, err := ReadUKI(bytes.NewReader(tt.b), int64(len(tt.b))); err == nil {
				t.Fatalf("accepted: %+v", info)
			}
		})
	}
}

func TestOSRelValue(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"VERSION_ID=1.2\n", "1.2"},
		{"ID=x\nVERSION_ID=\"3.0\"\n", "3.0"},
		{"VERSION_ID='4'", "4"},
		{"VERSION=1\n", ""},
		{"VERSION_ID=\"", "\""},
	} {
		if got := osrelValue([]byte(tt.in), "VERSION_ID"); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzReadUKI(f *testing.F) {
	f.Add(mkUKI(goodUKI))
	f.Add(mkPE([]peSection{{".cmdline", []byte("x")}, {".linux", []byte("k")}, {".osrel", []byte("VERSION_ID=1")}}))
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := ReadUKI(bytes.NewReader(b), int64(len(b)))
		if err == nil && info.Cmdline == nil {
			t.Fatal("no error and no cmdline")
		}
	})
}
