// Package chunk splits a root image into content-defined chunks, describes
// them in a chunk index (a TUF target), stores them content-addressed and
// zstd-compressed under chunks/<hex[0:2]>/<hex>, and on the machine plans and
// assembles a new image from the chunks both local ROOT slots already hold
// plus the ones it must download.
//
// Chunking uses Rabin fingerprints (github.com/restic/chunker) with a fixed
// irreducible polynomial and fixed size bounds. The index records the
// polynomial and bounds, so a machine chunks its local slots exactly as the
// publisher chunked the image, whatever version either of them runs.
//
// The package is guest-usable: it imports nothing host-only.
package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/restic/chunker"
)

// Format constants of the chunk index.
const (
	// FormatVersion is the only index version this package reads and writes.
	FormatVersion = 1
	// ChunkerName names the chunking algorithm in the index.
	ChunkerName = "restic-chunker"

	// DefaultPolynomial is the irreducible degree-53 polynomial every
	// Cairn index uses. It was drawn once with chunker.RandomPolynomial and
	// must never change: a different polynomial cuts different boundaries
	// and local slots would no longer share chunks with new images.
	DefaultPolynomial chunker.Pol = 0x39ed2d5ad5a1d5
	// DefaultMinSize, DefaultAverageBits and DefaultMaxSize bound chunk
	// sizes: 16 KiB minimum, 64 KiB on average, 256 KiB maximum (the
	// casync/desync defaults), small enough that a changed file costs only
	// the chunks around it.
	DefaultMinSize     = 16 << 10
	DefaultAverageBits = 16
	DefaultMaxSize     = 256 << 10
)

// Limits Parse enforces on outside input.
const (
	minMinSize     = 4 << 10  // chunker needs at least its 64-byte window
	maxMaxSize     = 16 << 20 // bounds memory per chunk while assembling
	minAverageBits = 10
	maxAverageBits = 24
	// MaxImageSize bounds the image an index may describe (1 TiB).
	MaxImageSize = 1 << 40
	// MaxIndexBytes bounds the encoded index Parse accepts (64 MiB: about
	// 500k chunks).
	MaxIndexBytes = 64 << 20
)

// Index describes one root image as a list of chunks that are contiguous
// and cover it exactly.
type Index struct {
	Version     int     `json:"version"`
	Chunker     string  `json:"chunker"`
	Polynomial  string  `json:"polynomial"` // lowercase hex, no 0x
	MinSize     int     `json:"min_size"`
	AverageBits int     `json:"average_bits"`
	MaxSize     int     `json:"max_size"`
	Size        int64   `json:"size"`
	SHA256      string  `json:"sha256"` // of the whole image
	Chunks      []Chunk `json:"chunks"`
}

// Chunk is one piece of the image; SHA256 is of its uncompressed bytes and
// names its blob in the repository.
type Chunk struct {
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Params are the chunker settings an index was built with.
type Params struct {
	Polynomial  chunker.Pol
	MinSize     int
	AverageBits int
	MaxSize     int
}

// DefaultParams are the settings BuildIndex uses.
func DefaultParams() Params {
	return Params{Polynomial: DefaultPolynomial, MinSize: DefaultMinSize,
		AverageBits: DefaultAverageBits, MaxSize: DefaultMaxSize}
}

// Params returns the chunker settings recorded in idx. Call it only on an
// index that passed Validate (Parse does that).
func (idx *Index) Params() (Params, error) {
	v, err := strconv.ParseUint(idx.Polynomial, 16, 64)
	if err != nil {
		return Params{}, fmt.Errorf("chunk index: polynomial %q: %w", idx.Polynomial, err)
	}
	return Params{Polynomial: chunker.Pol(v), MinSize: idx.MinSize,
		AverageBits: idx.AverageBits, MaxSize: idx.MaxSize}, nil
}

func (p Params) newChunker(r io.Reader) *chunker.Chunker {
	return chunker.New(r, p.Polynomial,
		chunker.WithBoundaries(uint(p.MinSize), uint(p.MaxSize)),
		chunker.WithAverageBits(p.AverageBits))
}

// BuildIndex chunks the image read from r with DefaultParams.
func BuildIndex(r io.Reader) (*Index, error) {
	return BuildIndexWith(r, DefaultParams())
}

// BuildIndexWith chunks the image read from r with p.
func BuildIndexWith(r io.Reader, p Params) (*Index, error) {
	idx := &Index{Version: FormatVersion, Chunker: ChunkerName,
		Polynomial: strconv.FormatUint(uint64(p.Polynomial), 16),
		MinSize:    p.MinSize, AverageBits: p.AverageBits, MaxSize: p.MaxSize,
		Chunks: []Chunk{}}
	if err := idx.validateHeader(); err != nil {
		return nil, err
	}
	whole := sha256.New()
	c := p.newChunker(io.TeeReader(r, whole))
	buf := make([]byte, p.MaxSize)
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("chunk image: %w", err)
		}
		sum := sha256.Sum256(ch.Data)
		idx.Chunks = append(idx.Chunks, Chunk{Offset: int64(ch.Start), Size: int64(ch.Length),
			SHA256: hex.EncodeToString(sum[:])})
		idx.Size += int64(ch.Length)
	}
	idx.SHA256 = hex.EncodeToString(whole.Sum(nil))
	if err := idx.Validate(); err != nil {
		return nil, fmt.Errorf("built index is invalid: %w", err)
	}
	return idx, nil
}

// Marshal encodes idx as indented JSON (the published form).
func (idx *Index) Marshal() ([]byte, error) {
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(idx, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode chunk index: %w", err)
	}
	return append(data, '\n'), nil
}

// Parse decodes and validates a chunk index. Unknown fields, trailing data
// and anything Validate rejects are errors.
func Parse(data []byte) (*Index, error) {
	if len(data) > MaxIndexBytes {
		return nil, fmt.Errorf("chunk index: %d bytes, more than %d", len(data), MaxIndexBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var idx Index
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	if dec.More() {
		return nil, errors.New("chunk index: trailing data after the JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("chunk index: trailing data after the JSON object")
	}
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	return &idx, nil
}

func (idx *Index) validateHeader() error {
	if idx.Version != FormatVersion {
		return fmt.Errorf("chunk index: version %d, want %d", idx.Version, FormatVersion)
	}
	if idx.Chunker != ChunkerName {
		return fmt.Errorf("chunk index: chunker %q, want %q", idx.Chunker, ChunkerName)
	}
	if len(idx.Polynomial) == 0 || len(idx.Polynomial) > 16 || !isLowerHex(idx.Polynomial) {
		return fmt.Errorf("chunk index: polynomial %q is not lowercase hex", idx.Polynomial)
	}
	p, err := idx.Params()
	if err != nil {
		return err
	}
	// The chunker panics on a degree above 53 and cuts poorly on a
	// reducible polynomial.
	if p.Polynomial.Deg() != 53 || !p.Polynomial.Irreducible() {
		return fmt.Errorf("chunk index: polynomial %s is not an irreducible polynomial of degree 53", idx.Polynomial)
	}
	if idx.MinSize < minMinSize || idx.MaxSize > maxMaxSize || idx.MinSize > idx.MaxSize {
		return fmt.Errorf("chunk index: chunk size bounds %d..%d outside %d..%d",
			idx.MinSize, idx.MaxSize, minMinSize, maxMaxSize)
	}
	if idx.AverageBits < minAverageBits || idx.AverageBits > maxAverageBits {
		return fmt.Errorf("chunk index: average_bits %d outside %d..%d", idx.AverageBits, minAverageBits, maxAverageBits)
	}
	return nil
}

// Validate checks that idx is well formed: known format and chunker, sane
// chunker settings, chunks that are contiguous, cover exactly Size bytes and
// respect the size bounds, and sha256 values in lowercase hex.
func (idx *Index) Validate() error {
	if err := idx.validateHeader(); err != nil {
		return err
	}
	if idx.Size < 0 || idx.Size > MaxImageSize {
		return fmt.Errorf("chunk index: size %d outside 0..%d", idx.Size, int64(MaxImageSize))
	}
	if !isSHA256(idx.SHA256) {
		return fmt.Errorf("chunk index: image sha256 %q is not 64 lowercase hex digits", idx.SHA256)
	}
	if idx.Size > 0 && len(idx.Chunks) == 0 {
		return errors.New("chunk index: no chunks for a non-empty image")
	}
	var off int64
	for i, c := range idx.Chunks {
		if c.Offset != off {
			return fmt.Errorf("chunk index: chunk %d at offset %d, want %d (chunks must be contiguous)", i, c.Offset, off)
		}
		if c.Size <= 0 || c.Size > int64(idx.MaxSize) {
			return fmt.Errorf("chunk index: chunk %d has size %d outside 1..%d", i, c.Size, idx.MaxSize)
		}
		if i < len(idx.Chunks)-1 && c.Size < int64(idx.MinSize) {
			return fmt.Errorf("chunk index: chunk %d has size %d below the minimum %d", i, c.Size, idx.MinSize)
		}
		if !isSHA256(c.SHA256) {
			return fmt.Errorf("chunk index: chunk %d sha256 %q is not 64 lowercase hex digits", i, c.SHA256)
		}
		off += c.Size
		if off > idx.Size {
			return fmt.Errorf("chunk index: chunk %d ends at %d, past the image size %d", i, off, idx.Size)
		}
	}
	if off != idx.Size {
		return fmt.Errorf("chunk index: chunks cover %d bytes, image has %d", off, idx.Size)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isSHA256(s string) bool { return len(s) == 64 && isLowerHex(s) }

// BlobPath is the repository path of a chunk blob relative to the
// repository root: chunks/<hex[0:2]>/<hex>.
func BlobPath(sum string) string { return "chunks/" + sum[:2] + "/" + sum }
