package image

import (
	"context"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image returns the stored image with manifest digest d as a
// go-containerregistry v1.Image, e.g. to write it out with layout.Write or
// tarball.Write. Layer blobs are read from the store as they were stored.
func (s *Store) Image(ctx context.Context, d v1.Hash) (v1.Image, error) {
	m, _, err := s.manifestAndConfig(d)
	if err != nil {
		return nil, err
	}
	rawM, err := s.readBlob(d)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	core := &storeImage{s: s, m: m, rawM: rawM}
	img, err := partial.CompressedToImage(core)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return img, nil
}

type storeImage struct {
	s    *Store
	m    *v1.Manifest
	rawM []byte
}

func (i *storeImage) RawConfigFile() ([]byte, error) { return i.s.readBlob(i.m.Config.Digest) }
func (i *storeImage) RawManifest() ([]byte, error)   { return i.rawM, nil }
func (i *storeImage) MediaType() (types.MediaType, error) {
	if i.m.MediaType == "" {
		return types.OCIManifestSchema1, nil
	}
	return i.m.MediaType, nil
}

func (i *storeImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range i.m.Layers {
		if l.Digest == h {
			return &storeLayer{s: i.s, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("image: layer %s: %w", h, ErrNotFound)
}

type storeLayer struct {
	s    *Store
	desc v1.Descriptor
}

func (l *storeLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *storeLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *storeLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *storeLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.s.blobPath(l.desc.Digest))
	if err != nil {
		return nil, fmt.Errorf("image: layer blob: %w", err)
	}
	return f, nil
}
