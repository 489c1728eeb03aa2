package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/image/unpack"
)

// Add copies img into the store: every layer blob (checked against its
// digest and size) is saved and unpacked once into its snapshot (checked
// against its diffID), then the config and the manifest. Content already in
// the store is not fetched again. Add does not name the image; see Tag.
func (s *Store) Add(ctx context.Context, img v1.Image) (Image, error) {
	unlock, err := s.lock(ctx, "lock", false)
	if err != nil {
		return Image{}, err
	}
	defer unlock()

	rawM, err := img.RawManifest()
	if err != nil {
		return Image{}, fmt.Errorf("image: add: manifest: %w", err)
	}
	if int64(len(rawM)) > s.limits.MaxManifestBytes {
		return Image{}, fmt.Errorf("image: add: manifest larger than %d bytes", s.limits.MaxManifestBytes)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(rawM)}
	if want, err := img.Digest(); err != nil {
		return Image{}, fmt.Errorf("image: add: digest: %w", err)
	} else if want != d {
		return Image{}, fmt.Errorf("image: add: manifest digest is %s, source says %s", d, want)
	}
	m, err := parseManifest(rawM)
	if err != nil {
		return Image{}, fmt.Errorf("image: add %s: %w", d, err)
	}
	rawC, err := img.RawConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("image: add %s: config: %w", d, err)
	}
	if got := sha256Hex(rawC); got != m.Config.Digest.Hex || int64(len(rawC)) != m.Config.Size {
		return Image{}, fmt.Errorf("image: add %s: config does not match its descriptor %s", d, m.Config.Digest)
	}
	cfg, err := parseConfig(m, rawC)
	if err != nil {
		return Image{}, fmt.Errorf("image: add %s: %w", d, err)
	}

	// Layers, a few at a time; the first error cancels the rest.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.parallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i, desc := range m.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.ensureLayer(lctx, img, desc, diffID); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("image: add %s: layer %s: %w", d, desc.Digest, err)
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return Image{}, firstErr
	}
	if err := s.putSmallBlob(m.Config.Digest, rawC); err != nil {
		return Image{}, err
	}
	if err := s.putSmallBlob(d, rawM); err != nil {
		return Image{}, err
	}
	return Image{Digest: d}, nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (s *Store) putSmallBlob(h v1.Hash, b []byte) error {
	p := s.blobPath(h)
	if exists(p) {
		return nil
	}
	return s.writeFileAtomic(p, b)
}

// ensureLayer makes sure the layer's blob and snapshot are in the store.
func (s *Store) ensureLayer(ctx context.Context, img v1.Image, desc v1.Descriptor, diffID v1.Hash) error {
	blob := s.blobPath(desc.Digest)
	haveBlob := exists(blob)
	haveSnap := exists(s.snapshotDir(diffID))
	if haveBlob && haveSnap {
		return nil
	}
	var rc io.ReadCloser
	var err error
	if haveBlob {
		rc, err = os.Open(blob) // re-verified below like any other source
	} else {
		var l v1.Layer
		if l, err = img.LayerByDigest(desc.Digest); err == nil {
			rc, err = l.Compressed()
		}
	}
	if err != nil {
		return fmt.Errorf("open layer: %w", err)
	}
	defer rc.Close()
	return s.ingestLayer(ctx, rc, desc, diffID, !haveBlob, !haveSnap)
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// ingestLayer reads a compressed layer once, optionally saving it as a blob
// and unpacking it into a snapshot, and commits both only when the blob
// digest, size and diffID all match.
func (s *Store) ingestLayer(ctx context.Context, src io.Reader, desc v1.Descriptor, diffID v1.Hash, saveBlob, doUnpack bool) (err error) {
	tmpDir := filepath.Join(s.root, "tmp")
	blobHash := sha256.New()
	count := &countWriter{}
	sinks := []io.Writer{blobHash, count}
	var blobTmp *os.File
	if saveBlob {
		if blobTmp, err = os.CreateTemp(tmpDir, "blob-"); err != nil {
			return fmt.Errorf("temp blob: %w", err)
		}
		defer func() {
			blobTmp.Close()
			os.Remove(blobTmp.Name())
		}()
		sinks = append(sinks, blobTmp)
	}
	r := io.TeeReader(io.LimitReader(src, desc.Size+1), io.MultiWriter(sinks...))

	var snapTmp string
	var diffHash hash.Hash
	if doUnpack {
		if snapTmp, err = os.MkdirTemp(tmpDir, "snap-"); err != nil {
			return fmt.Errorf("temp snapshot: %w", err)
		}
		defer func() {
			if snapTmp != "" {
				os.RemoveAll(snapTmp)
			}
		}()
		if err := os.Mkdir(filepath.Join(snapTmp, "fs"), 0o755); err != nil {
			return fmt.Errorf("temp snapshot: %w", err)
		}
		dr, err := unpack.Decompress(r)
		if err != nil {
			return err
		}
		diffHash = sha256.New()
		ur := io.TeeReader(unpack.LimitReader(dr, s.limits.MaxLayerBytes), diffHash)
		_, err = unpack.Unpack(ctx, ur, filepath.Join(snapTmp, "fs"), unpack.Options{
			UserNS: s.userns, MaxBytes: s.limits.MaxLayerBytes, MaxEntries: s.limits.MaxLayerEntries,
		})
		if err == nil {
			// The diffID covers the whole stream, including tar padding.
			_, err = io.Copy(io.Discard, ur)
		}
		dr.Close()
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	if count.n != desc.Size || hex.EncodeToString(blobHash.Sum(nil)) != desc.Digest.Hex {
		return fmt.Errorf("blob does not match its descriptor (%d bytes read, %d expected): digest mismatch", count.n, desc.Size)
	}
	if diffHash != nil && hex.EncodeToString(diffHash.Sum(nil)) != diffID.Hex {
		return fmt.Errorf("uncompressed layer does not match diff_id %s", diffID)
	}
	if saveBlob {
		if !s.nosync {
			if err := blobTmp.Sync(); err != nil {
				return fmt.Errorf("sync blob: %w", err)
			}
		}
		if err := os.Rename(blobTmp.Name(), s.blobPath(desc.Digest)); err != nil {
			return fmt.Errorf("commit blob: %w", err)
		}
	}
	if doUnpack {
		if !s.nosync {
			if err := syncfs(snapTmp); err != nil {
				return err
			}
		}
		err := os.Rename(snapTmp, s.snapshotDir(diffID))
		if err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY) {
			return fmt.Errorf("commit snapshot: %w", err)
		}
		if err == nil {
			snapTmp = ""
		}
	}
	return nil
}

func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}
