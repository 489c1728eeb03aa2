package qemu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// espTypeGUID is C12A7328-F81F-11D2-BA4B-00A0C93EC93B in GPT's mixed-endian encoding.
var espTypeGUID = [16]byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}

// Partition is a GPT entry located in the image (byte offsets).
type Partition struct {
	Index  int // 1-based
	Type   [16]byte
	Offset int64
	Size   int64
}

// FindESP returns the EFI system partition of the GPT disk image in r
// (size bytes). It is our own ~80-line reader rather than go-diskfs: it works on
// an io.ReaderAt, never writes, and treats every field as hostile.
func FindESP(r io.ReaderAt, size int64) (Partition, error) {
	parts, err := ReadGPT(r, size)
	if err != nil {
		return Partition{}, err
	}
	for _, p := range parts {
		if p.Type == espTypeGUID {
			return p, nil
		}
	}
	return Partition{}, errors.New("gpt: no EFI system partition")
}

// ReadGPT reads the primary GPT of a disk image with 512- or 4096-byte sectors
// and returns the used partition entries.
func ReadGPT(r io.ReaderAt, size int64) ([]Partition, error) {
	parts, err := readGPT(r, size, 512)
	if errors.Is(err, errNoGPT) {
		// Not found with 512-byte sectors: try 4Kn.
		if parts, err4k := readGPT(r, size, 4096); !errors.Is(err4k, errNoGPT) {
			return parts, err4k
		}
	}
	return parts, err
}

var errNoGPT = errors.New("gpt: no GPT signature at LBA 1")

func readGPT(r io.ReaderAt, size, ss int64) ([]Partition, error) {
	hdr := make([]byte, 92)
	if size < ss+92 {
		return nil, errNoGPT
	}
	if _, err := r.ReadAt(hdr, ss); err != nil {
		return nil, fmt.Errorf("gpt: read header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return nil, errNoGPT
	}
	if size < 2*ss {
		return nil, fmt.Errorf("gpt: image of %d bytes too small", size)
	}
	le := binary.LittleEndian
	hsize := le.Uint32(hdr[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("gpt: bad header size %d", hsize)
	}
	full := make([]byte, hsize)
	if _, err := r.ReadAt(full, ss); err != nil {
		return nil, fmt.Errorf("gpt: read header: %w", err)
	}
	want := le.Uint32(full[16:])
	le.PutUint32(full[16:], 0)
	if crc32.ChecksumIEEE(full) != want {
		return nil, errors.New("gpt: header CRC mismatch")
	}
	entLBA := le.Uint64(hdr[72:])
	n := le.Uint32(hdr[80:])
	esz := le.Uint32(hdr[84:])
	if esz < 128 || esz > 4096 || esz%8 != 0 {
		return nil, fmt.Errorf("gpt: bad entry size %d", esz)
	}
	if n == 0 || n > 1024 {
		return nil, fmt.Errorf("gpt: bad entry count %d", n)
	}
	if entLBA < 2 || entLBA > uint64(size/ss) {
		return nil, fmt.Errorf("gpt: entry array LBA %d out of range", entLBA)
	}
	tlen := int64(n) * int64(esz)
	toff := int64(entLBA) * ss
	if toff+tlen > size {
		return nil, errors.New("gpt: entry array beyond the end of the image")
	}
	tbl := make([]byte, tlen)
	if _, err := r.ReadAt(tbl, toff); err != nil {
		return nil, fmt.Errorf("gpt: read entries: %w", err)
	}
	if crc32.ChecksumIEEE(tbl) != le.Uint32(hdr[88:]) {
		return nil, errors.New("gpt: entry array CRC mismatch")
	}
	var parts []Partition
	var zero [16]byte
	for i := range int(n) {
		e := tbl[i*int(esz) : (i+1)*int(esz)]
		var typ [16]byte
		copy(typ[:], e[:16])
		if typ == zero {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if first > last || last >= uint64(size/ss) {
			return nil, fmt.Errorf("gpt: partition %d spans LBA %d..%d outside the image", i+1, first, last)
		}
		parts = append(parts, Partition{
			Index:  i + 1,
			Type:   typ,
			Offset: int64(first) * ss,
			Size:   int64(last-first+1) * ss,
		})
	}
	return parts, nil
}
