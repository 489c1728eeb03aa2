package repo

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"cairn.dev/cairn/update/chunk"
)

// BuildChunks is the default ChunkIndexFunc: it chunks the root image with
// update/chunk's default parameters, stores the chunks under chunksDir and
// returns the encoded index.
func BuildChunks(ctx context.Context, rootImage, chunksDir string) ([]byte, error) {
	f, err := os.Open(rootImage)
	if err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	defer f.Close()
	idx, err := chunk.BuildIndex(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("chunk index of %s: %w", rootImage, err)
	}
	if _, err := chunk.WriteChunks(ctx, rootImage, idx, chunksDir); err != nil {
		return nil, fmt.Errorf("chunks of %s: %w", rootImage, err)
	}
	data, err := idx.Marshal()
	if err != nil {
		return nil, fmt.Errorf("chunk index of %s: %w", rootImage, err)
	}
	return data, nil
}
