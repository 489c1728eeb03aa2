package chunk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"cairn.dev/cairn/internal/atomicfile"
)

// WriteStats says what WriteChunks did.
type WriteStats struct {
	Written         int   // blobs written
	Existing        int   // blobs already present (or repeated in the image)
	Bytes           int64 // uncompressed bytes of the written blobs
	CompressedBytes int64 // bytes of the written blobs on disk
}

// WriteChunks stores every chunk of the image at imagePath that idx
// describes as chunksDir/<hex[0:2]>/<hex>, zstd-compressed. Blobs that
// already exist are skipped (the name is the sha256 of the content, so an
// existing blob is the same chunk). Each chunk is hashed again before it is
// written, so an image that changed since BuildIndex is an error, not a
// corrupt repository. Blobs appear atomically (temporary file + rename).
func WriteChunks(ctx context.Context, imagePath string, idx *Index, chunksDir string) (WriteStats, error) {
	var st WriteStats
	if err := idx.Validate(); err != nil {
		return st, err
	}
	f, err := os.Open(imagePath)
	if err != nil {
		return st, fmt.Errorf("write chunks: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, fmt.Errorf("write chunks: %w", err)
	}
	if fi.Size() != idx.Size {
		return st, fmt.Errorf("write chunks: %s has %d bytes, the index describes %d", imagePath, fi.Size(), idx.Size)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return st, fmt.Errorf("write chunks: zstd: %w", err)
	}
	defer enc.Close()
	seen := make(map[string]bool, len(idx.Chunks))
	buf := make([]byte, idx.MaxSize)
	for i, c := range idx.Chunks {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if seen[c.SHA256] {
			st.Existing++
			continue
		}
		seen[c.SHA256] = true
		dst := filepath.Join(chunksDir, c.SHA256[:2], c.SHA256)
		if _, err := os.Stat(dst); err == nil {
			st.Existing++
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return st, fmt.Errorf("write chunks: %w", err)
		}
		data := buf[:c.Size]
		if _, err := f.ReadAt(data, c.Offset); err != nil {
			return st, fmt.Errorf("write chunks: read chunk %d of %s: %w", i, imagePath, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != c.SHA256 {
			return st, fmt.Errorf("write chunks: chunk %d of %s does not match the index (image changed?)", i, imagePath)
		}
		blob := enc.EncodeAll(data, nil)
		if err := writeBlob(dst, blob); err != nil {
			return st, fmt.Errorf("write chunks: %w", err)
		}
		st.Written++
		st.Bytes += c.Size
		st.CompressedBytes += int64(len(blob))
	}
	return st, nil
}

// DecodeBlob decompresses a chunk blob (as stored in the repository) and
// checks that it holds exactly c: its size and its sha256. It reads at most
// c.Size+1 decompressed bytes, so a hostile blob cannot exhaust memory.
func DecodeBlob(r io.Reader, c Chunk, dst []byte) ([]byte, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxMaxSize*2),
		zstd.WithDecoderMaxMemory(4*maxMaxSize))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: zstd: %w", c.SHA256, err)
	}
	defer dec.Close()
	if int64(cap(dst)) < c.Size+1 {
		dst = make([]byte, c.Size+1)
	}
	dst = dst[:c.Size+1]
	n, err := io.ReadFull(dec, dst)
	switch {
	case err == nil:
		return nil, fmt.Errorf("chunk %s: decompresses to more than %d bytes", c.SHA256, c.Size)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
	default:
		return nil, fmt.Errorf("chunk %s: decompress: %w", c.SHA256, err)
	}
	if int64(n) != c.Size {
		return nil, fmt.Errorf("chunk %s: decompresses to %d bytes, want %d", c.SHA256, n, c.Size)
	}
	dst = dst[:n]
	if sum := sha256.Sum256(dst); hex.EncodeToString(sum[:]) != c.SHA256 {
		return nil, fmt.Errorf("chunk %s: content does not match its sha256", c.SHA256)
	}
	return dst, nil
}

// DirFetcher returns a fetch function for Assemble that reads blobs from a
// local repository's chunks directory (a mounted medium, or tests).
func DirFetcher(chunksDir string) func(ctx context.Context, sum string) (io.ReadCloser, error) {
	return func(ctx context.Context, sum string) (io.ReadCloser, error) {
		if !isSHA256(sum) {
			return nil, fmt.Errorf("bad chunk name %q", sum)
		}
		data, err := os.ReadFile(filepath.Join(chunksDir, sum[:2], sum))
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
}

// writeBlob stores a chunk blob, creating its fan-out directory.
func writeBlob(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, 0o644)
}
