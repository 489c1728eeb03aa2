package provision

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// The config drive's file system is outside input read by PID 1, so it is
// read here with bounded code rather than a general file system library:
// only the root directory is read, every read lies inside the device, a
// directory is at most maxDirBytes, the file at most MaxConfigSize, and a
// FAT cluster chain is followed at most as many steps as the volume has
// clusters (and as its byte count needs), with loops detected.

// maxDirBytes bounds the root directory read from a config drive.
const maxDirBytes = 1 << 20

// errNoConfig reports that the root directory has no config.yaml.
var errNoConfig = errors.New("open " + DriveFile + ": not found in the root directory")

// device is a bounded view of a block device or image.
type device struct {
	r    io.ReaderAt
	size int64
}

// read reads n bytes at off; both must lie inside the device.
func (d device) read(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return nil, fmt.Errorf("read of %d bytes at byte offset %d outside the device (%d bytes)", n, off, d.size)
	}
	b := make([]byte, n)
	if err := readAt(d.r, b, off); err != nil {
		return nil, fmt.Errorf("read at byte offset %d: %w", off, err)
	}
	return b, nil
}

// fatVolume is the geometry of a FAT12/16/32 volume.
type fatVolume struct {
	dev         device
	typ         string
	clusterSize int64
	fatOff      int64 // byte offset of the first FAT
	fatBytes    int64 // bytes of one FAT
	rootOff     int64 // FAT12/16: byte offset of the fixed root directory
	rootLen     int64 // FAT12/16: its length
	rootCluster uint32
	dataOff     int64
	clusters    uint32 // data clusters: valid numbers are 2..clusters+1
}

func openFAT(d device, typ string) (*fatVolume, error) {
	bs, err := d.read(0, 512)
	if err != nil {
		return nil, err
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(bs[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(bs[o:])) }
	bps, spc, rsvd, nfats, rootEnt := le16(11), int64(bs[13]), le16(14), int64(bs[16]), le16(17)
	tot, fatsz := le16(19), le16(22)
	if tot == 0 {
		tot = le32(32)
	}
	if fatsz == 0 {
		fatsz = le32(36)
	}
	pow2 := func(v int64) bool { return v > 0 && v&(v-1) == 0 }
	if bps < 512 || bps > 4096 || !pow2(bps) || !pow2(spc) || spc > 128 || rsvd == 0 || nfats == 0 || tot == 0 || fatsz == 0 {
		return nil, errors.New("invalid FAT boot sector (byte offset 11)")
	}
	if tot*bps > d.size {
		return nil, fmt.Errorf("%s file system of %d bytes is larger than its device (%d bytes) (byte offset 19/32)", typ, tot*bps, d.size)
	}
	v := &fatVolume{dev: device{d.r, tot * bps}, typ: typ, clusterSize: bps * spc, fatOff: rsvd * bps, fatBytes: fatsz * bps}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	v.rootOff = (rsvd + nfats*fatsz) * bps
	v.rootLen = rootEnt * 32
	v.dataOff = v.rootOff + rootSecs*bps
	if v.dataOff >= v.dev.size {
		return nil, fmt.Errorf("%s tables extend beyond the volume (byte offset 14)", typ)
	}
	clusters := (v.dev.size - v.dataOff) / v.clusterSize
	// A FAT can describe no more clusters than it has entries for.
	var entries int64
	switch typ {
	case FAT12:
		entries = v.fatBytes * 2 / 3
	case FAT16:
		entries = v.fatBytes / 2
	case FAT32:
		entries = v.fatBytes / 4
	default:
		return nil, fmt.Errorf("unsupported file system %q", typ)
	}
	clusters = min(clusters, entries-2, 0x0FFFFFF5)
	if clusters < 1 {
		return nil, fmt.Errorf("%s volume has no data clusters", typ)
	}
	v.clusters = uint32(clusters)
	if typ == FAT32 {
		v.rootCluster = uint32(le32(44))
		if !v.valid(v.rootCluster) {
			return nil, fmt.Errorf("invalid root cluster %d (byte offset 44)", v.rootCluster)
		}
	}
	return v, nil
}

func (v *fatVolume) valid(c uint32) bool {
	return c >= 2 && int64(c) < int64(v.clusters)+2
}

// endOfChain reports whether a FAT entry marks the end of a chain.
func (v *fatVolume) endOfChain(c uint32) bool {
	switch v.typ {
	case FAT12:
		return c >= 0xFF8
	case FAT16:
		return c >= 0xFFF8
	}
	return c >= 0x0FFFFFF8
}

// next reads the FAT entry of cluster c (valid).
func (v *fatVolume) next(c uint32) (uint32, error) {
	switch v.typ {
	case FAT12:
		off := int64(c) * 3 / 2
		b, err := v.dev.read(v.fatOff+off, 2)
		if err != nil {
			return 0, fmt.Errorf("FAT: %w", err)
		}
		e := uint32(binary.LittleEndian.Uint16(b))
		if c&1 == 1 {
			return e >> 4, nil
		}
		return e & 0xFFF, nil
	case FAT16:
		b, err := v.dev.read(v.fatOff+int64(c)*2, 2)
		if err != nil {
			return 0, fmt.Errorf("FAT: %w", err)
		}
		return uint32(binary.LittleEndian.Uint16(b)), nil
	}
	b, err := v.dev.read(v.fatOff+int64(c)*4, 4)
	if err != nil {
		return 0, fmt.Errorf("FAT: %w", err)
	}
	return binary.LittleEndian.Uint32(b) & 0x0FFFFFFF, nil
}

// readChain reads limit bytes following the chain from first. With exact,
// the chain must hold limit bytes (a file); without, it may end earlier (a
// directory). A cluster seen before is refused, so the walk takes at most
// min(clusters, limit/clusterSize+1) steps.
func (v *fatVolume) readChain(first uint32, limit int64, exact bool) ([]byte, error) {
	out := make([]byte, 0, min(limit, 64<<10))
	seen := map[uint32]bool{}
	c := first
	for int64(len(out)) < limit {
		if !v.valid(c) {
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
		b, err := v.dev.read(v.dataOff+int64(c-2)*v.clusterSize, n)
		if err != nil {
			return nil, err
		}
		out = append(out, b...)
		if int64(len(out)) >= limit {
			break
		}
		if c, err = v.next(c); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// rootDir reads the root directory.
func (v *fatVolume) rootDir() ([]byte, error) {
	if v.typ != FAT32 {
		return v.dev.read(v.rootOff, min(v.rootLen, maxDirBytes))
	}
	return v.readChain(v.rootCluster, maxDirBytes, false)
}

// lfnCharOffsets are the byte offsets of the 13 UCS-2 characters in a long
// file name entry.
var lfnCharOffsets = [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

func lfnChecksum(sn []byte) byte {
	var s byte
	for _, c := range sn[:11] {
		s = (s&1)<<7 + s>>1 + c
	}
	return s
}

// shortName renders an 8.3 directory entry name.
func shortName(e []byte) string {
	base := strings.TrimRight(string(e[0:8]), " ")
	ext := strings.TrimRight(string(e[8:11]), " ")
	if ext != "" {
		return base + "." + ext
	}
	return base
}

// findFATFile finds DriveFile (case-insensitively, long name or 8.3 name)
// among the regular files of a raw FAT directory: its first cluster and size.
func findFATFile(dir []byte) (cluster uint32, size int64, err error) {
	var lfn []uint16
	var sum byte
	want := 0 // next expected LFN ordinal; 0 none pending; -1 complete
	for i := 0; i+32 <= len(dir); i += 32 {
		e := dir[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 {
			want = 0
			continue
		}
		attr := e[11]
		if attr&0x3F == 0x0F { // long name part
			ord := int(e[0] & 0x3F)
			switch {
			case e[0]&0x40 != 0 && ord >= 1 && ord <= 20:
				lfn, sum, want = make([]uint16, ord*13), e[13], ord
			case ord == want && ord > 0 && e[13] == sum:
			default:
				want = 0
				continue
			}
			for j, o := range lfnCharOffsets {
				lfn[(ord-1)*13+j] = binary.LittleEndian.Uint16(e[o:])
			}
			if want--; want == 0 {
				want = -1
			}
			continue
		}
		name := shortName(e)
		if want == -1 && lfnChecksum(e) == sum {
			u := lfn
			for k, ch := range u {
				if ch == 0 {
					u = u[:k]
					break
				}
			}
			name = string(utf16.Decode(u))
		}
		want = 0
		if attr&0x18 != 0 || !strings.EqualFold(name, DriveFile) {
			continue // volume label, directory, or another name
		}
		cl := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
		return cl, int64(binary.LittleEndian.Uint32(e[28:])), nil
	}
	return 0, 0, errNoConfig
}

// readFATFile reads DriveFile from the root of a FAT12/16/32 volume.
func readFATFile(d device, typ string) ([]byte, error) {
	v, err := openFAT(d, typ)
	if err != nil {
		return nil, err
	}
	dir, err := v.rootDir()
	if err != nil {
		return nil, fmt.Errorf("root directory: %w", err)
	}
	cl, size, err := findFATFile(dir)
	if err != nil {
		return nil, err
	}
	if size > MaxConfigSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", DriveFile, size, MaxConfigSize)
	}
	if size == 0 {
		return []byte{}, nil
	}
	b, err := v.readChain(cl, size, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DriveFile, err)
	}
	return b, nil
}

// iso9660 constants.
const (
	isoBlock    = 2048
	isoMaxVDs   = 32 // volume descriptors examined after sector 16
	isoFlagDir  = 0x02
	isoFlagMore = 0x80 // multi-extent
)

// isoRoot is a root directory extent from a volume descriptor.
type isoRoot struct {
	lba, size int64
	joliet    bool
}

// isoRoots returns the Joliet root (if any) and then the primary root.
func isoRoots(d device) ([]isoRoot, error) {
	var primary, joliet *isoRoot
	for i := int64(0); i < isoMaxVDs; i++ {
		vd, err := d.read((16+i)*isoBlock, isoBlock)
		if err != nil {
			return nil, fmt.Errorf("volume descriptor %d: %w", i, err)
		}
		if string(vd[1:6]) != "CD001" || vd[0] == 255 {
			break
		}
		if vd[0] != 1 && vd[0] != 2 {
			continue
		}
		if bs := binary.LittleEndian.Uint16(vd[128:]); bs != isoBlock {
			return nil, fmt.Errorf("iso9660 logical block size %d, not %d (byte offset %d)", bs, isoBlock, (16+i)*isoBlock+128)
		}
		rec := vd[156:190]
		r := &isoRoot{lba: int64(binary.LittleEndian.Uint32(rec[2:])), size: int64(binary.LittleEndian.Uint32(rec[10:]))}
		switch {
		case vd[0] == 1 && primary == nil:
			primary = r
		case vd[0] == 2 && joliet == nil && vd[88] == '%' && vd[89] == '/' && (vd[90] == '@' || vd[90] == 'C' || vd[90] == 'E'):
			r.joliet = true
			joliet = r
		}
	}
	var out []isoRoot
	if joliet != nil {
		out = append(out, *joliet)
	}
	if primary != nil {
		out = append(out, *primary)
	}
	if len(out) == 0 {
		return nil, errors.New("no iso9660 primary volume descriptor")
	}
	return out, nil
}

// isoName returns a directory record's name: Joliet's UCS-2, else a Rock
// Ridge NM name if there is one, else the ISO name without its version.
func isoName(rec []byte, joliet bool) string {
	nl := int(rec[32])
	raw := rec[33 : 33+nl]
	if joliet {
		u := make([]uint16, len(raw)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(raw[2*i:])
		}
		raw = []byte(string(utf16.Decode(u)))
	} else {
		su := 33 + nl
		if nl%2 == 0 {
			su++ // padding byte
		}
		var nm []byte
		found := false
		for su+4 <= len(rec) {
			l := int(rec[su+2])
			if l < 4 || su+l > len(rec) {
				break
			}
			if string(rec[su:su+2]) == "NM" && l >= 5 && rec[su+4]&0x06 == 0 {
				nm = append(nm, rec[su+5:su+l]...)
				found = true
			}
			su += l
		}
		if found && len(nm) > 0 {
			return string(nm)
		}
	}
	n, _, _ := strings.Cut(string(raw), ";")
	return strings.TrimSuffix(n, ".")
}

// findISOFile finds DriveFile in a raw iso9660 directory: its extent.
func findISOFile(dir []byte, joliet bool) (lba, size int64, err error) {
	for i := 0; i < len(dir); {
		l := int(dir[i])
		if l == 0 { // records do not cross blocks: skip to the next one
			i = (i/isoBlock + 1) * isoBlock
			continue
		}
		if l < 34 || i+l > len(dir) || 33+int(dir[i+32]) > l {
			return 0, 0, fmt.Errorf("malformed iso9660 directory record at byte %d of the root directory", i)
		}
		rec := dir[i : i+l]
		i += l
		if rec[32] == 1 && (rec[33] == 0 || rec[33] == 1) {
			continue // "." and ".."
		}
		if !strings.EqualFold(isoName(rec, joliet), DriveFile) || rec[25]&isoFlagDir != 0 {
			continue
		}
		if rec[25]&isoFlagMore != 0 || rec[26] != 0 || rec[27] != 0 {
			return 0, 0, fmt.Errorf("%s is multi-extent or interleaved; not supported", DriveFile)
		}
		return int64(binary.LittleEndian.Uint32(rec[2:])), int64(binary.LittleEndian.Uint32(rec[10:])), nil
	}
	return 0, 0, errNoConfig
}

// readISOFile reads DriveFile from the root of an iso9660 volume (Joliet
// or Rock Ridge names when present).
func readISOFile(d device) ([]byte, error) {
	pvd, err := d.read(16*isoBlock, isoBlock)
	if err != nil {
		return nil, err
	}
	if blocks := int64(binary.LittleEndian.Uint32(pvd[80:])); blocks*isoBlock > d.size {
		return nil, fmt.Errorf("iso9660 volume of %d blocks is larger than its device (%d bytes) (byte offset %d)", blocks, d.size, 16*isoBlock+80)
	}
	roots, err := isoRoots(d)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range roots {
		dir, err := d.read(r.lba*isoBlock, min(r.size, maxDirBytes))
		if err != nil {
			errs = append(errs, fmt.Errorf("root directory: %w", err))
			continue
		}
		lba, size, err := findISOFile(dir, r.joliet)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if size > MaxConfigSize {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", DriveFile, size, MaxConfigSize)
		}
		b, err := d.read(lba*isoBlock, size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", DriveFile, err)
		}
		return b, nil
	}
	return nil, errors.Join(errs...)
}
