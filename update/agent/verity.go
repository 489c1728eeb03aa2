package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// dm-verity parameters of Cairn root images (docs/architecture.md): format
// 1, sha256, 4096-byte data and hash blocks, no superblock, the hash tree
// right after the data blocks on the same device.
const (
	verityBlock        = 4096
	verityDigest       = sha256.Size
	verityPerBlockBits = 7 // 4096/32 = 128 digests per hash block
	verityPerBlock     = 1 << verityPerBlockBits
	maxVerityBlocks    = 1 << 40 // as init/cmdline
)

// verityLevels returns the number of hash blocks of each tree level, level
// 0 (the digests of the data blocks) first. One data block has no tree.
func verityLevels(dataBlocks uint64) []uint64 {
	var levels []uint64
	for n := 0; verityPerBlockBits*n < 64 && (dataBlocks-1)>>(verityPerBlockBits*n) > 0; n++ {
		shift := uint(verityPerBlockBits * (n + 1))
		levels = append(levels, (dataBlocks+(1<<shift)-1)>>shift)
	}
	return levels
}

// VerityImageSize is the size of a root image with dataBlocks data blocks
// and its hash tree.
func VerityImageSize(dataBlocks uint64) int64 {
	total := dataBlocks
	for _, n := range verityLevels(dataBlocks) {
		total += n
	}
	return int64(total * verityBlock)
}

// VerifyVerity reads a root image (data blocks, then its hash tree) from r
// and checks every block the kernel would check: each data block and each
// hash block against the digest one level up, the unused tail of every hash
// block for zeros, and the top against rootHash. It is what dm-verity will
// accept at boot, read back from the device.
func VerifyVerity(ctx context.Context, r io.ReaderAt, dataBlocks uint64, salt, rootHash []byte) error {
	if dataBlocks == 0 || dataBlocks > maxVerityBlocks {
		return fmt.Errorf("verity: %d data blocks out of range", dataBlocks)
	}
	if len(rootHash) != verityDigest {
		return fmt.Errorf("verity: root hash of %d bytes, want %d", len(rootHash), verityDigest)
	}
	levels := verityLevels(dataBlocks)
	// Level i starts at starts[i]: the top level first, right after the data.
	starts := make([]int64, len(levels))
	pos := dataBlocks
	for i := len(levels) - 1; i >= 0; i-- {
		starts[i] = int64(pos * verityBlock)
		pos += levels[i]
	}
	hashOf := func(b []byte) []byte {
		h := sha256.New()
		h.Write(salt)
		h.Write(b)
		return h.Sum(nil)
	}
	// childStart/childCount: the blocks one level down (data for level 0).
	childStart, childCount := int64(0), dataBlocks
	const batch = verityPerBlock // children per hash block
	children := make([]byte, batch*verityBlock)
	stored := make([]byte, verityBlock)
	for lvl, nblocks := range levels {
		for hb := uint64(0); hb < nblocks; hb++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			off := starts[lvl] + int64(hb*verityBlock)
			if n, err := r.ReadAt(stored, off); n != len(stored) {
				return fmt.Errorf("verity: read hash block at %d: %w", off, orEOF(err))
			}
			first := hb * batch
			count := min(batch, childCount-first)
			buf := children[:count*verityBlock]
			coff := childStart + int64(first*verityBlock)
			if n, err := r.ReadAt(buf, coff); n != len(buf) {
				return fmt.Errorf("verity: read blocks at %d: %w", coff, orEOF(err))
			}
			for i := uint64(0); i < count; i++ {
				got := hashOf(buf[i*verityBlock : (i+1)*verityBlock])
				want := stored[i*verityDigest : (i+1)*verityDigest]
				if subtle.ConstantTimeCompare(got, want) != 1 {
					what := "data"
					if lvl > 0 {
						what = fmt.Sprintf("level %d hash", lvl-1)
					}
					return fmt.Errorf("verity: %s block at byte %d does not match its digest", what, coff+int64(i*verityBlock))
				}
			}
			for _, b := range stored[count*verityDigest:] {
				if b != 0 {
					return fmt.Errorf("verity: unused tail of the hash block at byte %d is not zero", off)
				}
			}
		}
		childStart, childCount = starts[lvl], nblocks
	}
	// The top: the single block of the highest level (or the only data block).
	top := stored[:verityBlock]
	if n, err := r.ReadAt(top, childStart); n != len(top) {
		return fmt.Errorf("verity: read top block at %d: %w", childStart, orEOF(err))
	}
	if childCount != 1 {
		return errors.New("verity: tree does not end in one block")
	}
	if subtle.ConstantTimeCompare(hashOf(top), rootHash) != 1 {
		return errors.New("verity: root hash of the written image differs from the signed one")
	}
	return nil
}
