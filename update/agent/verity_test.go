package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/containerd/go-dmverity/pkg/verity"
)

func TestVerifyVerityAgainstDmverity(t *testing.T) {
	// Block counts around the tree's level boundaries (128 digests a block).
	for _, blocks := range []int{1, 2, 127, 128, 129, 300, 128*128 + 1} {
		for _, salt := range [][]byte{nil, bytes.Repeat([]byte{7}, 32)} {
			img := mkRoot(t, randomData(uint64(blocks), blocks*verityBlock-17), salt)
			p := verity.DefaultParams()
			p.DataBlockSize, p.HashBlockSize, p.DataBlocks = verityBlock, verityBlock, uint64(blocks)
			tree, err := verity.GetHashTreeSize(&p)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := VerityImageSize(uint64(blocks)), int64(blocks*verityBlock)+int64(tree); got != want || int64(len(img.data)) != want {
				t.Fatalf("%d blocks: VerityImageSize %d, go-dmverity %d, image %d", blocks, got, want, len(img.data))
			}
			root, _ := hex.DecodeString(img.rootHash)
			if err := VerifyVerity(context.Background(), bytes.NewReader(img.data), img.blocks, salt, root); err != nil {
				t.Fatalf("%d blocks, salt %x: %v", blocks, salt, err)
			}
		}
	}
}

func TestVerifyVerityDetects(t *testing.T) {
	salt := []byte("salt")
	img := mkRoot(t, randomData(1, 300*verityBlock), salt)
	root, _ := hex.DecodeString(img.rootHash)
	treeStart := int(img.blocks * verityBlock)
	flip := func(off int) []byte {
		b := append([]byte(nil), img.data...)
		b[off] ^= 1
		return b
	}
	tests := []struct {
		name   string
		data   []byte
		blocks uint64
		salt   []byte
		root   []byte
		want   string
	}{
		{"data block", flip(5 * verityBlock), img.blocks, salt, root, "data block"},
		{"last data byte", flip(treeStart - 1), img.blocks, salt, root, "data block"},
		{"digest in the top block", flip(treeStart), img.blocks, salt, root, "level 0 hash block at byte"},
		{"spare area of the top block", flip(treeStart + 200), img.blocks, salt, root, "not zero"},
		{"level 0 digest", flip(treeStart + verityBlock + 3), img.blocks, salt, root, "data block at byte 0 "},
		{"spare area", flip(len(img.data) - 1), img.blocks, salt, root, "not zero"},
		{"wrong root", img.data, img.blocks, salt, bytes.Repeat([]byte{1}, 32), "root hash"},
		{"wrong salt", img.data, img.blocks, []byte("pepper"), root, "does not match"},
		{"truncated", img.data[:len(img.data)-verityBlock], img.blocks, salt, root, "read"},
		{"zero blocks", img.data, 0, salt, root, "out of range"},
		{"short root", img.data, img.blocks, salt, root[:20], "root hash of 20"},
		{"zeros", make([]byte, len(img.data)), img.blocks, salt, root, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyVerity(context.Background(), bytes.NewReader(tt.data), tt.blocks, tt.salt, tt.root)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := VerifyVerity(ctx, bytes.NewReader(img.data), img.blocks, salt, root); err == nil {
		t.Fatal("cancelled context accepted")
	}
}
