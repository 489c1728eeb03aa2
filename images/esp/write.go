// Package esp writes FAT32 EFI system partition images and reads FAT volumes.
//
// Build is a small FAT32 writer for a known file set: it lays out all
// directories and files contiguously, writes VFAT long file names, fixed
// timestamps and a correct "..", FSInfo and backup boot sector, so the
// result passes `fsck.fat -n` and is byte-for-byte reproducible. The result
// is an ordinary FAT32 volume: Linux vfat and UEFI firmware (systemd-boot's
// boot counting renames) can modify it later.
//
// ReadFile, ListDir, ReadRootFile and Probe read FAT12/16/32 volumes (for
// example the ESP region of a disk image, or a config drive in PID 1). They
// are written for untrusted input: every read lies inside the volume, a
// cluster chain is followed at most once around (loops are refused), and
// directories and files are size-capped.
package esp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf16"
)

// File is a file to put on the ESP. Path is slash-separated ("EFI/BOOT/BOOTX64.EFI",
// a leading "/" is ignored); parent directories are created implicitly.
type File struct {
	Path string
	Data []byte
}

// Label is the volume label written to the boot sector and root directory.
const Label = "ESP"

const (
	sectorSize      = 512
	reservedSectors = 32
	numFATs         = 2
	fsInfoSector    = 1
	backupBootSec   = 6
	rootCluster     = 2
	dirEntrySize    = 32
	minClusters     = 65525      // fewer clusters is FAT16 by definition
	maxClusters     = 0x0FFFFFF5 // highest usable cluster number + 1 - 2
	eoc             = 0x0FFFFFFF
	mediaByte       = 0xF8

	attrReadOnly  = 0x01
	attrHidden    = 0x02
	attrSystem    = 0x04
	attrVolumeID  = 0x08
	attrDirectory = 0x10
	attrArchive   = 0x20
	attrLFN       = attrReadOnly | attrHidden | attrSystem | attrVolumeID
)

type node struct {
	name     string
	dir      bool
	data     []byte
	children []*node
	short    [11]byte
	lfn      bool
	cluster  uint32 // first cluster (0 for empty files)
	clusters uint32 // number of clusters
}

// geometry describes the layout of a FAT32 volume.
type geometry struct {
	totalSectors      uint32
	sectorsPerCluster uint32
	fatSectors        uint32
	clusters          uint32 // number of data clusters
}

func (g geometry) clusterSize() int64 { return int64(g.sectorsPerCluster) * sectorSize }
func (g geometry) dataStart() int64   { return int64(reservedSectors+numFATs*g.fatSectors) * sectorSize }
func (g geometry) clusterOff(c uint32) int64 {
	return g.dataStart() + int64(c-2)*g.clusterSize()
}

// chooseGeometry picks the largest cluster size up to 4 KiB that still
// gives a valid FAT32 cluster count, and a FAT large enough for all clusters.
func chooseGeometry(size int64, minCount uint32) (geometry, error) {
	if size%sectorSize != 0 {
		return geometry{}, fmt.Errorf("size %d is not a multiple of %d", size, sectorSize)
	}
	if size/sectorSize > 0xFFFFFFFF {
		return geometry{}, fmt.Errorf("size %d too large for FAT32", size)
	}
	total := uint32(size / sectorSize)
	for _, spc := range []uint32{8, 4, 2, 1} {
		g, ok := geometryFor(total, spc)
		if ok && g.clusters >= minCount && g.clusters <= maxClusters {
			return g, nil
		}
	}
	return geometry{}, fmt.Errorf("size %d is too small for FAT32 (needs at least %d clusters)", size, minClusters)
}

// geometryFor computes the FAT size for total sectors and spc sectors per
// cluster: the FAT must have an entry for every data cluster.
func geometryFor(total, spc uint32) (geometry, bool) {
	if total < reservedSectors+numFATs+spc {
		return geometry{}, false
	}
	fat := uint32(1)
	var clusters uint32
	for {
		clusters = (total - reservedSectors - numFATs*fat) / spc
		need := ((clusters+2)*4 + sectorSize - 1) / sectorSize
		if need <= fat {
			break
		}
		fat = need
	}
	return geometry{totalSectors: total, sectorsPerCluster: spc, fatSectors: fat, clusters: clusters}, true
}

// validName reports whether s is usable as a VFAT long name component.
func validName(s string) error {
	if s == "" || s == "." || s == ".." {
		return fmt.Errorf("invalid name %q", s)
	}
	if strings.TrimRight(s, ". ") != s {
		return fmt.Errorf("name %q ends with a dot or space", s)
	}
	if len(utf16.Encode([]rune(s))) > 255 {
		return fmt.Errorf("name %q longer than 255 UTF-16 units", s)
	}
	for _, r := range s {
		if r < 0x20 || strings.ContainsRune(`"*/:<>?\|`, r) || r == 0x7f {
			return fmt.Errorf("name %q contains invalid character %q", s, r)
		}
	}
	return nil
}

func buildTree(files []File) (*node, error) {
	root := &node{dir: true}
	for _, f := range files {
		p := strings.TrimPrefix(f.Path, "/")
		if p == "" || path.Clean(p) != p {
			return nil, fmt.Errorf("path %q is empty or not clean", f.Path)
		}
		parts := strings.Split(p, "/")
		cur := root
		for i, part := range parts {
			if err := validName(part); err != nil {
				return nil, fmt.Errorf("path %q: %w", f.Path, err)
			}
			var next *node
			for _, c := range cur.children {
				if strings.EqualFold(c.name, part) {
					next = c
				}
			}
			last := i == len(parts)-1
			switch {
			case next == nil:
				next = &node{name: part, dir: !last}
				if last {
					next.data = f.Data
				}
				cur.children = append(cur.children, next)
			case last || !next.dir:
				return nil, fmt.Errorf("path %q conflicts with an existing entry %q", f.Path, next.name)
			}
			cur = next
		}
	}
	var sortRec func(n *node)
	sortRec = func(n *node) {
		sort.Slice(n.children, func(i, j int) bool { return n.children[i].name < n.children[j].name })
		for _, c := range n.children {
			sortRec(c)
		}
	}
	sortRec(root)
	return root, nil
}

// shortName returns the 8.3 name for a long name and whether an LFN entry
// is needed. used holds the short names already taken in the directory.
func shortName(long string, used map[[11]byte]bool) ([11]byte, bool) {
	var sn [11]byte
	for i := range sn {
		sn[i] = ' '
	}
	lossy := false
	conv := func(s string) string {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == ' ' || r == '.':
				lossy = true
			case r >= 'a' && r <= 'z':
				b.WriteRune(r - 'a' + 'A')
				lossy = true // case changes need the long name to keep the case
			case r >= 0x80 || strings.ContainsRune(`+,;=[]`, r):
				b.WriteByte('_')
				lossy = true
			default:
				b.WriteRune(r)
			}
		}
		return b.String()
	}
	base, ext := strings.TrimLeft(long, "."), ""
	if base != long {
		lossy = true
	}
	if i := strings.LastIndexByte(base, '.'); i >= 0 {
		base, ext = base[:i], base[i+1:]
	}
	b, e := conv(base), conv(ext)
	if len(b) > 8 || len(e) > 3 || b == "" {
		lossy = true
	}
	if len(e) > 3 {
		e = e[:3]
	}
	if !lossy {
		copy(sn[:], b)
		copy(sn[8:], e)
		if !used[sn] {
			return sn, false
		}
	}
	if b == "" {
		b = "_"
	}
	for n := 1; ; n++ {
		tail := fmt.Sprintf("~%d", n)
		bb := b
		if len(bb)+len(tail) > 8 {
			bb = bb[:8-len(tail)]
		}
		for i := range sn {
			sn[i] = ' '
		}
		copy(sn[:], bb+tail)
		copy(sn[8:], e)
		if !used[sn] {
			return sn, true
		}
	}
}

func lfnChecksum(sn [11]byte) byte {
	var sum byte
	for _, c := range sn {
		sum = (sum>>1 | sum<<7) + c
	}
	return sum
}

func lfnSlots(name string) int {
	return (len(utf16.Encode([]rune(name))) + 12) / 13
}

func (n *node) dirSlots(isRoot bool) int {
	slots := 2 // "." and ".."
	if isRoot {
		slots = 1 // volume label
	}
	for _, c := range n.children {
		slots++
		if c.lfn {
			slots += lfnSlots(c.name)
		}
	}
	return slots
}

func fatDateTime(t time.Time) (date, tim uint16) {
	t = t.UTC()
	if t.Year() < 1980 {
		return 1<<5 | 1, 0
	}
	if t.Year() > 2107 {
		return 127<<9 | 12<<5 | 31, 23<<11 | 59<<5 | 29
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tim = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return date, tim
}

func putShortEntry(b []byte, name [11]byte, attr byte, cluster, size uint32, date, tim uint16) {
	copy(b[0:11], name[:])
	b[11] = attr
	binary.LittleEndian.PutUint16(b[14:], tim)  // creation time
	binary.LittleEndian.PutUint16(b[16:], date) // creation date
	binary.LittleEndian.PutUint16(b[18:], date) // last access date
	binary.LittleEndian.PutUint16(b[20:], uint16(cluster>>16))
	binary.LittleEndian.PutUint16(b[22:], tim) // write time
	binary.LittleEndian.PutUint16(b[24:], date)
	binary.LittleEndian.PutUint16(b[26:], uint16(cluster))
	binary.LittleEndian.PutUint32(b[28:], size)
}

// putLFN writes the long-name entries for name (in on-disk order) to b.
func putLFN(b []byte, name string, sum byte) int {
	u := utf16.Encode([]rune(name))
	n := lfnSlots(name)
	padded := make([]uint16, n*13)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0
		default:
			padded[i] = 0xFFFF
		}
	}
	for i := range n {
		ord := n - i // entries are stored last part first
		e := b[i*dirEntrySize : (i+1)*dirEntrySize]
		e[0] = byte(ord)
		if i == 0 {
			e[0] |= 0x40
		}
		e[11] = attrLFN
		e[13] = sum
		chars := padded[(ord-1)*13 : ord*13]
		for j, off := range lfnCharOffsets {
			binary.LittleEndian.PutUint16(e[off:], chars[j])
		}
	}
	return n * dirEntrySize
}

var lfnCharOffsets = [13]int{1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30}

// Build writes a FAT32 file system of size bytes holding files to w, which
// must read as zeros where Build does not write (a new or truncated file,
// or a zeroed region): Build writes the boot sectors, both FATs, all
// directories and all file data, and leaves free clusters untouched.
// All timestamps are mtime; the volume serial number is derived from mtime.
func Build(w io.WriterAt, size int64, files []File, mtime time.Time) error {
	g, err := chooseGeometry(size, minClusters)
	if err != nil {
		return fmt.Errorf("esp: %w", err)
	}
	return build(w, size, g, files, mtime)
}

func build(w io.WriterAt, size int64, g geometry, files []File, mtime time.Time) error {
	root, err := buildTree(files)
	if err != nil {
		return fmt.Errorf("esp: %w", err)
	}
	csize := g.clusterSize()
	// Short names, then cluster allocation in depth-first order.
	next := uint32(rootCluster)
	var alloc func(n *node, isRoot bool) error
	alloc = func(n *node, isRoot bool) error {
		used := map[[11]byte]bool{}
		for _, c := range n.children {
			c.short, c.lfn = shortName(c.name, used)
			used[c.short] = true
		}
		bytes := int64(n.dirSlots(isRoot)) * dirEntrySize
		n.clusters = uint32(max(1, (bytes+csize-1)/csize))
		n.cluster = next
		next += n.clusters
		for _, c := range n.children {
			if c.dir {
				if err := alloc(c, false); err != nil {
					return err
				}
				continue
			}
			if int64(len(c.data)) > 0xFFFFFFFF {
				return fmt.Errorf("file %q larger than 4 GiB", c.name)
			}
			c.clusters = uint32((int64(len(c.data)) + csize - 1) / csize)
			if c.clusters > 0 {
				c.cluster = next
				next += c.clusters
			}
		}
		if uint64(next)-2 > uint64(g.clusters) {
			return fmt.Errorf("files do not fit: need more than %d clusters of %d bytes", g.clusters, csize)
		}
		return nil
	}
	if err := alloc(root, true); err != nil {
		return fmt.Errorf("esp: %w", err)
	}
	usedClusters := next - 2

	// FAT.
	fat := make([]byte, int64(g.fatSectors)*sectorSize)
	binary.LittleEndian.PutUint32(fat[0:], 0x0FFFFF00|mediaByte)
	binary.LittleEndian.PutUint32(fat[4:], eoc)
	var chain func(n *node)
	chain = func(n *node) {
		for i := range n.clusters {
			c := n.cluster + i
			v := uint32(eoc)
			if i+1 < n.clusters {
				v = c + 1
			}
			binary.LittleEndian.PutUint32(fat[c*4:], v)
		}
		for _, c := range n.children {
			chain(c)
		}
	}
	chain(root)
	for i := range numFATs {
		if _, err := w.WriteAt(fat, int64(reservedSectors+uint32(i)*g.fatSectors)*sectorSize); err != nil {
			return fmt.Errorf("esp: write FAT: %w", err)
		}
	}

	// Boot sector, FSInfo and their backups.
	boot := make([]byte, 3*sectorSize)
	bs := boot[:sectorSize]
	copy(bs[0:], []byte{0xEB, 0x58, 0x90})
	copy(bs[3:11], "CAIRN   ")
	le := binary.LittleEndian
	le.PutUint16(bs[11:], sectorSize)
	bs[13] = byte(g.sectorsPerCluster)
	le.PutUint16(bs[14:], reservedSectors)
	bs[16] = numFATs
	bs[21] = mediaByte
	le.PutUint16(bs[24:], 63)  // sectors per track (CHS, unused)
	le.PutUint16(bs[26:], 255) // heads (CHS, unused)
	le.PutUint32(bs[32:], g.totalSectors)
	le.PutUint32(bs[36:], g.fatSectors)
	le.PutUint32(bs[44:], rootCluster)
	le.PutUint16(bs[48:], fsInfoSector)
	le.PutUint16(bs[50:], backupBootSec)
	bs[64] = 0x80 // drive number
	bs[66] = 0x29 // extended boot signature
	le.PutUint32(bs[67:], uint32(mtime.Unix())^0x43414952)
	copy(bs[71:82], fmt.Sprintf("%-11s", Label))
	copy(bs[82:90], "FAT32   ")
	copy(bs[90:], []byte{0xF4, 0xEB, 0xFD}) // hlt; jmp $-1: not bootable
	bs[510], bs[511] = 0x55, 0xAA
	fsi := boot[sectorSize : 2*sectorSize]
	le.PutUint32(fsi[0:], 0x41615252)
	le.PutUint32(fsi[484:], 0x61417272)
	le.PutUint32(fsi[488:], g.clusters-usedClusters)
	le.PutUint32(fsi[492:], next)
	le.PutUint32(fsi[508:], 0xAA550000)
	boot[3*sectorSize-2], boot[3*sectorSize-1] = 0x55, 0xAA // third boot sector signature
	for _, s := range []int64{0, backupBootSec} {
		if _, err := w.WriteAt(boot, s*sectorSize); err != nil {
			return fmt.Errorf("esp: write boot sector: %w", err)
		}
	}

	// Directories and file data.
	date, tim := fatDateTime(mtime)
	var dotName, dotdotName [11]byte
	copy(dotName[:], ".          ")
	copy(dotdotName[:], "..         ")
	var label [11]byte
	copy(label[:], fmt.Sprintf("%-11s", Label))
	var writeDir func(n, parent *node) error
	writeDir = func(n, parent *node) error {
		buf := make([]byte, int64(n.clusters)*csize)
		off := 0
		if parent == nil {
			putShortEntry(buf[off:], label, attrVolumeID, 0, 0, date, tim)
			off += dirEntrySize
		} else {
			putShortEntry(buf[off:], dotName, attrDirectory, n.cluster, 0, date, tim)
			off += dirEntrySize
			pc := parent.cluster
			if pc == rootCluster {
				pc = 0 // ".." pointing to the root directory is 0 by definition
			}
			putShortEntry(buf[off:], dotdotName, attrDirectory, pc, 0, date, tim)
			off += dirEntrySize
		}
		for _, c := range n.children {
			if c.lfn {
				off += putLFN(buf[off:], c.name, lfnChecksum(c.short))
			}
			if c.dir {
				putShortEntry(buf[off:], c.short, attrDirectory, c.cluster, 0, date, tim)
			} else {
				putShortEntry(buf[off:], c.short, attrArchive, c.cluster, uint32(len(c.data)), date, tim)
			}
			off += dirEntrySize
		}
		if _, err := w.WriteAt(buf, g.clusterOff(n.cluster)); err != nil {
			return fmt.Errorf("write directory %q: %w", n.name, err)
		}
		for _, c := range n.children {
			if c.dir {
				if err := writeDir(c, n); err != nil {
					return err
				}
				continue
			}
			if len(c.data) == 0 {
				continue
			}
			if _, err := w.WriteAt(c.data, g.clusterOff(c.cluster)); err != nil {
				return fmt.Errorf("write file %q: %w", c.name, err)
			}
		}
		return nil
	}
	if err := writeDir(root, nil); err != nil {
		return fmt.Errorf("esp: %w", err)
	}
	// Make sure the image has its full size even if the tail is free space.
	if _, err := w.WriteAt([]byte{0}, size-1); err != nil {
		return fmt.Errorf("esp: extend image: %w", err)
	}
	return nil
}

var errNotFound = errors.New("file does not exist")
