// Package bake fetches or builds the container images an OS file names and
// lays them out for the read-only root: an OCI image layout at
// /usr/share/cairn/images/ (RootPath) whose index.json has one manifest per
// distinct image string, annotated with that string
// ("org.opencontainers.image.ref.name") and with "dev.cairn.rootfs" =
// "rootfs/<hex of the manifest digest>", the directory (relative to the
// layout) holding the image's layers already applied, so that PID 1 can use
// it as an overlayfs lower directory without unpacking anything at boot.
//
// Images come from go://PKG (a static Go package built into a one-layer
// image, as ko does), oci-layout:DIR, docker-archive:FILE or a registry
// (pulled into the build cache, so that a warm build does not touch the
// network). Every layer is treated as hostile: it is checked, then applied
// through runtime/image/unpack.
package bake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/os/schema"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// RootPath is where the layout lives in the root, without leading slash.
const RootPath = "usr/share/cairn/images"

// Options configure Bake.
type Options struct {
	// WorkDir is a scratch directory (the layout is written below it).
	WorkDir string
	// CacheDir holds pulled registry images under images/ (an OCI layout).
	// Empty: $XDG_CACHE_HOME/cairn, as buildroot.
	CacheDir string
	// SourceDateEpoch stamps go:// images.
	SourceDateEpoch int64
	// Keychain finds registry credentials; nil: the docker config.json
	// keychain (authn.DefaultKeychain).
	Keychain authn.Keychain
	// GoCommand is the go tool for go:// images; empty: "go" from PATH.
	GoCommand string
	Log       func(format string, args ...any)
}

// Image is one baked image.
type Image struct {
	Ref        string  // as written in the OS file
	Digest     v1.Hash // manifest digest
	Size       int64   // manifest, config and layer blobs
	Rootfs     string  // flattened tree, relative to the layout
	RootfsSize int64   // regular file bytes of the tree
}

// Result is a baked layout.
type Result struct {
	Dir    string // the layout directory
	Images []Image
	meta   map[string]meta
}

type baker struct {
	opts  Options
	osDir string
	work  string
	mtime time.Time
	built []string
	logf  func(string, ...any)
}

// Refs returns the image strings of o that are baked (pull_policy build,
// the default), services by name then onboot in order, without repeats.
func Refs(o *schema.OS) []string {
	refs, _ := refFields(o)
	return refs
}

// refFields is Refs with, for each string, the field that first names it
// (services.NAME.image, onboot[I].image).
func refFields(o *schema.OS) ([]string, map[string]string) {
	var out []string
	fields := map[string]string{}
	add := func(image, policy, field string) {
		if image != "" && (policy == "" || policy == "build") && !slices.Contains(out, image) {
			out = append(out, image)
			fields[image] = field
		}
	}
	names := make([]string, 0, len(o.Services))
	for n := range o.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		add(o.Services[n].Image, o.Services[n].PullPolicy, "services."+n+".image")
	}
	for i, b := range o.Onboot {
		add(b.Image, b.PullPolicy, fmt.Sprintf("onboot[%d].image", i))
	}
	return out, fields
}

// Bake bakes the images of o. It returns nil when o names none. Errors
// name the OS file and the field.
func Bake(ctx context.Context, o *schema.OS, opts Options) (*Result, error) {
	refs, fields := refFields(o)
	if len(refs) == 0 {
		return nil, nil
	}
	parsed := make([]Ref, len(refs))
	for i, s := range refs {
		r, err := ParseRef(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", o.Source, fields[s], err)
		}
		parsed[i] = r
	}
	return bakeRefs(ctx, filepath.Dir(o.Source), parsed, opts, func(r Ref) string {
		return o.Source + ": " + fields[r.Raw] + ": "
	})
}

// BakeRefs bakes refs; relative paths and ./ Go packages are resolved from
// osDir, the OS file's directory.
func BakeRefs(ctx context.Context, osDir string, refs []Ref, opts Options) (*Result, error) {
	return bakeRefs(ctx, osDir, refs, opts, func(Ref) string { return "" })
}

func bakeRefs(ctx context.Context, osDir string, refs []Ref, opts Options, where func(Ref) string) (*Result, error) {
	if opts.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("cache directory: %w", err)
		}
		opts.CacheDir = filepath.Join(d, "cairn")
	}
	b := &baker{opts: opts, osDir: osDir, mtime: time.Unix(opts.SourceDateEpoch, 0).UTC(), logf: opts.Log}
	if b.logf == nil {
		b.logf = func(string, ...any) {}
	}
	work, err := os.MkdirTemp(opts.WorkDir, ".bake-")
	if err != nil {
		return nil, fmt.Errorf("bake: %w", err)
	}
	b.work = work
	dir := filepath.Join(work, "images")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bake: %w", err)
	}
	out, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("bake: layout: %w", err)
	}
	res := &Result{Dir: dir, meta: map[string]meta{}}
	done := map[v1.Hash]Image{}
	for _, r := range refs {
		img, err := b.resolve(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("%simage %q: %w", where(r), r.Raw, err)
		}
		bi, err := b.add(ctx, out, res, done, r, img)
		if err != nil {
			return nil, fmt.Errorf("%simage %q: %w", where(r), r.Raw, err)
		}
		b.logf("image %s: baked %s (%d bytes, tree %d bytes)", r.Raw, bi.Digest, bi.Size, bi.RootfsSize)
		res.Images = append(res.Images, bi)
	}
	for _, p := range b.built {
		_ = os.Remove(p)
	}
	return res, nil
}

// add writes img into the layout and flattens it, once per digest.
func (b *baker) add(ctx context.Context, out layout.Path, res *Result, done map[v1.Hash]Image, r Ref, img v1.Image) (Image, error) {
	d, err := img.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("digest: %w", err)
	}
	bi, seen := done[d]
	bi.Ref = r.Raw
	if !seen {
		bi.Digest, bi.Rootfs = d, "rootfs/"+d.Hex
		tree := filepath.Join(res.Dir, "rootfs", d.Hex)
		if err := os.MkdirAll(tree, 0o755); err != nil {
			return Image{}, fmt.Errorf("bake: %w", err)
		}
		m, size, err := flatten(ctx, img, tree)
		if err != nil {
			return Image{}, err
		}
		for p, v := range m {
			res.meta[filepath.ToSlash(filepath.Join(bi.Rootfs, p))] = v
		}
		bi.RootfsSize = size
		if bi.Size, err = blobSize(img); err != nil {
			return Image{}, err
		}
		done[d] = bi
	}
	if err := appendWithoutLayers(out, img, map[string]string{
		refAnnotation: r.Raw, rootfsAnnotation: bi.Rootfs,
	}); err != nil {
		return Image{}, fmt.Errorf("write layout: %w", err)
	}
	return bi, nil
}

// appendWithoutLayers writes img's manifest and config into the layout and
// lists the manifest in index.json with annotations. The layer blobs are
// left out on purpose: the flattened tree next to them is what PID 1 uses,
// and the compressed layers would only repeat it (for the web example, 2.4
// MiB of the 31 MiB compressed disk image). Manifest and config keep their
// digests, so the image stays identified by its manifest digest.
func appendWithoutLayers(out layout.Path, img v1.Image, annotations map[string]string) error {
	raw, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("manifest media type: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("config digest: %w", err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := out.WriteBlob(cfgName, io.NopCloser(bytes.NewReader(cfg))); err != nil {
		return fmt.Errorf("config blob: %w", err)
	}
	if err := out.WriteBlob(d, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return fmt.Errorf("manifest blob: %w", err)
	}
	return out.AppendDescriptor(v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: d, Annotations: annotations})
}

func blobSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, fmt.Errorf("manifest: %w", err)
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

// FS is the layout with the owners and modes the erofs root must record
// (see rootfs.Owner); mount it at RootPath with Mount.
func (r *Result) FS() fs.FS {
	return &bakedFS{dir: os.DirFS(r.Dir), meta: r.meta}
}

// Manifest is what the build manifest records of the baked images.
func (r *Result) Manifest() []manifest.Image {
	if r == nil {
		return nil
	}
	out := make([]manifest.Image, len(r.Images))
	for i, im := range r.Images {
		out[i] = manifest.Image{Ref: im.Ref, Digest: im.Digest.String(), Size: im.Size, Rootfs: im.Rootfs, RootfsSize: im.RootfsSize}
	}
	return out
}
