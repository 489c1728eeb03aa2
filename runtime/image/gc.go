package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// GCStats reports what GC removed.
type GCStats struct {
	Blobs        int   // blobs removed
	Snapshots    int   // snapshots removed
	BytesRemoved int64 // bytes of removed blobs (snapshot sizes are not counted)
}

// GC removes every blob and snapshot that is not needed by a named image or
// by one of the images in inUse (manifest digests of images that containers
// still use), and leftovers of interrupted writes. It holds the store lock
// exclusively, so it waits for running Add/Pull/Tag/Lowerdirs calls and they
// wait for it. Callers must not start containers from images they do not
// list in inUse while GC runs.
func (s *Store) GC(ctx context.Context, inUse ...v1.Hash) (GCStats, error) {
	var st GCStats
	unlock, err := s.lock(ctx, "lock", true)
	if err != nil {
		return st, err
	}
	defer unlock()
	refs, err := s.readRefs()
	if err != nil {
		return st, err
	}
	roots := append([]v1.Hash{}, inUse...)
	for _, d := range refs {
		roots = append(roots, d)
	}
	blobs := map[string]bool{}
	snaps := map[string]bool{}
	for _, d := range roots {
		m, cfg, err := s.manifestAndConfig(d)
		if err != nil {
			// A named image whose content is gone or corrupt keeps nothing
			// alive; it is reported by Lowerdirs/Config when used.
			continue
		}
		blobs[d.Hex] = true
		blobs[m.Config.Digest.Hex] = true
		for _, l := range m.Layers {
			blobs[l.Digest.Hex] = true
		}
		for _, id := range cfg.RootFS.DiffIDs {
			snaps[id.Algorithm+"-"+id.Hex] = true
			snaps[id.Algorithm+"-"+id.Hex+"-userns"] = true
		}
	}
	// Everything in tmp is an interrupted write: writers hold the shared lock.
	tmp := filepath.Join(s.root, "tmp")
	if ents, err := os.ReadDir(tmp); err == nil {
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
				return st, fmt.Errorf("image: gc: %w", err)
			}
		}
	}
	bdir := filepath.Join(s.root, "blobs", "sha256")
	ents, err := os.ReadDir(bdir)
	if err != nil {
		return st, fmt.Errorf("image: gc: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("image: gc: %w", err)
		}
		if blobs[e.Name()] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			st.BytesRemoved += fi.Size()
		}
		if err := os.Remove(filepath.Join(bdir, e.Name())); err != nil {
			return st, fmt.Errorf("image: gc: %w", err)
		}
		st.Blobs++
	}
	sdir := filepath.Join(s.root, "snapshots")
	ents, err = os.ReadDir(sdir)
	if err != nil {
		return st, fmt.Errorf("image: gc: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return st, fmt.Errorf("image: gc: %w", err)
		}
		if snaps[e.Name()] || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(sdir, e.Name())); err != nil {
			return st, fmt.Errorf("image: gc: %w", err)
		}
		st.Snapshots++
	}
	return st, nil
}
