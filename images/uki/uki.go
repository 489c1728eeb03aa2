// Package uki assembles and parses Unified Kernel Images (UKIs).
//
// Assemble appends the UKI payload sections (.osrel, .cmdline, .uname,
// .initrd, .linux) to a systemd EFI stub (linuxx64.efi.stub) the same way
// systemd's ukify does: every new section is placed after the previous
// last section, aligned to the image's SectionAlignment, with .linux last.
// The COFF symbol table that Debian's stub still carries is stripped.
//
// Read parses a UKI back into its payload sections. It is written for
// untrusted input: every offset and size is bounds-checked before use.
package uki

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sections are the payload sections of a UKI. Empty sections are omitted by
// Assemble (Linux is required).
type Sections struct {
	OSRel   []byte // .osrel: os-release(5) contents
	Cmdline []byte // .cmdline: kernel command line
	Uname   []byte // .uname: kernel release (uname -r)
	Linux   []byte // .linux: the kernel (bzImage)
	Initrd  []byte // .initrd: the initramfs
}

// PE/COFF layout constants (PE format specification).
const (
	dosLfanewOff    = 0x3c
	peSigSize       = 4
	coffHeaderSize  = 20
	sectionHdrSize  = 40
	symbolEntrySize = 18
	maxSections     = 96 // the PE loader limit in the specification

	optMagicPE32Plus = 0x20b

	// offsets inside the PE32+ optional header
	optSizeOfInitData = 8
	optSectionAlign   = 32
	optFileAlign      = 36
	optSizeOfImage    = 56
	optSizeOfHeaders  = 60
	optCheckSum       = 64
	optNumRvaSizes    = 108
	optDataDirs       = 112
	dirSecurity       = 4 // index of the certificate table data directory

	scnCntCode     = 0x00000020
	scnCntInitData = 0x00000040
	scnMemRead     = 0x40000000

	coffLocalSymsStripped = 0x0008
)

// sectionOrder is ukify's order; .linux must be the last section.
var sectionOrder = []string{".osrel", ".cmdline", ".uname", ".initrd", ".linux"}

func (s Sections) byName(name string) []byte {
	switch name {
	case ".osrel":
		return s.OSRel
	case ".cmdline":
		return s.Cmdline
	case ".uname":
		return s.Uname
	case ".initrd":
		return s.Initrd
	case ".linux":
		return s.Linux
	}
	return nil
}

func (s *Sections) set(name string, data []byte) {
	switch name {
	case ".osrel":
		s.OSRel = data
	case ".cmdline":
		s.Cmdline = data
	case ".uname":
		s.Uname = data
	case ".initrd":
		s.Initrd = data
	case ".linux":
		s.Linux = data
	}
}

// header holds the parsed offsets of a PE32+ image.
type header struct {
	coff      int // offset of the COFF file header
	opt       int // offset of the optional header
	optSize   int
	secTable  int // offset of the section table
	nSections int
	secAlign  uint32
	fileAlign uint32
}

type section struct {
	name        string
	virtualSize uint32
	virtualAddr uint32
	rawSize     uint32
	rawPtr      uint32
}

// parseHeader validates the DOS/PE/COFF/optional headers and the section
// table location of a PE32+ image. It never reads outside b.
func parseHeader(b []byte) (header, error) {
	var h header
	if len(b) < dosLfanewOff+4 || b[0] != 'M' || b[1] != 'Z' {
		return h, errors.New("not a PE image: missing MZ header")
	}
	lfanew := binary.LittleEndian.Uint32(b[dosLfanewOff:])
	if uint64(lfanew)+peSigSize+coffHeaderSize > uint64(len(b)) {
		return h, fmt.Errorf("PE header offset %#x beyond end of file (%d bytes)", lfanew, len(b))
	}
	if !bytes.Equal(b[lfanew:lfanew+4], []byte("PE\x00\x00")) {
		return h, errors.New("not a PE image: missing PE signature")
	}
	h.coff = int(lfanew) + peSigSize
	h.nSections = int(binary.LittleEndian.Uint16(b[h.coff+2:]))
	h.optSize = int(binary.LittleEndian.Uint16(b[h.coff+16:]))
	h.opt = h.coff + coffHeaderSize
	if h.nSections > maxSections {
		return h, fmt.Errorf("too many sections: %d (max %d)", h.nSections, maxSections)
	}
	if h.optSize < optDataDirs || h.opt+h.optSize > len(b) {
		return h, fmt.Errorf("optional header size %d invalid or beyond end of file", h.optSize)
	}
	if m := binary.LittleEndian.Uint16(b[h.opt:]); m != optMagicPE32Plus {
		return h, fmt.Errorf("unsupported optional header magic %#x (want PE32+ %#x)", m, optMagicPE32Plus)
	}
	h.secAlign = binary.LittleEndian.Uint32(b[h.opt+optSectionAlign:])
	h.fileAlign = binary.LittleEndian.Uint32(b[h.opt+optFileAlign:])
	h.secTable = h.opt + h.optSize
	if h.secTable+h.nSections*sectionHdrSize > len(b) {
		return h, fmt.Errorf("section table (%d sections) beyond end of file", h.nSections)
	}
	return h, nil
}

func (h header) sections(b []byte) []section {
	out := make([]section, 0, h.nSections)
	for i := range h.nSections {
		o := h.secTable + i*sectionHdrSize
		out = append(out, section{
			name:        string(bytes.TrimRight(b[o:o+8], "\x00")),
			virtualSize: binary.LittleEndian.Uint32(b[o+8:]),
			virtualAddr: binary.LittleEndian.Uint32(b[o+12:]),
			rawSize:     binary.LittleEndian.Uint32(b[o+16:]),
			rawPtr:      binary.LittleEndian.Uint32(b[o+20:]),
		})
	}
	return out
}

func isPow2(v uint32) bool { return v != 0 && v&(v-1) == 0 }

func roundUp(v, align uint64) uint64 { return (v + align - 1) / align * align }

// Assemble appends the sections in s to a copy of stub (a PE32+ systemd EFI
// stub) and returns the UKI. The output depends only on the inputs.
func Assemble(stub []byte, s Sections) ([]byte, error) {
	if len(s.Linux) == 0 {
		return nil, errors.New("uki: .linux section is empty")
	}
	h, err := parseHeader(stub)
	if err != nil {
		return nil, fmt.Errorf("uki: parse stub: %w", err)
	}
	if !isPow2(h.secAlign) || !isPow2(h.fileAlign) || h.fileAlign < 512 {
		return nil, fmt.Errorf("uki: stub has invalid alignment (section %#x, file %#x)", h.secAlign, h.fileAlign)
	}
	if binary.LittleEndian.Uint32(stub[h.opt+optNumRvaSizes:]) > dirSecurity &&
		h.optSize >= optDataDirs+8*(dirSecurity+1) &&
		binary.LittleEndian.Uint32(stub[h.opt+optDataDirs+8*dirSecurity:]) != 0 {
		return nil, errors.New("uki: stub is signed; refusing to modify it")
	}
	secs := h.sections(stub)
	if len(secs) == 0 {
		return nil, errors.New("uki: stub has no sections")
	}
	// The stub's own data must end where the symbol table (if any) starts;
	// everything after the last section's raw data is dropped.
	var dataEnd uint64
	for _, sc := range secs {
		if sc.rawPtr%h.fileAlign != 0 {
			return nil, fmt.Errorf("uki: stub section %q raw data at %#x not file-aligned", sc.name, sc.rawPtr)
		}
		end := uint64(sc.rawPtr) + uint64(sc.rawSize)
		if end > uint64(len(stub)) {
			return nil, fmt.Errorf("uki: stub section %q raw data beyond end of file", sc.name)
		}
		dataEnd = max(dataEnd, end)
		for _, n := range sectionOrder {
			if sc.name == n {
				return nil, fmt.Errorf("uki: stub already has a %s section", n)
			}
		}
	}
	firstRaw := uint64(secs[0].rawPtr)
	for _, sc := range secs {
		if sc.rawSize != 0 {
			firstRaw = min(firstRaw, uint64(sc.rawPtr))
		}
	}
	sizeOfHeaders := roundUp(uint64(binary.LittleEndian.Uint32(stub[h.opt+optSizeOfHeaders:])), uint64(h.fileAlign))

	var add []string
	for _, n := range sectionOrder {
		if len(s.byName(n)) > 0 {
			add = append(add, n)
		}
	}
	newTableEnd := uint64(h.secTable + (len(secs)+len(add))*sectionHdrSize)
	if newTableEnd > sizeOfHeaders || newTableEnd > firstRaw {
		return nil, fmt.Errorf("uki: no header space for %d new section headers", len(add))
	}
	if len(secs)+len(add) > maxSections {
		return nil, errors.New("uki: too many sections")
	}

	// Compute the new layout.
	total := roundUp(dataEnd, uint64(h.fileAlign))
	var va uint64
	for _, sc := range secs {
		va = max(va, uint64(sc.virtualAddr)+uint64(sc.virtualSize))
	}
	type placed struct {
		name        string
		data        []byte
		va, raw     uint64
		rawSize     uint64
		characteris uint32
	}
	var ps []placed
	initData := uint64(binary.LittleEndian.Uint32(stub[h.opt+optSizeOfInitData:]))
	for _, n := range add {
		data := s.byName(n)
		va = roundUp(va, uint64(h.secAlign))
		p := placed{name: n, data: data, va: va, raw: total, rawSize: roundUp(uint64(len(data)), uint64(h.fileAlign))}
		p.characteris = scnMemRead | scnCntInitData
		if n == ".linux" {
			p.characteris = scnMemRead | scnCntCode
		}
		ps = append(ps, p)
		va += uint64(len(data))
		total += p.rawSize
		initData += uint64(len(data))
	}
	sizeOfImage := roundUp(va, uint64(h.secAlign))
	if total > 0xffffffff || sizeOfImage > 0xffffffff || initData > 0xffffffff {
		return nil, errors.New("uki: image larger than 4 GiB")
	}

	out := make([]byte, total)
	copy(out, stub[:dataEnd])
	le := binary.LittleEndian
	// COFF header: strip the symbol table, update the section count.
	le.PutUint16(out[h.coff+2:], uint16(len(secs)+len(add)))
	le.PutUint32(out[h.coff+8:], 0)  // PointerToSymbolTable
	le.PutUint32(out[h.coff+12:], 0) // NumberOfSymbols
	le.PutUint16(out[h.coff+18:], le.Uint16(out[h.coff+18:])|coffLocalSymsStripped)
	// Optional header.
	le.PutUint32(out[h.opt+optSizeOfInitData:], uint32(initData))
	le.PutUint32(out[h.opt+optSizeOfImage:], uint32(sizeOfImage))
	le.PutUint32(out[h.opt+optSizeOfHeaders:], uint32(sizeOfHeaders))
	le.PutUint32(out[h.opt+optCheckSum:], 0)
	for i, p := range ps {
		o := h.secTable + (len(secs)+i)*sectionHdrSize
		hdr := out[o : o+sectionHdrSize]
		clear(hdr)
		copy(hdr[0:8], p.name)
		le.PutUint32(hdr[8:], uint32(len(p.data)))
		le.PutUint32(hdr[12:], uint32(p.va))
		le.PutUint32(hdr[16:], uint32(p.rawSize))
		le.PutUint32(hdr[20:], uint32(p.raw))
		le.PutUint32(hdr[36:], p.characteris)
		copy(out[p.raw:], p.data)
	}
	return out, nil
}

// Read extracts the UKI payload sections from a PE image. Sections that are
// absent stay nil. The returned slices alias pe. A section's data is its
// VirtualSize bytes (ukify's convention), capped at its SizeOfRawData.
func Read(pe []byte) (Sections, error) {
	var s Sections
	h, err := parseHeader(pe)
	if err != nil {
		return s, fmt.Errorf("uki: %w", err)
	}
	seen := map[string]bool{}
	for _, sc := range h.sections(pe) {
		known := false
		for _, n := range sectionOrder {
			known = known || sc.name == n
		}
		if !known {
			continue
		}
		if seen[sc.name] {
			return Sections{}, fmt.Errorf("uki: duplicate section %s", sc.name)
		}
		seen[sc.name] = true
		size := min(sc.virtualSize, sc.rawSize)
		end := uint64(sc.rawPtr) + uint64(size)
		if end > uint64(len(pe)) {
			return Sections{}, fmt.Errorf("uki: section %s (%#x+%#x) beyond end of file (%d bytes)", sc.name, sc.rawPtr, size, len(pe))
		}
		s.set(sc.name, pe[sc.rawPtr:end:end])
	}
	if len(s.Linux) == 0 {
		return Sections{}, errors.New("uki: no .linux section")
	}
	return s, nil
}
