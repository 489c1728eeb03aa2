package disk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
	"github.com/google/uuid"
)

// makeState creates the empty STATE ext4 file system at [off, off+size) of
// f with go-diskfs (4 KiB blocks, no reserved GDT blocks / resize inode,
// which go-diskfs cannot write correctly) and then makes it reproducible:
// go-diskfs stamps time.Now() into the superblocks and inodes and uses a
// random directory hash seed.
func makeState(f *os.File, off, size int64, osName string, mtime time.Time) error {
	fsUUID := uuid.MustParse(DeriveUUID(osName, "STATE-fs"))
	_, err := ext4.Create(file.New(f, false), size, off, SectorSize, &ext4.Params{
		UUID:            &fsUUID,
		SectorsPerBlock: 8,
		VolumeName:      LabelState,
		Features: []ext4.FeatureOpt{
			ext4.WithFeatureReservedGDTBlocksForExpansion(false),
			ext4.WithFeatureMetadataChecksums(false),
		},
	})
	if err != nil {
		return fmt.Errorf("create ext4: %w", err)
	}
	seed := uuid.MustParse(DeriveUUID(osName, "STATE-hash-seed"))
	if err := normalizeExt4(f, off, mtime, seed); err != nil {
		return fmt.Errorf("normalize ext4: %w", err)
	}
	return nil
}

// ext4 on-disk offsets (superblock and inode), from the kernel's ext4.h.
const (
	sbOff            = 1024
	sbMtime          = 0x2C
	sbWtime          = 0x30
	sbLastcheck      = 0x40
	sbMagic          = 0x38
	sbUUID           = 0x68
	sbHashSeed       = 0xEC
	sbMkfsTime       = 0x108
	sbTimeHi         = 0x274 // s_wtime_hi, s_mtime_hi, s_mkfs_time_hi, s_lastcheck_hi
	sbChecksum       = 0x3FC
	roCompatMetaCsum = 0x400
	roCompatSparse   = 0x1
	incompat64Bit    = 0x80

	inoAtime      = 0x08
	inoCtime      = 0x0C
	inoMtime      = 0x10
	inoChecksumLo = 0x7C
	inoExtraIsize = 0x80
	inoChecksumHi = 0x82
	inoCtimeExtra = 0x84
	inoCrtimeEnd  = 0x98
)

type rw interface {
	io.ReaderAt
	io.WriterAt
}

func isPowerOf(g, base uint64) bool {
	for g > 1 && g%base == 0 {
		g /= base
	}
	return g == 1
}

// normalizeExt4 replaces every timestamp of a freshly created, empty ext4
// file system with t (s_mtime, the last mount time, with 0) and its hash
// seed with seed. It refuses file systems with metadata_csum, whose
// checksums would have to be recomputed.
func normalizeExt4(f rw, off int64, t time.Time, seed uuid.UUID) error {
	le := binary.LittleEndian
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, off+sbOff); err != nil {
		return fmt.Errorf("read superblock: %w", err)
	}
	if le.Uint16(sb[sbMagic:]) != 0xEF53 {
		return errors.New("no ext4 superblock")
	}
	if le.Uint32(sb[100:])&roCompatMetaCsum != 0 {
		return errors.New("metadata_csum is not supported")
	}
	ts := t.Unix()
	if ts < 0 || ts > 0xFFFFFFFF {
		return fmt.Errorf("time %v out of range", t)
	}
	blockSize := int64(1024) << le.Uint32(sb[24:])
	firstData := int64(le.Uint32(sb[20:]))
	blocksPerGroup := int64(le.Uint32(sb[32:]))
	inodesPerGroup := int64(le.Uint32(sb[40:]))
	inodeSize := int64(le.Uint16(sb[88:]))
	blocks := int64(le.Uint32(sb[4:])) | int64(le.Uint32(sb[0x150:]))<<32
	descSize := int64(32)
	if le.Uint32(sb[96:])&incompat64Bit != 0 {
		descSize = int64(le.Uint16(sb[0xFE:]))
	}
	sparse := le.Uint32(sb[100:])&roCompatSparse != 0
	if blocksPerGroup == 0 || inodesPerGroup == 0 || inodeSize < 128 || descSize < 32 {
		return errors.New("implausible superblock")
	}
	groups := (blocks - firstData + blocksPerGroup - 1) / blocksPerGroup

	for g := int64(0); g < groups; g++ {
		if g > 1 && sparse && !isPowerOf(uint64(g), 3) && !isPowerOf(uint64(g), 5) && !isPowerOf(uint64(g), 7) {
			continue
		}
		pos := off + sbOff
		if g > 0 {
			pos = off + (firstData+g*blocksPerGroup)*blockSize
		}
		b := make([]byte, 1024)
		if _, err := f.ReadAt(b, pos); err != nil {
			return fmt.Errorf("read superblock copy of group %d: %w", g, err)
		}
		// go-diskfs leaves s_block_group_nr 0 in the copies; match the UUID.
		if le.Uint16(b[sbMagic:]) != 0xEF53 || !bytes.Equal(b[sbUUID:sbUUID+16], sb[sbUUID:sbUUID+16]) {
			return fmt.Errorf("superblock copy of group %d not found", g)
		}
		le.PutUint32(b[sbMtime:], 0)
		le.PutUint32(b[sbWtime:], uint32(ts))
		le.PutUint32(b[sbLastcheck:], uint32(ts))
		le.PutUint32(b[sbMkfsTime:], uint32(ts))
		clear(b[sbTimeHi : sbTimeHi+4])
		copy(b[sbHashSeed:sbHashSeed+16], seed[:])
		if _, err := f.WriteAt(b, pos); err != nil {
			return fmt.Errorf("write superblock copy of group %d: %w", g, err)
		}
	}

	// Timestamps of every in-use inode.
	gdtOff := off + (firstData+1)*blockSize
	for g := int64(0); g < groups; g++ {
		d := make([]byte, descSize)
		if _, err := f.ReadAt(d, gdtOff+g*descSize); err != nil {
			return fmt.Errorf("read group descriptor %d: %w", g, err)
		}
		inodeBitmap := int64(le.Uint32(d[0x4:]))
		inodeTable := int64(le.Uint32(d[0x8:]))
		if descSize >= 64 {
			inodeBitmap |= int64(le.Uint32(d[0x24:])) << 32
			inodeTable |= int64(le.Uint32(d[0x28:])) << 32
		}
		bm := make([]byte, (inodesPerGroup+7)/8)
		if _, err := f.ReadAt(bm, off+inodeBitmap*blockSize); err != nil {
			return fmt.Errorf("read inode bitmap %d: %w", g, err)
		}
		ino := make([]byte, inodeSize)
		for i := int64(0); i < inodesPerGroup; i++ {
			if bm[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			pos := off + inodeTable*blockSize + i*inodeSize
			if _, err := f.ReadAt(ino, pos); err != nil {
				return fmt.Errorf("read inode %d: %w", g*inodesPerGroup+i+1, err)
			}
			for _, o := range []int{inoAtime, inoCtime, inoMtime} {
				if le.Uint32(ino[o:]) != 0 {
					le.PutUint32(ino[o:], uint32(ts))
				}
			}
			le.PutUint16(ino[inoChecksumLo:], 0)
			if inodeSize > 128 {
				extra := int(le.Uint16(ino[inoExtraIsize:]))
				end := min(128+extra, inoCrtimeEnd)
				if end > inoChecksumHi {
					le.PutUint16(ino[inoChecksumHi:], 0)
				}
				for o := inoCtimeExtra; o+4 <= end; o += 4 {
					if o == 0x90 && le.Uint32(ino[o:]) != 0 { // i_crtime
						le.PutUint32(ino[o:], uint32(ts))
					} else if o != 0x90 {
						le.PutUint32(ino[o:], 0) // *_extra: nanoseconds and epoch bits
					}
				}
			}
			if _, err := f.WriteAt(ino, pos); err != nil {
				return fmt.Errorf("write inode %d: %w", g*inodesPerGroup+i+1, err)
			}
		}
	}
	return nil
}

// SHA256File returns the SHA-256 of the file at path. Holes of a sparse
// file (found with SEEK_DATA/SEEK_HOLE) are hashed from a zero buffer
// instead of being read.
func SHA256File(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, fmt.Errorf("sha256: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sum, fmt.Errorf("sha256: %w", err)
	}
	h := sha256.New()
	buf := make([]byte, 1<<20)
	zeros := make([]byte, 1<<20)
	hashZeros := func(n int64) {
		for n > 0 {
			k := min(n, int64(len(zeros)))
			h.Write(zeros[:k])
			n -= k
		}
	}
	size := st.Size()
	for pos := int64(0); pos < size; {
		data, err := seekData(f, pos)
		if err != nil {
			return sum, fmt.Errorf("sha256 %s: %w", path, err)
		}
		if data < 0 || data >= size { // only a hole remains
			hashZeros(size - pos)
			break
		}
		hashZeros(data - pos)
		hole, err := seekHole(f, data)
		if err != nil {
			return sum, fmt.Errorf("sha256 %s: %w", path, err)
		}
		hole = min(hole, size)
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, data, hole-data), buf); err != nil {
			return sum, fmt.Errorf("sha256 %s: read: %w", path, err)
		}
		pos = hole
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
