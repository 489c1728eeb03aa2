package bake

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

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"golang.org/x/sys/unix"
)

// platform is the only platform Cairn runs.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// refAnnotation names an image in an OCI layout's index.json.
const refAnnotation = "org.opencontainers.image.ref.name"

// rootfsAnnotation is the flattened tree of an image, relative to the
// layout directory.
const rootfsAnnotation = "dev.cairn.rootfs"

// resolve returns the image r names. osDir is the OS file's directory.
func (b *baker) resolve(ctx context.Context, r Ref) (v1.Image, error) {
	switch r.Kind {
	case KindGo:
		return b.goImage(ctx, r)
	case KindOCILayout:
		dir := b.rel(r.Path)
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, fmt.Errorf("read OCI layout %s: %w", dir, err)
		}
		img, err := pick(idx, 0)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		return img, checkPlatform(img)
	case KindDockerArchive:
		file := b.rel(r.Path)
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("docker archive: %w", err)
		}
		img, err := tarball.ImageFromPath(file, nil)
		if err != nil {
			return nil, fmt.Errorf("read docker archive %s: %w", file, err)
		}
		if _, err := img.Manifest(); err != nil {
			return nil, fmt.Errorf("read docker archive %s: %w", file, err)
		}
		return img, checkPlatform(img)
	case KindRegistry:
		return b.registryImage(ctx, r.Name)
	}
	return nil, fmt.Errorf("unknown image kind %v", r.Kind)
}

func (b *baker) rel(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(b.osDir, p)
}

// pick chooses the linux/amd64 image of an index: its only manifest, or
// the one whose platform is linux/amd64 (nested indexes are followed).
func pick(idx v1.ImageIndex, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, errors.New("indexes nested too deep")
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	var chosen *v1.Descriptor
	if len(im.Manifests) == 1 {
		chosen = &im.Manifests[0]
	} else {
		for i, d := range im.Manifests {
			if d.Platform != nil && d.Platform.OS == platform.OS && d.Platform.Architecture == platform.Architecture {
				chosen = &im.Manifests[i]
				break
			}
		}
	}
	if chosen == nil {
		return nil, fmt.Errorf("index holds %d manifests and none is for linux/amd64; keep one image or give them platforms", len(im.Manifests))
	}
	switch {
	case chosen.MediaType.IsImage():
		return idx.Image(chosen.Digest)
	case chosen.MediaType.IsIndex():
		child, err := idx.ImageIndex(chosen.Digest)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", chosen.Digest, err)
		}
		return pick(child, depth+1)
	}
	return nil, fmt.Errorf("manifest %s has unsupported media type %q", chosen.Digest, chosen.MediaType)
}

// checkPlatform refuses an image built for another platform; an image that
// does not say is accepted.
func checkPlatform(img v1.Image) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("image config: %w", err)
	}
	if (cf.OS != "" && cf.OS != platform.OS) || (cf.Architecture != "" && cf.Architecture != platform.Architecture) {
		return fmt.Errorf("image is for %s/%s, not linux/amd64", cf.OS, cf.Architecture)
	}
	return nil
}

// registryImage returns the linux/amd64 image of ref from the build cache,
// pulling it into the cache first when it is not there. A digest reference
// is verified against the manifest (or index) the registry returns.
func (b *baker) registryImage(ctx context.Context, ref name.Reference) (v1.Image, error) {
	cache, err := openLayout(filepath.Join(b.opts.CacheDir, "images"))
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	// Builds running at the same time share the cache's index.json.
	unlock, err := lockDir(string(cache))
	if err != nil {
		return nil, fmt.Errorf("image cache: %w", err)
	}
	defer unlock()
	key := ref.Name()
	var cacheErr error // a cache entry that was not used: said if the pull fails
	if img, ok, err := cached(cache, key); err != nil {
		return nil, fmt.Errorf("image cache: %s: %w", key, err)
	} else if ok {
		err := verifyCached(cache, img, ref)
		switch {
		case err == nil:
			b.logf("image %s: from the cache", key)
			return img, checkPlatform(img)
		case errors.Is(err, errPinMismatch):
			b.logf("image %s: %v; pulling again", key, err)
			cacheErr = fmt.Errorf("image cache %s: %w", cache, err)
		default:
			return nil, fmt.Errorf("image cache %s: %s: %w (remove the cache to pull again)", cache, key, err)
		}
	}
	b.logf("image %s: pulling", key)
	kc := b.opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithPlatform(platform))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pull %s: %w", key, err), cacheErr)
	}
	if d, ok := ref.(name.Digest); ok && desc.Digest.String() != d.DigestStr() {
		return nil, fmt.Errorf("pull %s: registry returned %s, not the digest asked for", key, desc.Digest)
	}
	var img v1.Image
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", key, err)
		}
		if img, err = pick(idx, 0); err != nil {
			return nil, fmt.Errorf("pull %s: %w", key, err)
		}
	} else if img, err = desc.Image(); err != nil {
		return nil, fmt.Errorf("pull %s: %w", key, err)
	}
	if err := checkPlatform(img); err != nil {
		return nil, fmt.Errorf("pull %s: %w", key, err)
	}
	// Writing the layout verifies every blob's digest while it streams
	// (blobs already there are kept: verifyCached checks them below). An
	// index is kept as a blob so that a pin on it can be checked later.
	if desc.MediaType.IsIndex() {
		if err := cache.WriteBlob(desc.Digest, io.NopCloser(bytes.NewReader(desc.Manifest))); err != nil {
			return nil, fmt.Errorf("pull %s: store in cache: %w", key, err)
		}
	}
	if err := cache.ReplaceImage(img, match.Annotation(refAnnotation, key), layout.WithAnnotations(map[string]string{refAnnotation: key})); err != nil {
		return nil, fmt.Errorf("pull %s: store in cache: %w", key, err)
	}
	img, ok, err := cached(cache, key)
	if err != nil || !ok {
		return nil, fmt.Errorf("pull %s: read back from cache: %v", key, err)
	}
	if err := verifyCached(cache, img, ref); err != nil {
		return nil, fmt.Errorf("image cache %s: %s: %w (remove the cache to pull again)", cache, key, err)
	}
	return img, nil
}

// errPinMismatch: a cached image is not the one a digest reference pins.
var errPinMismatch = errors.New("cached image does not match the pinned digest")

// maxIndexBytes bounds a cached index manifest.
const maxIndexBytes = 4 << 20

// verifyCached checks a cached image before it is used: for a digest
// reference, that the image is the pinned manifest or is listed by the
// pinned index (kept as a blob, whose hash is checked); then that the
// manifest, config and every layer match their digests (validate.Image
// reads every layer once).
func verifyCached(cache layout.Path, img v1.Image, ref name.Reference) error {
	if d, ok := ref.(name.Digest); ok {
		if err := checkPin(cache, img, d.DigestStr()); err != nil {
			return err
		}
	}
	if err := validate.Image(img); err != nil {
		return fmt.Errorf("cached image is corrupt: %w", err)
	}
	return nil
}

func checkPin(cache layout.Path, img v1.Image, pin string) error {
	dig, err := img.Digest()
	if err != nil {
		return fmt.Errorf("cached image digest: %w", err)
	}
	if dig.String() == pin {
		return nil
	}
	h, err := v1.NewHash(pin)
	if err != nil {
		return fmt.Errorf("%w: %v", errPinMismatch, err)
	}
	rc, err := cache.Blob(h)
	if err != nil {
		return fmt.Errorf("%w: image %s, and the pinned index %s is not cached", errPinMismatch, dig, pin)
	}
	defer rc.Close()
	raw, err := io.ReadAll(io.LimitReader(rc, maxIndexBytes+1))
	if err != nil {
		return fmt.Errorf("read cached index %s: %w", pin, err)
	}
	if sum := sha256.Sum256(raw); h.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != h.Hex || len(raw) > maxIndexBytes {
		return fmt.Errorf("cached index %s is corrupt: its sha256 is %x", pin, sum)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("cached index %s: %w", pin, err)
	}
	for _, m := range im.Manifests {
		if m.Digest == dig {
			return nil
		}
	}
	return fmt.Errorf("%w: cached image %s is neither %s nor listed by it", errPinMismatch, dig, pin)
}

func openLayout(dir string) (layout.Path, error) {
	if p, err := layout.FromPath(dir); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return layout.Write(dir, empty.Index)
}

// cached returns the image annotated with key in the layout p.
func cached(p layout.Path, key string) (v1.Image, bool, error) {
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, false, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, false, err
	}
	for _, d := range im.Manifests {
		if d.Annotations[refAnnotation] == key && d.MediaType.IsImage() {
			img, err := p.Image(d.Digest)
			if err != nil {
				return nil, false, err
			}
			return img, true, nil
		}
	}
	return nil, false, nil
}

// lockDir takes an exclusive flock on dir/.lock until the returned
// function is called.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { _ = f.Close() }, nil
}
