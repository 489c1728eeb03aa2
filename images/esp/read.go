package esp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// Entry is a directory entry returned by ListDir.
type Entry struct {
	Name  string // long name if present, else the 8.3 name
	IsDir bool
	Size  int64
}

const (
	maxDirBytes = 16 << 20 // refuse directories larger than this
	fatPageSize = 64 << 10
)

// volume is a FAT32 volume inside r at [off, off+size).
type volume struct {
	r            io.ReaderAt
	off, size    int64
	bytesPerSec  int64
	clusterSize  int64
	fatOff       int64 // byte offset of the first FAT (relative to off)
	fatBytes     int64
	dataOff      int64
	clusterCount uint32
	rootCluster  uint32
	fatPages     map[int64][]byte
}

func (v *volume) readAt(p []byte, rel int64) error {
	if rel < 0 || rel+int64(len(p)) > v.size {
		return fmt.Errorf("read at %d+%d outside the volume (%d bytes)", rel, len(p), v.size)
	}
	n, err := v.r.ReadAt(p, v.off+rel)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read at %d: %w", v.off+rel, err)
}

func openVolume(r io.ReaderAt, off, size int64) (*volume, error) {
	if off < 0 || size < sectorSize {
		return nil, fmt.Errorf("invalid volume region %d+%d", off, size)
	}
	v := &volume{r: r, off: off, size: size, fatPages: map[int64][]byte{}}
	bs := make([]byte, sectorSize)
	if err := v.readAt(bs, 0); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	le := binary.LittleEndian
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return nil, errors.New("boot sector signature missing")
	}
	bps := int64(le.Uint16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(le.Uint16(bs[14:]))
	nfats := int64(bs[16])
	rootEnt := le.Uint16(bs[17:])
	fatSz16 := le.Uint16(bs[22:])
	total := int64(le.Uint32(bs[32:]))
	if tot16 := le.Uint16(bs[19:]); tot16 != 0 {
		total = int64(tot16)
	}
	fatSz := int64(le.Uint32(bs[36:]))
	switch bps {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("invalid bytes per sector %d", bps)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, fmt.Errorf("invalid sectors per cluster %d", spc)
	}
	if reserved == 0 || nfats == 0 || nfats > 4 {
		return nil, fmt.Errorf("invalid reserved sectors %d or FAT count %d", reserved, nfats)
	}
	if rootEnt != 0 || fatSz16 != 0 || fatSz == 0 {
		return nil, errors.New("not a FAT32 volume")
	}
	if total*bps > size {
		return nil, fmt.Errorf("volume claims %d bytes, region has %d", total*bps, size)
	}
	v.bytesPerSec = bps
	v.clusterSize = bps * spc
	v.fatOff = reserved * bps
	v.fatBytes = fatSz * bps
	v.dataOff = (reserved + nfats*fatSz) * bps
	if v.dataOff >= total*bps {
		return nil, errors.New("FATs extend beyond the volume")
	}
	clusters := (total*bps - v.dataOff) / v.clusterSize
	if maxFAT := v.fatBytes/4 - 2; clusters > maxFAT {
		clusters = maxFAT
	}
	if clusters < 1 || clusters > maxClusters {
		return nil, fmt.Errorf("invalid cluster count %d", clusters)
	}
	v.clusterCount = uint32(clusters)
	v.rootCluster = le.Uint32(bs[44:])
	if !v.validCluster(v.rootCluster) {
		return nil, fmt.Errorf("invalid root cluster %d", v.rootCluster)
	}
	return v, nil
}

func (v *volume) validCluster(c uint32) bool {
	return c >= 2 && uint64(c) < uint64(v.clusterCount)+2
}

// next returns the FAT entry of cluster c.
func (v *volume) next(c uint32) (uint32, error) {
	pos := int64(c) * 4
	page := pos / fatPageSize
	b, ok := v.fatPages[page]
	if !ok {
		n := min(int64(fatPageSize), v.fatBytes-page*fatPageSize)
		b = make([]byte, n)
		if err := v.readAt(b, v.fatOff+page*fatPageSize); err != nil {
			return 0, fmt.Errorf("FAT: %w", err)
		}
		v.fatPages[page] = b
	}
	return binary.LittleEndian.Uint32(b[pos-page*fatPageSize:]) & 0x0FFFFFFF, nil
}

// readChain reads up to limit bytes following the cluster chain from first.
// If exact is set, the chain must hold at least limit bytes.
func (v *volume) readChain(first uint32, limit int64, exact bool) ([]byte, error) {
	var out []byte
	c := first
	seen := map[uint32]bool{}
	for int64(len(out)) < limit {
		if !v.validCluster(c) {
			if !exact && c >= 0x0FFFFFF8 {
				return out, nil
			}
			return nil, fmt.Errorf("bad cluster %#x in chain from %d", c, first)
		}
		if seen[c] {
			return nil, fmt.Errorf("cluster chain from %d loops at %d", first, c)
		}
		seen[c] = true
		n := min(v.clusterSize, limit-int64(len(out)))
		buf := make([]byte, n)
		if err := v.readAt(buf, v.dataOff+int64(c-2)*v.clusterSize); err != nil {
			return nil, err
		}
		out = append(out, buf...)
		nc, err := v.next(c)
		if err != nil {
			return nil, err
		}
		c = nc
	}
	return out, nil
}

type dirent struct {
	Entry
	cluster uint32
}

func shortString(b []byte) string {
	base := strings.TrimRight(string(b[0:8]), " ")
	ext := strings.TrimRight(string(b[8:11]), " ")
	if base != "" && base[0] == 0x05 {
		base = "\xe5" + base[1:]
	}
	if b[12]&0x08 != 0 {
		base = strings.ToLower(base)
	}
	if b[12]&0x10 != 0 {
		ext = strings.ToLower(ext)
	}
	if ext != "" {
		return base + "." + ext
	}
	return base
}

func (v *volume) readDir(cluster uint32) ([]dirent, error) {
	raw, err := v.readChain(cluster, maxDirBytes, false)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	var (
		out     []dirent
		lfn     []uint16
		lfnSum  byte
		lfnNext int // next expected ordinal, 0 = none pending
	)
	for i := 0; i+dirEntrySize <= len(raw); i += dirEntrySize {
		e := raw[i : i+dirEntrySize]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			lfnNext = 0
			continue
		}
		attr := e[11]
		if attr&0x3F == attrLFN {
			ord := int(e[0] & 0x3F)
			if e[0]&0x40 != 0 {
				if ord == 0 || ord > 20 {
					lfnNext = 0
					continue
				}
				lfn = make([]uint16, ord*13)
				lfnSum = e[13]
				lfnNext = ord
			} else if ord != lfnNext || e[13] != lfnSum {
				lfnNext = 0
				continue
			}
			if lfnNext == 0 {
				continue
			}
			for j, off := range lfnCharOffsets {
				lfn[(ord-1)*13+j] = binary.LittleEndian.Uint16(e[off:])
			}
			lfnNext = ord - 1
			if lfnNext == 0 {
				lfnNext = -1 // complete; waiting for the short entry
			}
			continue
		}
		var sn [11]byte
		copy(sn[:], e[0:11])
		name := shortString(e)
		if lfnNext == -1 && lfnChecksum(sn) == lfnSum {
			u := lfn
			for k, ch := range u {
				if ch == 0 {
					u = u[:k]
					break
				}
			}
			name = string(utf16.Decode(u))
		}
		lfnNext = 0
		if attr&attrVolumeID != 0 || name == "." || name == ".." {
			continue
		}
		cl := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
		out = append(out, dirent{
			Entry:   Entry{Name: name, IsDir: attr&attrDirectory != 0, Size: int64(binary.LittleEndian.Uint32(e[28:]))},
			cluster: cl,
		})
	}
	return out, nil
}

// lookup resolves a slash-separated path (case-insensitively, like FAT).
func (v *volume) lookup(p string) (dirent, error) {
	cur := dirent{Entry: Entry{IsDir: true}, cluster: v.rootCluster}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if part == "." || part == ".." {
			return dirent{}, fmt.Errorf("path %q: %q components are not allowed", p, part)
		}
		if !cur.IsDir {
			return dirent{}, fmt.Errorf("path %q: %q is not a directory", p, cur.Name)
		}
		ents, err := v.readDir(cur.cluster)
		if err != nil {
			return dirent{}, fmt.Errorf("path %q: %w", p, err)
		}
		found := false
		for _, e := range ents {
			if strings.EqualFold(e.Name, part) {
				cur, found = e, true
				break
			}
		}
		if !found {
			return dirent{}, fmt.Errorf("path %q: %w", p, errNotFound)
		}
	}
	return cur, nil
}

// ReadFile returns the contents of the file at path in the FAT32 volume
// stored in r at [off, off+size).
func ReadFile(r io.ReaderAt, off, size int64, path string) ([]byte, error) {
	v, err := openVolume(r, off, size)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	e, err := v.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	if e.IsDir {
		return nil, fmt.Errorf("esp: %q is a directory", path)
	}
	if e.Size == 0 {
		return []byte{}, nil
	}
	if e.Size > size {
		return nil, fmt.Errorf("esp: %q claims %d bytes, more than the volume", path, e.Size)
	}
	data, err := v.readChain(e.cluster, e.Size, true)
	if err != nil {
		return nil, fmt.Errorf("esp: read %q: %w", path, err)
	}
	return data, nil
}

// ListDir lists the directory at path ("" or "/" for the root) of the FAT32
// volume stored in r at [off, off+size), in on-disk order, without "." and "..".
func ListDir(r io.ReaderAt, off, size int64, path string) ([]Entry, error) {
	v, err := openVolume(r, off, size)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	e, err := v.lookup(path)
	if err != nil {
		return nil, fmt.Errorf("esp: %w", err)
	}
	if !e.IsDir {
		return nil, fmt.Errorf("esp: %q is not a directory", path)
	}
	ents, err := v.readDir(e.cluster)
	if err != nil {
		return nil, fmt.Errorf("esp: list %q: %w", path, err)
	}
	out := make([]Entry, len(ents))
	for i, d := range ents {
		out[i] = d.Entry
	}
	return out, nil
}

// IsNotExist reports whether err means that the path does not exist.
func IsNotExist(err error) bool { return errors.Is(err, errNotFound) }
