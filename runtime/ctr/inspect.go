package ctr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"cairn.dev/cairn/runtime/image"
)

// ImageInfo is what "images inspect --json REF" and "images pull --json
// REF" print: one JSON object on one line. It is the contract with PID 1,
// which runs the tool binary for run-time pulls and builds the container
// from it (init/supervise/pull.go reads the same fields); PID 1 does not
// link go-containerregistry.
type ImageInfo struct {
	// Name is the normalised reference; Digest the manifest digest.
	Name   string `json:"name"`
	Digest string `json:"digest"`
	// Pulled tells whether this command fetched the image from its
	// registry (false: it was already in the store).
	Pulled bool `json:"pulled"`
	// Lowerdirs are the image's unpacked layer snapshots, topmost first,
	// usable as overlayfs lowerdirs in this order.
	Lowerdirs []string `json:"lowerdirs"`
	// Config is the subset of the image config a container takes, under
	// the OCI image config's own field names.
	Config ImageInfoConfig `json:"config"`
}

// ImageInfoConfig is the part of an image config that PID 1 uses.
type ImageInfoConfig struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	User       string   `json:"User,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	StopSignal string   `json:"StopSignal,omitempty"`
}

// imageInfo describes the stored image named ref.
func imageInfo(ctx context.Context, st *image.Store, ref string) (ImageInfo, error) {
	img, err := resolveImage(ctx, st, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	cfg, err := st.Config(ctx, img.Digest)
	if err != nil {
		return ImageInfo{}, err
	}
	dirs, err := st.Lowerdirs(ctx, img.Digest)
	if err != nil {
		return ImageInfo{}, err
	}
	c := cfg.Config
	name := img.Name
	if name == "" {
		name = ref
	}
	return ImageInfo{Name: name, Digest: img.Digest.String(), Lowerdirs: dirs,
		Config: ImageInfoConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User,
			WorkingDir: c.WorkingDir, StopSignal: c.StopSignal}}, nil
}

// pullInfo pulls ref (with ifMissing, only when the store lacks it or its
// snapshots) and describes it.
func pullInfo(ctx context.Context, st *image.Store, ref string, ifMissing bool) (ImageInfo, error) {
	if ifMissing {
		info, err := imageInfo(ctx, st, ref)
		if err == nil {
			return info, nil
		}
		if !errors.Is(err, image.ErrNotFound) {
			return ImageInfo{}, err
		}
	}
	img, err := st.Pull(ctx, ref)
	if err != nil {
		return ImageInfo{}, err
	}
	info, err := imageInfo(ctx, st, img.Name)
	if err != nil {
		return ImageInfo{}, err
	}
	info.Pulled = true
	return info, nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
