package image

import (
	"bytes"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxLayers bounds the layers of one image (overlayfs stacks at most 500
// lower directories).
const maxLayers = 500

// parseManifest parses and validates an image manifest (not an index).
func parseManifest(b []byte) (*v1.Manifest, error) {
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("manifest schemaVersion %d, want 2", m.SchemaVersion)
	}
	switch m.MediaType {
	case "", types.OCIManifestSchema1, types.DockerManifestSchema2:
	default:
		return nil, fmt.Errorf("unsupported manifest media type %q", m.MediaType)
	}
	if err := checkHash(m.Config.Digest); err != nil {
		return nil, fmt.Errorf("config descriptor: %w", err)
	}
	if m.Config.Size < 0 {
		return nil, fmt.Errorf("config descriptor: negative size")
	}
	if len(m.Layers) > maxLayers {
		return nil, fmt.Errorf("%d layers, at most %d supported", len(m.Layers), maxLayers)
	}
	for i, l := range m.Layers {
		if err := checkHash(l.Digest); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		if l.Size < 0 {
			return nil, fmt.Errorf("layer %d: negative size", i)
		}
	}
	return m, nil
}

// parseConfig parses an image config and checks it against its manifest.
func parseConfig(m *v1.Manifest, b []byte) (*v1.ConfigFile, error) {
	cfg, err := v1.ParseConfigFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	if cfg.RootFS.Type != "layers" {
		return nil, fmt.Errorf("rootfs type %q, want \"layers\"", cfg.RootFS.Type)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("config lists %d diff_ids, manifest %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if err := checkHash(d); err != nil {
			return nil, fmt.Errorf("diff_id %d: %w", i, err)
		}
	}
	return cfg, nil
}

// NormalizeName parses an image reference and returns its canonical form,
// e.g. "busybox" -> "index.docker.io/library/busybox:latest".
func NormalizeName(ref string) (string, error) {
	if len(ref) == 0 || len(ref) > 1024 {
		return "", fmt.Errorf("image: bad reference %q", ref)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image: parse reference %q: %w", ref, err)
	}
	return r.Name(), nil
}
