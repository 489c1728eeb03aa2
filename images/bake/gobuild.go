package bake

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Files of every go:// image besides the binary: root and nobody, so that
// `user: nobody` resolves.
const (
	etcPasswd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
	etcGroup  = "root:x:0:\nnogroup:x:65534:\n"
	imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// findModRoot returns the nearest directory at or above dir holding go.mod.
func findModRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if st, err := os.Stat(filepath.Join(d, "go.mod")); err == nil && st.Mode().IsRegular() {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod at or above %s", dir)
		}
		d = parent
	}
}

// pinnedGoEnv are the variables of go build that the build host must not
// change: the target, the instruction set level, flags and experiments,
// and the toolchain (no download of another one). The rest of the
// environment (PATH, HOME, GOCACHE, GOMODCACHE, GOPATH, GOPROXY, ...) is
// kept so that builds work offline from the host's caches.
var pinnedGoEnv = []string{
	"CGO_ENABLED=0",
	"GOOS=linux",
	"GOARCH=amd64",
	"GOAMD64=v1",
	"GOFLAGS=",
	"GOEXPERIMENT=",
	"GOTOOLCHAIN=local",
}

// buildEnv returns environ without the pinned variables, then the pinned
// values.
func buildEnv(environ []string) []string {
	pinned := map[string]bool{}
	for _, kv := range pinnedGoEnv {
		k, _, _ := strings.Cut(kv, "=")
		pinned[k] = true
	}
	out := make([]string, 0, len(environ)+len(pinnedGoEnv))
	for _, kv := range environ {
		if k, _, _ := strings.Cut(kv, "="); !pinned[k] {
			out = append(out, kv)
		}
	}
	return append(out, pinnedGoEnv...)
}

// goImage builds a go:// package into a one-layer OCI image, as ko does:
// the static binary at /<name> plus /etc/passwd and /etc/group, every file
// root-owned with the build's time stamp.
func (b *baker) goImage(ctx context.Context, r Ref) (v1.Image, error) {
	goBin := b.opts.GoCommand
	if goBin == "" {
		goBin = "go"
	}
	goPath, err := exec.LookPath(goBin)
	if err != nil {
		return nil, fmt.Errorf("go:// images need the Go toolchain, and %q is not in PATH: %w", goBin, err)
	}
	modRoot, err := findModRoot(b.osDir)
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: %w", r.Raw, err)
	}
	name := binaryName(r.Path)
	out := filepath.Join(b.work, "go-"+name+fmt.Sprint(len(b.built)))
	b.built = append(b.built, out)
	cmd := exec.CommandContext(ctx, goPath, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, r.Path)
	cmd.Dir = modRoot
	cmd.Env = buildEnv(os.Environ())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	b.logf("image %s: go build in %s", r.Raw, modRoot)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go:// image %q: go build %s (in %s): %w\n%s", r.Raw, r.Path, modRoot, err, strings.TrimSpace(stderr.String()))
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: %w", r.Raw, err)
	}
	return goLayerImage(r.Raw, name, bin, b.mtime)
}

// goLayerImage assembles the image of a built binary.
func goLayerImage(raw, name string, bin []byte, mtime time.Time) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}, nil},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/group", Mode: 0o644}, []byte(etcGroup)},
		{tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644}, []byte(etcPasswd)},
		{tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755}, bin},
	}
	for _, e := range entries {
		h := e.hdr
		h.ModTime, h.Size, h.Format = mtime, int64(len(e.data)), tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
	}
	// Compress once (go-containerregistry would gzip again for the digest
	// and for the layout); gzip's output depends only on the input and the
	// Go release, and the header carries no time.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
	}
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
	}
	data := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: layer: %w", raw, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: mtime}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: created, CreatedBy: "cairn build " + raw, Comment: "go build -trimpath, CGO_ENABLED=0"},
	})
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: %w", raw, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("go:// image %q: config: %w", raw, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = platform.OS, platform.Architecture, created
	cf.Config.Entrypoint = []string{"/" + name}
	cf.Config.Env = []string{imagePath}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("go:// image %q: config: %w", raw, err)
	}
	if _, err := img.Digest(); err != nil {
		return nil, fmt.Errorf("go:// image %q: %w", raw, err)
	}
	return img, nil
}
