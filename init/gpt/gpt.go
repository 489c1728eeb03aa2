// Package gpt reads GUID partition tables and grows the last partition of a
// disk to its end. It validates every CRC and bound before trusting a field,
// so it can be pointed at any disk found at boot.
package gpt

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// GUID is a GPT GUID in on-disk (mixed-endian) byte order.
type GUID [16]byte

// String formats g in the canonical lower-case form.
func (g GUID) String() string {
	var b [16]byte
	b[0], b[1], b[2], b[3] = g[3], g[2], g[1], g[0]
	b[4], b[5] = g[5], g[4]
	b[6], b[7] = g[7], g[6]
	copy(b[8:], g[8:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// IsZero reports whether g is all zeros (an unused entry).
func (g GUID) IsZero() bool { return g == GUID{} }

// ParseGUID parses the canonical textual form (any case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("gpt: bad guid %q", s)
	}
	raw, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(raw) != 16 {
		return g, fmt.Errorf("gpt: bad guid %q", s)
	}
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	copy(g[8:], raw[8:])
	return g, nil
}

// Header is a parsed GPT header.
type Header struct {
	Revision       uint32
	HeaderSize     uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       GUID
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

// Partition is one used entry of the table.
type Partition struct {
	Index    int // 1-based entry number (the kernel's partition number)
	Type     GUID
	UUID     GUID
	FirstLBA uint64
	LastLBA  uint64
	Attrs    uint64
	Name     string
}

// Table is a validated GPT, with the raw bytes kept for byte-exact rewrites.
type Table struct {
	SectorSize int
	Header     Header      // the header that was read (primary unless it was invalid)
	Primary    bool        // Header came from LBA 1
	Partitions []Partition // used entries, in entry order
	rawHeader  []byte      // one sector
	rawEntries []byte      // NumEntries*EntrySize bytes
}

const (
	signature      = "EFI PART"
	maxEntryBytes  = 4 << 20 // far above the 128*128 = 16 KiB usual array
	minHeaderSize  = 92
	minEntrySize   = 128
	entryNameBytes = 72
)

// Errors returned by Read.
var (
	ErrNoGPT = errors.New("gpt: no valid GPT header")
)

// Read reads and validates the GPT of a disk of diskSize bytes. It uses the
// primary header and falls back to the backup header at the last LBA when the
// primary is damaged.
func Read(r io.ReaderAt, sectorSize int, diskSize int64) (*Table, error) {
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("gpt: unsupported sector size %d", sectorSize)
	}
	if diskSize < int64(sectorSize)*3 {
		return nil, fmt.Errorf("gpt: disk of %d bytes too small", diskSize)
	}
	lastLBA := uint64(diskSize/int64(sectorSize)) - 1
	t, errP := readAt(r, sectorSize, 1, lastLBA)
	if errP == nil {
		t.Primary = true
		return t, nil
	}
	t, errB := readAt(r, sectorSize, lastLBA, lastLBA)
	if errB == nil {
		return t, nil
	}
	return nil, fmt.Errorf("%w: primary: %w; backup: %w", ErrNoGPT, errP, errB)
}

func readAt(r io.ReaderAt, ss int, lba, lastLBA uint64) (*Table, error) {
	raw := make([]byte, ss)
	if _, err := r.ReadAt(raw, int64(lba)*int64(ss)); err != nil {
		return nil, fmt.Errorf("read header at LBA %d: %w", lba, err)
	}
	h, err := parseHeader(raw, ss)
	if err != nil {
		return nil, fmt.Errorf("header at LBA %d: %w", lba, err)
	}
	if h.MyLBA != lba {
		return nil, fmt.Errorf("header at LBA %d says MyLBA %d", lba, h.MyLBA)
	}
	if h.FirstUsableLBA > h.LastUsableLBA || h.LastUsableLBA > lastLBA {
		return nil, fmt.Errorf("usable range %d-%d outside disk (last LBA %d)", h.FirstUsableLBA, h.LastUsableLBA, lastLBA)
	}
	n := uint64(h.NumEntries) * uint64(h.EntrySize)
	esec := (n + uint64(ss) - 1) / uint64(ss)
	if h.EntriesLBA < 2 || h.EntriesLBA > lastLBA || esec > lastLBA-h.EntriesLBA+1 {
		return nil, fmt.Errorf("entry array at LBA %d (+%d) outside disk", h.EntriesLBA, esec)
	}
	entries := make([]byte, n)
	if _, err := r.ReadAt(entries, int64(h.EntriesLBA)*int64(ss)); err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	if c := crc32.ChecksumIEEE(entries); c != h.EntriesCRC {
		return nil, fmt.Errorf("entry array CRC %08x, header says %08x", c, h.EntriesCRC)
	}
	parts, err := parseEntries(entries, h)
	if err != nil {
		return nil, err
	}
	return &Table{SectorSize: ss, Header: h, Partitions: parts, rawHeader: raw, rawEntries: entries}, nil
}

func parseHeader(raw []byte, ss int) (Header, error) {
	var h Header
	if string(raw[:8]) != signature {
		return h, errors.New("bad signature")
	}
	le := binary.LittleEndian
	h.Revision = le.Uint32(raw[8:])
	h.HeaderSize = le.Uint32(raw[12:])
	if h.HeaderSize < minHeaderSize || int(h.HeaderSize) > ss {
		return h, fmt.Errorf("bad header size %d", h.HeaderSize)
	}
	crc := le.Uint32(raw[16:])
	tmp := bytes.Clone(raw[:h.HeaderSize])
	clear(tmp[16:20])
	if c := crc32.ChecksumIEEE(tmp); c != crc {
		return h, fmt.Errorf("header CRC %08x, header says %08x", c, crc)
	}
	h.MyLBA = le.Uint64(raw[24:])
	h.AlternateLBA = le.Uint64(raw[32:])
	h.FirstUsableLBA = le.Uint64(raw[40:])
	h.LastUsableLBA = le.Uint64(raw[48:])
	copy(h.DiskGUID[:], raw[56:72])
	h.EntriesLBA = le.Uint64(raw[72:])
	h.NumEntries = le.Uint32(raw[80:])
	h.EntrySize = le.Uint32(raw[84:])
	h.EntriesCRC = le.Uint32(raw[88:])
	if h.EntrySize < minEntrySize || h.EntrySize%8 != 0 {
		return h, fmt.Errorf("bad entry size %d", h.EntrySize)
	}
	if h.NumEntries == 0 || uint64(h.NumEntries)*uint64(h.EntrySize) > maxEntryBytes {
		return h, fmt.Errorf("bad entry count %d x %d", h.NumEntries, h.EntrySize)
	}
	return h, nil
}

func parseEntries(b []byte, h Header) ([]Partition, error) {
	le := binary.LittleEndian
	var parts []Partition
	for i := 0; i < int(h.NumEntries); i++ {
		e := b[i*int(h.EntrySize) : (i+1)*int(h.EntrySize)]
		var p Partition
		copy(p.Type[:], e[0:16])
		if p.Type.IsZero() {
			continue
		}
		p.Index = i + 1
		copy(p.UUID[:], e[16:32])
		p.FirstLBA = le.Uint64(e[32:])
		p.LastLBA = le.Uint64(e[40:])
		p.Attrs = le.Uint64(e[48:])
		p.Name = decodeName(e[56 : 56+entryNameBytes])
		if p.FirstLBA > p.LastLBA || p.FirstLBA < h.FirstUsableLBA || p.LastLBA > h.LastUsableLBA {
			return nil, fmt.Errorf("partition %d: LBA %d-%d outside usable %d-%d", p.Index, p.FirstLBA, p.LastLBA, h.FirstUsableLBA, h.LastUsableLBA)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

func decodeName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// ByUUID returns the partition with the given unique GUID.
func (t *Table) ByUUID(u GUID) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.UUID == u {
			return p, true
		}
	}
	return Partition{}, false
}

// ByType returns the first partition of the given type.
func (t *Table) ByType(g GUID) (Partition, bool) {
	for _, p := range t.Partitions {
		if p.Type == g {
			return p, true
		}
	}
	return Partition{}, false
}
