package peer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BuildBinary compiles the Go package pkg into a static binary at out,
// reproducibly and with the flags Cairn's go:// images use.
func BuildBinary(ctx context.Context, goBin, pkg, out string) error {
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// WriteImage packs the static binary bin as a one-layer image whose
// entrypoint is c.Args, tagged c.Tag(), and writes it as a docker-archive
// tarball (what `podman load` reads) to out. It returns the image's digest.
func WriteImage(bin string, c Container, out string) (v1.Hash, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(c.Args[0]), Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	if _, err := tw.Write(data); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	if err := tw.Close(); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = c.Args
	cf.Config.ExposedPorts = map[string]struct{}{fmt.Sprintf("%d/tcp", c.Port): {}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	tag, err := name.NewTag(c.Tag())
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image tag: %w", err)
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return v1.Hash{}, fmt.Errorf("write web image %s: %w", out, err)
	}
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image digest: %w", err)
	}
	return d, nil
}
