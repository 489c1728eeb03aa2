// Package figures holds the small computations the benchmarks share: the
// spread of a set of samples and the zstd size of a file.
package figures

import (
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// Spread returns the median (the mean of the middle two for an even
// count), minimum and maximum of xs, and ok false if xs is empty.
func Spread(xs []float64) (median, lo, hi float64, ok bool) {
	if len(xs) == 0 {
		return 0, 0, 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	median = s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return median, s[0], s[len(s)-1], true
}

// ZstdSize compresses the file at path at zstd's default level (3, like
// `zstd -3`) and returns the number of compressed bytes.
func ZstdSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	defer f.Close()
	var cw countWriter
	enc, err := zstd.NewWriter(&cw, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return 0, fmt.Errorf("compress: %w", err)
	}
	if _, err := io.Copy(enc, f); err != nil {
		return 0, fmt.Errorf("compress %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return 0, fmt.Errorf("compress %s: %w", path, err)
	}
	return cw.n, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
