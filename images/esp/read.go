package esp

import (
	"bytes"
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

// FAT types, as returned by Probe.
const (
	FAT12 = 12
	FAT16 = 16
	FAT32 = 32
)

const (
	maxDirBytes = 16 << 20 // refuse directories larger than this
	fatPageSize = 64 << 10
	maxRootScan = 64 << 10 // Probe reads at most this much of the root directory
)

// bootSector is the layout a FAT boot sector (BIOS parameter block) declares.
type bootSector struct {
	fatType                                          int
	bps, spc, reserved, nfats, rootEnt, fatSz, total int64
	rootSecs                                         int64
	clusters                                         int64 // data clusters, by the specification's count
	rootCluster                                      uint32
	label                                            string // from the extended boot signature; "" if none
}

// parseBoot checks a FAT boot sector (at least 512 bytes) and determines the
// FAT type from the count of data clusters, as the Microsoft FAT
// specification does: fewer than 4085 is FAT12, fewer than 65525 FAT16,
// else FAT32. A FAT32 volume must have no fixed root directory and a
// FAT12/16 volume must have one.
func parseBoot(bs []byte) (bootSector, error) {
	le := binary.LittleEndian
	if bs[510] != 0x55 || bs[511] != 0xAA {
		return bootSector{}, errors.New("boot sector signature missing")
	}
	b := bootSector{
		bps:      int64(le.Uint16(bs[11:])),
		spc:      int64(bs[13]),
		reserved: int64(le.Uint16(bs[14:])),
		nfats:    int64(bs[16]),
		rootEnt:  int64(le.Uint16(bs[17:])),
		total:    int64(le.Uint16(bs[19:])),
		fatSz:    int64(le.Uint16(bs[22:])),
	}
	if b.total == 0 {
		b.total = int64(le.Uint32(bs[32:]))
	}
	if b.fatSz == 0 {
		b.fatSz = int64(le.Uint32(bs[36:]))
	}
	switch b.bps {
	case 512, 1024, 2048, 4096:
	default:
		return bootSector{}, fmt.Errorf("invalid bytes per sector %d", b.bps)
	}
	if b.spc == 0 || b.spc&(b.spc-1) != 0 {
		return bootSector{}, fmt.Errorf("invalid sectors per cluster %d", b.spc)
	}
	if b.reserved == 0 || b.nfats == 0 {
		return bootSector{}, fmt.Errorf("invalid reserved sectors %d or FAT count %d", b.reserved, b.nfats)
	}
	if b.total == 0 || b.fatSz == 0 {
		return bootSector{}, fmt.Errorf("invalid sector count %d or FAT size %d", b.total, b.fatSz)
	}
	b.rootSecs = (b.rootEnt*32 + b.bps - 1) / b.bps
	meta := b.reserved + b.nfats*b.fatSz + b.rootSecs
	if meta >= b.total {
		return bootSector{}, errors.New("FATs extend beyond the volume")
	}
	b.clusters = (b.total - meta) / b.spc
	switch {
	case b.clusters < 4085:
		b.fatType = FAT12
	case b.clusters < 65525:
		b.fatType = FAT16
	default:
		b.fatType = FAT32
	}
	if (b.fatType == FAT32) != (b.rootEnt == 0) {
		return bootSector{}, fmt.Errorf("FAT%d volume (%d clusters) with %d root directory entries", b.fatType, b.clusters, b.rootEnt)
	}
	if b.fatType == FAT32 {
		b.rootCluster = le.Uint32(bs[44:])
		if bs[66] == 0x29 {
			b.label = cleanLabel(bs[71:82])
		}
	} else if bs[38] == 0x29 {
		b.label = cleanLabel(bs[43:54])
	}
	return b, nil
}

// cleanLabel trims a FAT label; "NO NAME" means none.
func cleanLabel(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimRight(string(b), " ")
	if s == "NO NAME" {
		return ""
	}
	return s
}

// volume is a FAT12/16/32 volume inside r at [off, off+size).
type volume struct {
	r            io.ReaderAt
	off, size    int64
	fatType      int
	clusterSize  int64
	fatOff       int64 // byte offset of the first FAT (relative to off)
	fatBytes     int64
	rootOff      int64 // FAT12/16: byte offset of the fixed root directory
	rootLen      int64 // FAT12/16: its length
	dataOff      int64
	clusterCount uint32
	rootCluster  uint32 // FAT32 only
	maxDir       int64  // refuse directories larger than this
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
	v := &volume{r: r, off: off, size: size, maxDir: maxDirBytes, fatPages: map[int64][]byte{}}
	bs := make([]byte, sectorSize)
	if err := v.readAt(bs, 0); err != nil {
		return nil, fmt.Errorf("boot sector: %w", err)
	}
	b, err := parseBoot(bs)
	if err != nil {
		return nil, err
	}
	if b.nfats > 4 {
		return nil, fmt.Errorf("invalid FAT count %d", b.nfats)
	}
	if b.total*b.bps > size {
		return nil, fmt.Errorf("volume claims %d bytes, region has %d", b.total*b.bps, size)
	}
	v.size = b.total * b.bps // every read lies inside the volume
	v.fatType = b.fatType
	v.clusterSize = b.bps * b.spc
	v.fatOff = b.reserved * b.bps
	v.fatBytes = b.fatSz * b.bps
	v.rootOff = (b.reserved + b.nfats*b.fatSz) * b.bps
	v.rootLen = b.rootEnt * 32
	v.dataOff = v.rootOff + b.rootSecs*b.bps
	// A FAT can describe no more clusters than it has entries for.
	entries := v.fatBytes * 8 / int64(v.fatType)
	clusters := min(b.clusters, entries-2)
	if clusters < 1 || clusters > maxClusters {
		return nil, fmt.Errorf("invalid cluster count %d", clusters)
	}
	v.clusterCount = uint32(clusters)
	if v.fatType == FAT32 {
		v.rootCluster = b.rootCluster
		if !v.validCluster(v.rootCluster) {
			return nil, fmt.Errorf("invalid root cluster %d", v.rootCluster)
		}
	}
	return v, nil
}

func (v *volume) validCluster(c uint32) bool {
	return c >= 2 && uint64(c) < uint64(v.clusterCount)+2
}

// endOfChain reports whether a FAT entry marks the end of a chain.
func (v *volume) endOfChain(c uint32) bool {
	switch v.fatType {
	case FAT12:
		return c >= 0xFF8
	case FAT16:
		return c >= 0xFFF8
	}
	return c >= 0x0FFFFFF8
}

// readFAT reads len(p) bytes at byte pos of the first FAT, through a cache
// of pages (a FAT12 entry may straddle two).
func (v *volume) readFAT(p []byte, pos int64) error {
	if pos < 0 || pos+int64(len(p)) > v.fatBytes {
		return fmt.Errorf("FAT: entry at %d outside the FAT (%d bytes)", pos, v.fatBytes)
	}
	for i := range p {
		at := pos + int64(i)
		page := at / fatPageSize
		b, ok := v.fatPages[page]
		if !ok {
			b = make([]byte, min(int64(fatPageSize), v.fatBytes-page*fatPageSize))
			if err := v.readAt(b, v.fatOff+page*fatPageSize); err != nil {
				return fmt.Errorf("FAT: %w", err)
			}
			v.fatPages[page] = b
		}
		p[i] = b[at-page*fatPageSize]
	}
	return nil
}

// next returns the FAT entry of cluster c.
func (v *volume) next(c uint32) (uint32, error) {
	var b [4]byte
	switch v.fatType {
	case FAT12:
		if err := v.readFAT(b[:2], int64(c)*3/2); err != nil {
			return 0, err
		}
		e := uint32(binary.LittleEndian.Uint16(b[:]))
		if c&1 == 1 {
			return e >> 4, nil
		}
		return e & 0xFFF, nil
	case FAT16:
		if err := v.readFAT(b[:2], int64(c)*2); err != nil {
			return 0, err
		}
		return uint32(binary.LittleEndian.Uint16(b[:])), nil
	}
	if err := v.readFAT(b[:], int64(c)*4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]) & 0x0FFFFFFF, nil
}

// readChain reads up to limit bytes following the cluster chain from first.
// If exact is set, the chain must hold at least limit bytes (a file);
// otherwise it may end earlier (a directory). A cluster seen before is
// refused, so the walk takes at most min(clusters, limit/clusterSize+1) steps.
func (v *volume) readChain(first uint32, limit int64, exact bool) ([]byte, error) {
	out := make([]byte, 0, min(limit, 64<<10))
	c := first
	seen := map[uint32]bool{}
	for int64(len(out)) < limit {
		if !v.validCluster(c) {
			if !exact && v.endOfChain(c) {
				return out, nil
			}
			return nil, fmt.Errorf("bad cluster %#x in the chain from cluster %d after %d bytes", c, first, len(out))
		}
		if seen[c] {
			return nil, fmt.Errorf("cluster chain from cluster %d loops at cluster %d", first, c)
		}
		seen[c] = true
		n := min(v.clusterSize, limit-int64(len(out)))
		buf := make([]byte, n)
		if err := v.readAt(buf, v.dataOff+int64(c-2)*v.clusterSize); err != nil {
			return nil, err
		}
		out = append(out, buf...)
		if int64(len(out)) >= limit {
			break
		}
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

// rootDirent is the root directory: a cluster chain on FAT32, the fixed
// root directory region (cluster 0) on FAT12/16.
func (v *volume) rootDirent() dirent {
	return dirent{Entry: Entry{IsDir: true}, cluster: v.rootCluster}
}

// dirBytes reads the directory starting at cluster, at most v.maxDir bytes.
func (v *volume) dirBytes(cluster uint32) ([]byte, error) {
	if v.fatType != FAT32 && cluster == 0 {
		b := make([]byte, min(v.rootLen, v.maxDir))
		if err := v.readAt(b, v.rootOff); err != nil {
			return nil, err
		}
		return b, nil
	}
	return v.readChain(cluster, v.maxDir, false)
}

func (v *volume) readDir(cluster uint32) ([]dirent, error) {
	raw, err := v.dirBytes(cluster)
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
	cur := v.rootDirent()
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

// ReadFile returns the contents of the file at path in the FAT12/16/32 volume
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

// ListDir lists the directory at path ("" or "/" for the root) of the FAT12/16/32
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

// ReadRootFile reads the regular file name (matched case-insensitively, by
// its long name if it has one, else its 8.3 name) from the root directory of
// the FAT12/16/32 volume stored in r at [off, off+size). It reads at most
// maxDir bytes of the root directory and refuses a file larger than maxSize.
// If there is no such file, IsNotExist holds for the error.
func ReadRootFile(r io.ReaderAt, off, size int64, name string, maxSize, maxDir int64) ([]byte, error) {
	v, err := openVolume(r, off, size)
	if err != nil {
		return nil, err
	}
	v.maxDir = maxDir
	ents, err := v.readDir(v.rootCluster)
	if err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	for _, e := range ents {
		if e.IsDir || !strings.EqualFold(e.Name, name) {
			continue
		}
		if e.Size > maxSize {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", name, e.Size, maxSize)
		}
		if e.Size == 0 {
			return []byte{}, nil
		}
		b, err := v.readChain(e.cluster, e.Size, true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w in the root directory", name, errNotFound)
}

// readFull reads len(b) bytes at off; a short read at the end of r counts
// as "not there" (io.EOF).
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return err
}

// Probe reports the FAT type (FAT12, FAT16 or FAT32) and the label of the
// FAT volume at the start of r, or 0 if r does not hold one. The root
// directory's volume-label entry wins over the boot sector's label, as
// blkid does. err is only set for read errors.
func Probe(r io.ReaderAt) (fatType int, label string, err error) {
	bs := make([]byte, sectorSize)
	if err := readFull(r, bs, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, "", nil
		}
		return 0, "", fmt.Errorf("read at byte offset 0: %w", err)
	}
	if bs[0] != 0xEB && bs[0] != 0xE9 {
		return 0, "", nil
	}
	b, err := parseBoot(bs)
	if err != nil {
		return 0, "", nil
	}
	rootOff := (b.reserved + b.nfats*b.fatSz) * b.bps
	rootLen := b.rootEnt * 32
	if b.fatType == FAT32 {
		if b.rootCluster < 2 || int64(b.rootCluster)-2 >= b.clusters {
			return b.fatType, b.label, nil
		}
		rootOff += (int64(b.rootCluster) - 2) * b.spc * b.bps
		rootLen = b.spc * b.bps
	}
	dir := make([]byte, min(rootLen, maxRootScan))
	if err := readFull(r, dir, rootOff); err != nil {
		if errors.Is(err, io.EOF) {
			return b.fatType, b.label, nil
		}
		return 0, "", fmt.Errorf("read at byte offset %d: %w", rootOff, err)
	}
	label = b.label
	for i := 0; i+dirEntrySize <= len(dir); i += dirEntrySize {
		e := dir[i : i+dirEntrySize]
		if e[0] == 0 {
			break
		}
		attr := e[11]
		if e[0] == 0xE5 || attr&0x0F == attrLFN || attr&(attrVolumeID|attrDirectory) != attrVolumeID {
			continue // deleted, long-name part, or not a volume label
		}
		if l := cleanLabel(e[0:11]); l != "" {
			label = l
		}
		break
	}
	return b.fatType, label, nil
}
