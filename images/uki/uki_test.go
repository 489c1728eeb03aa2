package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/internal/testenv"
)

// debStub returns linuxx64.efi.stub from the pinned systemd-boot-efi package.
func debStub(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Artifacts(t).Stub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// miniStub builds a small valid PE32+ image with one .text section and a
// trailing symbol table, like Debian's stub.
func miniStub() []byte {
	b := make([]byte, 0x800)
	le := binary.LittleEndian
	b[0], b[1] = 'M', 'Z'
	le.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	coff := 0x84
	le.PutUint16(b[coff:], 0x8664)
	le.PutUint16(b[coff+2:], 1)
	le.PutUint32(b[coff+8:], 0x600) // symbol table after the section data
	le.PutUint32(b[coff+12:], 2)
	le.PutUint16(b[coff+16:], 240)
	le.PutUint16(b[coff+18:], 0x206)
	opt := coff + 20
	le.PutUint16(b[opt:], optMagicPE32Plus)
	le.PutUint32(b[opt+optSectionAlign:], 0x1000)
	le.PutUint32(b[opt+optFileAlign:], 0x200)
	le.PutUint32(b[opt+optSizeOfInitData:], 0x200)
	le.PutUint32(b[opt+optSizeOfImage:], 0x2000)
	le.PutUint32(b[opt+optSizeOfHeaders:], 0x400)
	le.PutUint32(b[opt+optNumRvaSizes:], 16)
	sec := opt + 240
	copy(b[sec:], ".text")
	le.PutUint32(b[sec+8:], 0x10)
	le.PutUint32(b[sec+12:], 0x1000)
	le.PutUint32(b[sec+16:], 0x200)
	le.PutUint32(b[sec+20:], 0x400)
	le.PutUint32(b[sec+36:], 0x60000020)
	for i := 0x400; i < 0x410; i++ {
		b[i] = 0xc3
	}
	return b[:0x600+2*18+4]
}

func testSections() Sections {
	return Sections{
		OSRel:   []byte("ID=cairn\nVERSION_ID=1.2.3\n"),
		Cmdline: []byte("console=ttyS0 panic=1 quiet"),
		Uname:   []byte("6.1.0-56-cloud-amd64"),
		Linux:   bytes.Repeat([]byte("K"), 5000),
		Initrd:  bytes.Repeat([]byte("I"), 777),
	}
}

func TestAssembleRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		stub func(testing.TB) []byte
		s    Sections
	}{
		{"mini/all", func(testing.TB) []byte { return miniStub() }, testSections()},
		{"mini/linux-only", func(testing.TB) []byte { return miniStub() }, Sections{Linux: []byte{1, 2, 3}}},
		{"debian/all", debStub, testSections()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stub := tc.stub(t)
			out, err := Assemble(stub, tc.s)
			if err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			again, err := Assemble(stub, tc.s)
			if err != nil || !bytes.Equal(out, again) {
				t.Fatalf("Assemble not reproducible (err %v)", err)
			}
			got, err := Read(out)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			for _, n := range sectionOrder {
				if !bytes.Equal(got.byName(n), tc.s.byName(n)) {
					t.Errorf("section %s: got %d bytes, want %d", n, len(got.byName(n)), len(tc.s.byName(n)))
				}
			}
			checkWithDebugPE(t, stub, out, tc.s)
		})
	}
}

// checkWithDebugPE cross-checks the layout with the standard library parser.
func checkWithDebugPE(t *testing.T, stub, out []byte, s Sections) {
	t.Helper()
	f, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("debug/pe: %v", err)
	}
	if f.FileHeader.PointerToSymbolTable != 0 || f.FileHeader.NumberOfSymbols != 0 {
		t.Errorf("symbol table not stripped")
	}
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	sf, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		// Debian's stub has a dangling symbol table that debug/pe rejects;
		// use our own parser for the original section count then.
		h, herr := parseHeader(stub)
		if herr != nil {
			t.Fatal(herr)
		}
		sf = &pe.File{Sections: make([]*pe.Section, h.nSections)}
	}
	var want []string
	for _, n := range sectionOrder {
		if len(s.byName(n)) > 0 {
			want = append(want, n)
		}
	}
	if len(f.Sections) != len(sf.Sections)+len(want) {
		t.Fatalf("got %d sections, want %d", len(f.Sections), len(sf.Sections)+len(want))
	}
	prevEnd := uint32(0)
	for _, sc := range f.Sections[:len(sf.Sections)] {
		prevEnd = max(prevEnd, sc.VirtualAddress+sc.VirtualSize)
	}
	var initData uint32
	for i, sc := range f.Sections[len(sf.Sections):] {
		if sc.Name != want[i] {
			t.Errorf("section %d: name %q, want %q", i, sc.Name, want[i])
		}
		if sc.VirtualAddress%oh.SectionAlignment != 0 || sc.VirtualAddress < prevEnd {
			t.Errorf("%s: VMA %#x not aligned after %#x", sc.Name, sc.VirtualAddress, prevEnd)
		}
		if sc.Offset%oh.FileAlignment != 0 {
			t.Errorf("%s: file offset %#x not aligned", sc.Name, sc.Offset)
		}
		prevEnd = sc.VirtualAddress + sc.VirtualSize
		initData += sc.VirtualSize
		data, err := sc.Data()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data[:sc.VirtualSize], s.byName(sc.Name)) {
			t.Errorf("%s: data mismatch", sc.Name)
		}
	}
	if f.Sections[len(f.Sections)-1].Name != ".linux" {
		t.Errorf(".linux is not the last section")
	}
	if want := (prevEnd + oh.SectionAlignment - 1) &^ (oh.SectionAlignment - 1); oh.SizeOfImage != want {
		t.Errorf("SizeOfImage %#x, want %#x", oh.SizeOfImage, want)
	}
	stubInit := binary.LittleEndian.Uint32(stub[binary.LittleEndian.Uint32(stub[0x3c:])+4+20+optSizeOfInitData:])
	if oh.SizeOfInitializedData != stubInit+initData {
		t.Errorf("SizeOfInitializedData %#x, want %#x", oh.SizeOfInitializedData, stubInit+initData)
	}
	if oh.CheckSum != 0 {
		t.Errorf("checksum %#x, want 0", oh.CheckSum)
	}
}

func TestObjdump(t *testing.T) {
	if _, err := exec.LookPath("objdump"); err != nil {
		t.Skip("objdump not installed")
	}
	out, err := Assemble(debStub(t), testSections())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "uki.efi")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command("objdump", "-h", p).CombinedOutput()
	if err != nil {
		t.Fatalf("objdump -h: %v: %s", err, res)
	}
	text := string(res)
	last := -1
	for _, n := range sectionOrder {
		i := strings.Index(text, " "+n+" ")
		if i < 0 {
			t.Fatalf("objdump does not list %s:\n%s", n, text)
		}
		if i < last {
			t.Errorf("%s listed out of order", n)
		}
		last = i
	}
	if !strings.Contains(text, "pei-x86-64") {
		t.Errorf("objdump does not see a pei-x86-64 image:\n%s", text)
	}
}

func TestAssembleErrors(t *testing.T) {
	signed := miniStub()
	binary.LittleEndian.PutUint32(signed[0x84+20+optDataDirs+8*dirSecurity:], 0x1000)
	noRoom := miniStub()
	binary.LittleEndian.PutUint32(noRoom[0x84+20+optSizeOfHeaders:], 0x200)
	tests := []struct {
		name string
		stub []byte
		s    Sections
		want string
	}{
		{"no linux", miniStub(), Sections{OSRel: []byte("x")}, ".linux section is empty"},
		{"not PE", []byte("hello"), testSections(), "MZ"},
		{"signed", signed, testSections(), "signed"},
		{"no header room", noRoom, testSections(), "header space"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Assemble(tc.stub, tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestReadHostile(t *testing.T) {
	good, err := Assemble(miniStub(), testSections())
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	lastSec := h.secTable + (h.nSections-1)*sectionHdrSize
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "MZ"},
		{"truncated header", good[:0x90], "beyond end"},
		{"truncated section table", good[:h.secTable+10], "section table"},
		{"truncated data", good[:len(good)-4096], "beyond end of file"},
		{"lfanew past EOF", mut(func(b []byte) { le.PutUint32(b[0x3c:], 0xfffffff0) }), "beyond end"},
		{"huge section count", mut(func(b []byte) { le.PutUint16(b[h.coff+2:], 0xffff) }), "too many sections"},
		{"huge optional header", mut(func(b []byte) { le.PutUint16(b[h.coff+16:], 0xffff) }), "optional header"},
		{"section past EOF", mut(func(b []byte) { le.PutUint32(b[lastSec+20:], 0xffffff00) }), "beyond end of file"},
		{"section size overflow", mut(func(b []byte) {
			le.PutUint32(b[lastSec+20:], 0xffffffff)
			le.PutUint32(b[lastSec+16:], 0xffffffff)
			le.PutUint32(b[lastSec+8:], 0xffffffff)
		}), "beyond end of file"},
		{"PE32 not PE32+", mut(func(b []byte) { le.PutUint16(b[h.opt:], 0x10b) }), "magic"},
		{"duplicate section", mut(func(b []byte) { copy(b[lastSec-sectionHdrSize:lastSec-sectionHdrSize+8], ".linux\x00\x00") }), "duplicate"},
		{"no linux", mut(func(b []byte) { copy(b[lastSec:lastSec+8], ".other\x00\x00") }), "no .linux"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Read(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	good, err := Assemble(miniStub(), testSections())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:0x200])
	f.Add(miniStub())
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Read(b)
		if err != nil {
			return
		}
		for _, n := range sectionOrder {
			d := s.byName(n)
			if len(d) > len(b) {
				t.Fatalf("section %s larger than input", n)
			}
		}
		// Whatever Read accepts must also be accepted as a stub or rejected
		// with an error, never a panic.
		_, _ = Assemble(b, Sections{Linux: []byte{1}})
	})
}
