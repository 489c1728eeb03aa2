package supervise

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// The few fields of the OCI image layout that PID 1 reads. These are not
// the image-spec module's types on purpose: that module pulls in
// go-digest, whose package initialisation compiles regular expressions in
// PID 1 and in every container stage (re-executions of PID 1's binary).
type (
	ociDescriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Annotations map[string]string `json:"annotations"`
	}
	ociIndex struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	ociManifest struct {
		Config ociDescriptor `json:"config"`
	}
	ociImage struct {
		Config struct {
			User       string   `json:"User"`
			Env        []string `json:"Env"`
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
			WorkingDir string   `json:"WorkingDir"`
			StopSignal string   `json:"StopSignal"`
		} `json:"config"`
	}
)

// Manifest media types accepted in the index.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// Baked images: the image builder writes an OCI image layout into the root
// at BakedDir. Each manifest descriptor in its index.json carries the image
// string of the OS file (AnnotationRef) and the directory, relative to
// BakedDir, that holds the image's layers already flattened
// (AnnotationRootfs): PID 1 uses it directly as a read-only lowerdir.
const (
	BakedDir         = "/usr/share/cairn/images"
	AnnotationRef    = "org.opencontainers.image.ref.name"
	AnnotationRootfs = "dev.cairn.rootfs"
	// maxBlob bounds the JSON documents read from the layout.
	maxBlob = 4 << 20
)

// ImageConfig is what a container takes from its image's config.
type ImageConfig struct {
	Entrypoint, Cmd, Env []string
	User, WorkingDir     string
	StopSignal           string
}

// Image is a resolved image: its root file system layers (top first, each
// usable as an overlayfs lowerdir) and its config.
type Image struct {
	Ref       string
	Lowerdirs []string
	Config    ImageConfig
}

// Baked resolves image references against the baked OCI layout in Dir.
type Baked struct{ Dir string }

// Resolve finds ref in the layout's index.json.
func (b Baked) Resolve(ref string) (*Image, error) {
	idxPath := filepath.Join(b.Dir, "index.json")
	raw, err := readLimited(idxPath)
	if err != nil {
		return nil, fmt.Errorf("baked images: %w", err)
	}
	desc, err := findInIndex(raw, ref)
	if err != nil {
		return nil, fmt.Errorf("baked images: %s: %w", idxPath, err)
	}
	rootfs, err := rootfsDir(desc.Annotations[AnnotationRootfs])
	if err != nil {
		return nil, fmt.Errorf("baked images: %s: image %q: %w", idxPath, ref, err)
	}
	mraw, mpath, err := b.blob(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("baked images: image %q: manifest: %w", ref, err)
	}
	var m ociManifest
	if err := json.Unmarshal(mraw, &m); err != nil {
		return nil, fmt.Errorf("baked images: %s: manifest: %w", mpath, err)
	}
	craw, cpath, err := b.blob(m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("baked images: image %q: config: %w", ref, err)
	}
	cfg, err := parseImageConfig(craw)
	if err != nil {
		return nil, fmt.Errorf("baked images: %s: %w", cpath, err)
	}
	return &Image{Ref: ref, Lowerdirs: []string{filepath.Join(b.Dir, rootfs)}, Config: cfg}, nil
}

// findInIndex returns the manifest descriptor annotated with ref.
func findInIndex(raw []byte, ref string) (ociDescriptor, error) {
	var idx ociIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return ociDescriptor{}, fmt.Errorf("index: %w", err)
	}
	for i, d := range idx.Manifests {
		if d.Annotations[AnnotationRef] != ref {
			continue
		}
		if d.MediaType != "" && d.MediaType != mediaTypeOCIManifest && d.MediaType != mediaTypeDockerManifest {
			return ociDescriptor{}, fmt.Errorf("manifests[%d] (%q): media type %q is not an image manifest", i, ref, d.MediaType)
		}
		if _, ok := d.Annotations[AnnotationRootfs]; !ok {
			return ociDescriptor{}, fmt.Errorf("manifests[%d] (%q): no %s annotation", i, ref, AnnotationRootfs)
		}
		return d, nil
	}
	return ociDescriptor{}, fmt.Errorf("no image %q is baked into this root", ref)
}

// rootfsDir checks a dev.cairn.rootfs annotation: a clean relative path
// inside the layout, usable in overlayfs options.
func rootfsDir(rel string) (string, error) {
	switch {
	case rel == "":
		return "", fmt.Errorf("empty %s annotation", AnnotationRootfs)
	case path.IsAbs(rel), path.Clean(rel) != rel, rel == ".", rel == "..", strings.HasPrefix(rel, "../"):
		return "", fmt.Errorf("%s annotation %q is not a clean relative path inside the layout", AnnotationRootfs, rel)
	case strings.ContainsAny(rel, ",:\\\x00\n"):
		return "", fmt.Errorf("%s annotation %q holds a character overlayfs options cannot carry", AnnotationRootfs, rel)
	}
	return rel, nil
}

// blob reads a JSON blob by digest ("sha256:<64 hex>").
func (b Baked) blob(digest string) ([]byte, string, error) {
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return nil, "", fmt.Errorf("digest %q is not sha256:<64 lowercase hex>", digest)
	}
	p := filepath.Join(b.Dir, "blobs", "sha256", hex)
	raw, err := readLimited(p)
	return raw, p, err
}

func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxBlob+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(raw) > maxBlob {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxBlob)
	}
	return raw, nil
}

// parseImageConfig reads an OCI (or Docker) image config.
func parseImageConfig(raw []byte) (ImageConfig, error) {
	var img ociImage
	if err := json.Unmarshal(raw, &img); err != nil {
		return ImageConfig{}, fmt.Errorf("image config: %w", err)
	}
	c := img.Config
	for i, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsRune(e, 0) {
			return ImageConfig{}, fmt.Errorf("image config: config.Env[%d] %q is not KEY=VALUE", i, e)
		}
	}
	return ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User, WorkingDir: c.WorkingDir, StopSignal: c.StopSignal}, nil
}
