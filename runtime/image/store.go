// Package image is Cairn's image store: a content-addressed directory of
// verified blobs (manifests, configs, compressed layers), one unpacked
// snapshot directory per layer, and a small table of image names.
//
// Images enter the store through Add (any go-containerregistry v1.Image) and
// the helpers built on it: Pull (registry), LoadOCILayout and
// LoadDockerArchive. Every blob's digest and every layer's diffID is checked
// before it becomes visible. A container mounts overlayfs with the list from
// Lowerdirs and its own upper and work directories. GC removes blobs and
// snapshots that no named image and no caller-supplied in-use image needs.
//
// On-disk layout under the root directory:
//
//	blobs/sha256/<hex>          verified blobs
//	snapshots/<key>/fs          one unpacked layer (overlayfs lower dir)
//	refs.json                   name -> manifest digest
//	tmp/                        partial downloads and unpacks
//	lock, refs.lock             flock(2) files
//
// Several processes may use one root concurrently: writers take a shared
// lock, GC takes it exclusively.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/image/unpack"
)

// ErrNotFound is wrapped by errors for unknown names, digests or snapshots.
var ErrNotFound = errors.New("not found")

// Limits bound what the store accepts from outside.
type Limits struct {
	MaxManifestBytes int64 // manifest and config blobs; default 8 MiB
	MaxLayerBytes    int64 // uncompressed size of one layer; default unpack.DefaultMaxBytes
	MaxLayerEntries  int   // tar entries of one layer; default unpack.DefaultMaxEntries
}

// Option configures a Store.
type Option func(*Store)

// WithUserNS makes unpacked snapshots safe for user-namespaced containers:
// setuid/setgid bits and file capabilities are stripped. Snapshots made this
// way are kept apart from normal ones (their key ends in "-userns").
func WithUserNS() Option { return func(s *Store) { s.userns = true } }

// WithLimits overrides the default limits (zero fields keep the default).
func WithLimits(l Limits) Option {
	return func(s *Store) {
		if l.MaxManifestBytes > 0 {
			s.limits.MaxManifestBytes = l.MaxManifestBytes
		}
		if l.MaxLayerBytes > 0 {
			s.limits.MaxLayerBytes = l.MaxLayerBytes
		}
		if l.MaxLayerEntries > 0 {
			s.limits.MaxLayerEntries = l.MaxLayerEntries
		}
	}
}

// WithoutSync skips fsync/syncfs before blobs and snapshots are committed
// (faster, not crash safe: for tests and throw-away stores).
func WithoutSync() Option { return func(s *Store) { s.nosync = true } }

// WithParallelism sets how many layers of one image are fetched and unpacked
// at once (default 3).
func WithParallelism(n int) Option {
	return func(s *Store) {
		if n > 0 {
			s.parallel = n
		}
	}
}

// Store is an image store rooted at a directory. Its methods are safe for
// concurrent use, also across processes.
type Store struct {
	root     string
	userns   bool
	nosync   bool
	parallel int
	limits   Limits
}

// Image is a named (or, for Add, unnamed) image in the store.
type Image struct {
	Name   string  `json:"name,omitempty"` // normalized reference; empty if untagged
	Digest v1.Hash `json:"digest"`         // manifest digest (the platform-specific manifest)
}

// Open opens (creating if needed) the store rooted at root.
func Open(root string, opts ...Option) (*Store, error) {
	s := &Store{root: root, parallel: 3, limits: Limits{
		MaxManifestBytes: 8 << 20,
		MaxLayerBytes:    unpack.DefaultMaxBytes,
		MaxLayerEntries:  unpack.DefaultMaxEntries,
	}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{"blobs/sha256", "snapshots", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image: open store: %w", err)
		}
	}
	return s, nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

func (s *Store) snapshotKey(diffID v1.Hash) string {
	k := diffID.Algorithm + "-" + diffID.Hex
	if s.userns {
		k += "-userns"
	}
	return k
}

func (s *Store) snapshotDir(diffID v1.Hash) string {
	return filepath.Join(s.root, "snapshots", s.snapshotKey(diffID))
}

// checkHash accepts only well-formed sha256 digests: they become file names.
func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return fmt.Errorf("unsupported digest %q", h.String())
	}
	for _, c := range h.Hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("malformed digest %q", h.String())
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// lock takes the store lock (shared or exclusive), polling so that ctx can
// cancel the wait. The returned function releases it.
func (s *Store) lock(ctx context.Context, name string, exclusive bool) (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("image: lock: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("image: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("image: lock: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// readBlob reads a small blob (manifest or config) and verifies its digest.
func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	if err := checkHash(h); err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
		}
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, s.limits.MaxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	if int64(len(b)) > s.limits.MaxManifestBytes {
		return nil, fmt.Errorf("blob %s: larger than %d bytes", h, s.limits.MaxManifestBytes)
	}
	if got := sha256.Sum256(b); fmt.Sprintf("%x", got) != h.Hex {
		return nil, fmt.Errorf("blob %s: stored content does not match its digest", h)
	}
	return b, nil
}

// manifestAndConfig reads and cross-checks an image's manifest and config.
func (s *Store) manifestAndConfig(d v1.Hash) (*v1.Manifest, *v1.ConfigFile, error) {
	mb, err := s.readBlob(d)
	if err != nil {
		return nil, nil, fmt.Errorf("image: manifest: %w", err)
	}
	m, err := parseManifest(mb)
	if err != nil {
		return nil, nil, fmt.Errorf("image: manifest %s: %w", d, err)
	}
	cb, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, nil, fmt.Errorf("image: config: %w", err)
	}
	cfg, err := parseConfig(m, cb)
	if err != nil {
		return nil, nil, fmt.Errorf("image: config %s: %w", m.Config.Digest, err)
	}
	return m, cfg, nil
}

// Config returns the image config (entrypoint, env, user, ...) of the image
// with manifest digest d.
func (s *Store) Config(ctx context.Context, d v1.Hash) (*v1.ConfigFile, error) {
	_, cfg, err := s.manifestAndConfig(d)
	return cfg, err
}

// Lowerdirs returns the snapshot directories of the image with manifest
// digest d, topmost layer first, ready to be joined with ":" into overlayfs's
// lowerdir= option. A layer that occurs more than once is listed only at its
// topmost position (the lower copy is fully shadowed by it). An image without
// layers returns an empty list.
func (s *Store) Lowerdirs(ctx context.Context, d v1.Hash) ([]string, error) {
	unlock, err := s.lock(ctx, "lock", false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	_, cfg, err := s.manifestAndConfig(d)
	if err != nil {
		return nil, err
	}
	ids := cfg.RootFS.DiffIDs
	seen := make(map[v1.Hash]bool, len(ids))
	dirs := make([]string, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		if seen[ids[i]] {
			continue
		}
		seen[ids[i]] = true
		p := filepath.Join(s.snapshotDir(ids[i]), "fs")
		if !exists(p) {
			return nil, fmt.Errorf("image: snapshot of layer %s: %w", ids[i], ErrNotFound)
		}
		dirs = append(dirs, p)
	}
	return dirs, nil
}

type refTable map[string]v1.Hash

func (s *Store) readRefs() (refTable, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "refs.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return refTable{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image: read refs: %w", err)
	}
	refs := refTable{}
	if err := json.Unmarshal(b, &refs); err != nil {
		return nil, fmt.Errorf("image: parse refs.json: %w", err)
	}
	return refs, nil
}

// updateRefs applies fn to the ref table under the refs lock and writes it
// atomically.
func (s *Store) updateRefs(ctx context.Context, fn func(refTable) error) error {
	unlock, err := s.lock(ctx, "refs.lock", true)
	if err != nil {
		return err
	}
	defer unlock()
	refs, err := s.readRefs()
	if err != nil {
		return err
	}
	if err := fn(refs); err != nil {
		return err
	}
	b, err := json.MarshalIndent(refs, "", "  ")
	if err != nil {
		return fmt.Errorf("image: encode refs: %w", err)
	}
	return s.writeFileAtomic(filepath.Join(s.root, "refs.json"), b)
}

func (s *Store) writeFileAtomic(p string, b []byte) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "write-")
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("image: write %s: %w", p, err)
	}
	if !s.nosync {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("image: sync %s: %w", p, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image: write %s: %w", p, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("image: commit %s: %w", p, err)
	}
	return nil
}

// Tag names the image with manifest digest d (which must be in the store).
// The name is normalized (e.g. "busybox" becomes
// "index.docker.io/library/busybox:latest").
func (s *Store) Tag(ctx context.Context, ref string, d v1.Hash) error {
	n, err := NormalizeName(ref)
	if err != nil {
		return err
	}
	unlock, err := s.lock(ctx, "lock", false)
	if err != nil {
		return err
	}
	defer unlock()
	if _, _, err := s.manifestAndConfig(d); err != nil {
		return fmt.Errorf("image: tag %s: %w", n, err)
	}
	return s.updateRefs(ctx, func(r refTable) error { r[n] = d; return nil })
}

// Untag removes a name. The content stays until GC.
func (s *Store) Untag(ctx context.Context, ref string) error {
	n, err := NormalizeName(ref)
	if err != nil {
		return err
	}
	return s.updateRefs(ctx, func(r refTable) error {
		if _, ok := r[n]; !ok {
			return fmt.Errorf("image: %s: %w", n, ErrNotFound)
		}
		delete(r, n)
		return nil
	})
}

// Get returns the named image.
func (s *Store) Get(ref string) (Image, error) {
	n, err := NormalizeName(ref)
	if err != nil {
		return Image{}, err
	}
	refs, err := s.readRefs()
	if err != nil {
		return Image{}, err
	}
	d, ok := refs[n]
	if !ok {
		return Image{}, fmt.Errorf("image: %s: %w", n, ErrNotFound)
	}
	return Image{Name: n, Digest: d}, nil
}

// List returns all named images, sorted by name.
func (s *Store) List() ([]Image, error) {
	refs, err := s.readRefs()
	if err != nil {
		return nil, err
	}
	out := make([]Image, 0, len(refs))
	for n, d := range refs {
		out = append(out, Image{Name: n, Digest: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
