package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	annotationContainerdName = "io.containerd.image.name"
	annotationRefName        = "org.opencontainers.image.ref.name"
)

// LoadOCILayout adds the images of the OCI image layout directory dir
// (index.json, blobs/). Multi-platform indexes resolve to linux/amd64, and
// images for other platforms are skipped. Images annotated with a full
// reference (io.containerd.image.name, or an org.opencontainers.image.ref.name
// that parses as one, i.e. contains "/" or ":") are tagged with it; the others
// are returned unnamed (see Tag).
func (s *Store) LoadOCILayout(ctx context.Context, dir string) ([]Image, error) {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("image: load layout %s: %w", dir, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image: load layout %s: %w", dir, err)
	}
	var out []Image
	for _, desc := range im.Manifests {
		var img v1.Image
		switch {
		case desc.MediaType.IsIndex():
			child, err := ii.ImageIndex(desc.Digest)
			if err != nil {
				return out, fmt.Errorf("image: load layout %s: %w", dir, err)
			}
			if img, err = pickPlatform(child, defaultPlatform, 4); err != nil {
				return out, fmt.Errorf("image: load layout %s: index %s: %w", dir, desc.Digest, err)
			}
		case desc.MediaType.IsImage():
			if desc.Platform != nil && !platformMatches(*desc.Platform, defaultPlatform) {
				continue
			}
			if img, err = ii.Image(desc.Digest); err != nil {
				return out, fmt.Errorf("image: load layout %s: %w", dir, err)
			}
			if checkPlatform(img, defaultPlatform) != nil {
				continue
			}
		default:
			continue
		}
		added, err := s.Add(ctx, img)
		if err != nil {
			return out, fmt.Errorf("image: load layout %s: %w", dir, err)
		}
		n := desc.Annotations[annotationContainerdName]
		if n == "" && strings.ContainsAny(desc.Annotations[annotationRefName], "/:") {
			n = desc.Annotations[annotationRefName]
		}
		if n != "" {
			if n, err = NormalizeName(n); err != nil {
				return out, err
			}
			if err := s.Tag(ctx, n, added.Digest); err != nil {
				return out, err
			}
			added.Name = n
		}
		out = append(out, added)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("image: load layout %s: no %s/%s image", dir, defaultPlatform.OS, defaultPlatform.Architecture)
	}
	return out, nil
}

func platformMatches(got, want v1.Platform) bool {
	return got.OS == want.OS && got.Architecture == want.Architecture &&
		(want.Variant == "" || got.Variant == want.Variant)
}

// pickPlatform returns the image for platform p from an index, descending
// into nested indexes up to depth levels.
func pickPlatform(idx v1.ImageIndex, p v1.Platform, depth int) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage() && d.Platform != nil && platformMatches(*d.Platform, p):
			return idx.Image(d.Digest)
		case d.MediaType.IsIndex() && depth > 0:
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := pickPlatform(child, p, depth-1); err == nil {
				return img, nil
			}
		}
	}
	return nil, fmt.Errorf("no image for %s/%s: %w", p.OS, p.Architecture, ErrNotFound)
}

// dockerManifestEntry is one element of a docker save manifest.json.
type dockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// parseDockerArchiveManifest parses and validates the manifest.json of a
// docker save archive.
func parseDockerArchiveManifest(b []byte) ([]dockerManifestEntry, error) {
	var ents []dockerManifestEntry
	if err := json.Unmarshal(b, &ents); err != nil {
		return nil, fmt.Errorf("image: docker archive manifest.json: %w", err)
	}
	if len(ents) == 0 {
		return nil, fmt.Errorf("image: docker archive manifest.json lists no images")
	}
	for i, e := range ents {
		if e.Config == "" {
			return nil, fmt.Errorf("image: docker archive manifest.json entry %d has no Config", i)
		}
		if len(e.Layers) > maxLayers {
			return nil, fmt.Errorf("image: docker archive manifest.json entry %d: %d layers", i, len(e.Layers))
		}
	}
	return ents, nil
}

// tarIndex maps member names of an uncompressed tar file to their data.
type tarIndex struct {
	f     *os.File
	files map[string]section
	links map[string]string
}

type section struct{ off, size int64 }

func indexTar(f *os.File, maxEntries int) (*tarIndex, error) {
	ix := &tarIndex{f: f, files: map[string]section{}, links: map[string]string{}}
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		if n > maxEntries {
			return nil, fmt.Errorf("more than %d members", maxEntries)
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return ix, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean("/" + h.Name)[1:]
		switch h.Typeflag {
		case tar.TypeReg:
			// tar.Reader reads headers with exact-size reads and skips with
			// Seek, so the file offset is now the start of the data.
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, fmt.Errorf("read archive: %w", err)
			}
			ix.files[name] = section{off, h.Size}
		case tar.TypeSymlink:
			ix.links[name] = path.Join(path.Dir(name), h.Linkname)
		case tar.TypeLink:
			ix.links[name] = path.Clean("/" + h.Linkname)[1:]
		}
	}
}

// open returns the data of member name, following archive-internal links.
func (ix *tarIndex) open(name string) (*io.SectionReader, error) {
	name = path.Clean("/" + name)[1:]
	for hops := 0; hops < 8; hops++ {
		if s, ok := ix.files[name]; ok {
			return io.NewSectionReader(ix.f, s.off, s.size), nil
		}
		target, ok := ix.links[name]
		if !ok {
			break
		}
		name = path.Clean("/" + target)[1:]
	}
	return nil, fmt.Errorf("archive member %q: %w", name, ErrNotFound)
}

// LoadDockerArchive adds the images of a `docker save` archive (an
// uncompressed tar file; legacy and OCI-style layouts) and tags each with its
// RepoTags. Layers are stored as they appear in the archive (usually
// uncompressed tars, so the blob digest equals the diffID).
func (s *Store) LoadDockerArchive(ctx context.Context, archive string) ([]Image, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, fmt.Errorf("image: load archive: %w", err)
	}
	defer f.Close()
	ix, err := indexTar(f, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("image: load archive %s: %w", archive, err)
	}
	mb, err := ix.readSmall("manifest.json", s.limits.MaxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("image: load archive %s: %w", archive, err)
	}
	ents, err := parseDockerArchiveManifest(mb)
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range ents {
		img, err := ix.image(e, s.limits.MaxManifestBytes)
		if err != nil {
			return out, fmt.Errorf("image: load archive %s: %w", archive, err)
		}
		added, err := s.Add(ctx, img)
		if err != nil {
			return out, fmt.Errorf("image: load archive %s: %w", archive, err)
		}
		if len(e.RepoTags) == 0 {
			out = append(out, added)
		}
		for _, t := range e.RepoTags {
			n, err := NormalizeName(t)
			if err != nil {
				return out, err
			}
			if err := s.Tag(ctx, n, added.Digest); err != nil {
				return out, err
			}
			out = append(out, Image{Name: n, Digest: added.Digest})
		}
	}
	return out, nil
}

func (ix *tarIndex) readSmall(name string, limit int64) ([]byte, error) {
	r, err := ix.open(name)
	if err != nil {
		return nil, err
	}
	if r.Size() > limit {
		return nil, fmt.Errorf("archive member %q larger than %d bytes", name, limit)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("archive member %q: %w", name, err)
	}
	return b, nil
}

// image builds a v1.Image for one manifest.json entry with a synthesized
// OCI manifest. Layer digests of uncompressed layers are taken from the
// config's diff_ids (Add verifies them); compressed layers are hashed here.
func (ix *tarIndex) image(e dockerManifestEntry, limit int64) (v1.Image, error) {
	rawC, err := ix.readSmall(e.Config, limit)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawC))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", e.Config, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return nil, fmt.Errorf("config %s lists %d diff_ids, manifest.json %d layers", e.Config, len(cfg.RootFS.DiffIDs), len(e.Layers))
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(rawC)),
			Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(rawC)}},
	}
	layers := map[v1.Hash]string{}
	for i, name := range e.Layers {
		r, err := ix.open(name)
		if err != nil {
			return nil, err
		}
		var magic [4]byte
		n, _ := r.ReadAt(magic[:], 0)
		desc := v1.Descriptor{Size: r.Size()}
		switch {
		case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
			desc.MediaType = types.OCILayer
		case n == 4 && bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
			desc.MediaType = types.OCILayerZStd
		default:
			desc.MediaType = types.OCIUncompressedLayer
			desc.Digest = cfg.RootFS.DiffIDs[i]
		}
		if desc.Digest.Hex == "" {
			h := sha256.New()
			if _, err := io.Copy(h, r); err != nil {
				return nil, fmt.Errorf("layer %s: %w", name, err)
			}
			desc.Digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		}
		layers[desc.Digest] = name
		m.Layers = append(m.Layers, desc)
	}
	rawM, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return partial.CompressedToImage(&archiveImage{ix: ix, rawC: rawC, rawM: rawM, m: &m, layers: layers})
}

type archiveImage struct {
	ix     *tarIndex
	rawC   []byte
	rawM   []byte
	m      *v1.Manifest
	layers map[v1.Hash]string
}

func (a *archiveImage) RawConfigFile() ([]byte, error)      { return a.rawC, nil }
func (a *archiveImage) RawManifest() ([]byte, error)        { return a.rawM, nil }
func (a *archiveImage) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *archiveImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	name, ok := a.layers[h]
	if !ok {
		return nil, fmt.Errorf("layer %s: %w", h, ErrNotFound)
	}
	for _, d := range a.m.Layers {
		if d.Digest == h {
			return &archiveLayer{ix: a.ix, name: name, desc: d}, nil
		}
	}
	return nil, fmt.Errorf("layer %s: %w", h, ErrNotFound)
}

type archiveLayer struct {
	ix   *tarIndex
	name string
	desc v1.Descriptor
}

func (l *archiveLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *archiveLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *archiveLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *archiveLayer) Compressed() (io.ReadCloser, error) {
	r, err := l.ix.open(l.name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(r), nil
}
