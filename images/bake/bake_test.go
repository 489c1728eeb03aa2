package bake

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"cairn.dev/cairn/images/rootfs"
	"cairn.dev/cairn/runtime/image/unpack"
	"github.com/erofs/go-erofs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ent is one tar entry of a test layer.
type ent struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	link     string
	data     string
	pax      map[string]string
}

func mkLayer(t testing.TB, ents ...ent) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		switch {
		case mode == 0:
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		case mode < 0: // mode 0000
			mode = 0
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			Size: int64(len(e.data)), ModTime: time.Unix(1, 0), Format: tar.FormatPAX, PAXRecords: e.pax}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mkImage(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/bin/app"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// twoLayers has a whiteout, an opaque directory, a non-root-owned file, a
// setuid file, links, a device node and a FIFO.
func twoLayers(t testing.TB) v1.Image {
	return mkImage(t,
		mkLayer(t,
			ent{name: "a/", typ: tar.TypeDir},
			ent{name: "a/keep", mode: 0o640, uid: 1000, gid: 1001, data: "keep"},
			ent{name: "a/gone", data: "gone"},
			ent{name: "b/", typ: tar.TypeDir, uid: 33, gid: 33, mode: 0o750},
			ent{name: "b/old", data: "old"},
			ent{name: "b/sub/", typ: tar.TypeDir},
			ent{name: "b/sub/deep", data: "deep"},
			ent{name: "bin/", typ: tar.TypeDir},
			ent{name: "bin/su", mode: 0o4755, data: "su"},
			ent{name: "bin/app", mode: 0o755, data: "app"},
			ent{name: "link", typ: tar.TypeSymlink, link: "a/keep"},
			ent{name: "abs", typ: tar.TypeSymlink, link: "/bin/app"},
			ent{name: "hostetc", typ: tar.TypeSymlink, link: "/etc"},
			ent{name: "mtab", typ: tar.TypeSymlink, link: "/proc/self/mounts"},
			ent{name: "hard", typ: tar.TypeLink, link: "a/keep"},
			ent{name: "dev/", typ: tar.TypeDir},
			ent{name: "dev/null", typ: tar.TypeChar},
		),
		mkLayer(t,
			ent{name: "a/.wh.gone", data: ""},
			ent{name: "b/.wh..wh..opq", data: ""},
			ent{name: "b/new", uid: 33, gid: 33, data: "new"},
			ent{name: "fifo", typ: tar.TypeFifo},
			ent{name: "bin/app", mode: 0o755, data: "app v2"},
		),
	)
}

func bakeOne(t *testing.T, osDir, ref string, opts Options) (*Result, error) {
	t.Helper()
	r, err := ParseRef(ref)
	if err != nil {
		t.Fatalf("ParseRef(%q): %v", ref, err)
	}
	if opts.WorkDir == "" {
		opts.WorkDir = t.TempDir()
	}
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	opts.Log = t.Logf
	return BakeRefs(context.Background(), osDir, []Ref{r}, opts)
}

// index reads the layout's index.json.
func index(t *testing.T, res *Result) v1.IndexManifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(res.Dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(b, &im); err != nil {
		t.Fatal(err)
	}
	return im
}

// checkTwoLayers checks the flattened tree of twoLayers.
func checkTwoLayers(t *testing.T, res *Result, ref string, want v1.Hash) {
	t.Helper()
	if len(res.Images) != 1 || res.Images[0].Digest != want || res.Images[0].Ref != ref {
		t.Fatalf("images = %+v, want %s %s", res.Images, ref, want)
	}
	im := index(t, res)
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	d := im.Manifests[0]
	rootfsDir := "rootfs/" + want.Hex
	if d.Digest != want || d.Annotations[refAnnotation] != ref || d.Annotations[rootfsAnnotation] != rootfsDir {
		t.Fatalf("index descriptor = %+v", d)
	}
	// The layout holds the image's manifest and config, digests correct,
	// and no layer blob: the flattened tree replaces them.
	p, err := layout.FromPath(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := img.Digest(); err != nil || got != want {
		t.Fatalf("manifest digest = %v, %v; want %s", got, err, want)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := img.RawConfigFile(); err != nil {
		t.Fatalf("config blob: %v", err)
	} else if h, _, _ := v1.SHA256(bytes.NewReader(raw)); h != cfgName {
		t.Fatalf("config blob hashes to %s, want %s", h, cfgName)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := os.ReadDir(filepath.Join(res.Dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 2 {
		t.Errorf("layout has %d blobs, want 2 (manifest, config)", len(blobs))
	}
	for _, l := range m.Layers {
		if _, err := os.Stat(filepath.Join(res.Dir, "blobs", "sha256", l.Digest.Hex)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("layer blob %s is in the layout (%v); only the flattened tree should be", l.Digest, err)
		}
	}

	fsys := res.FS()
	tree := filepath.Join(res.Dir, rootfsDir)
	files := map[string]string{"a/keep": "keep", "b/new": "new", "bin/app": "app v2", "bin/su": "su", "hard": "keep"}
	for p, data := range files {
		got, err := os.ReadFile(filepath.Join(tree, p))
		if err != nil || string(got) != data {
			t.Errorf("%s = %q, %v; want %q", p, got, err, data)
		}
	}
	for _, p := range []string{"a/gone", "a/.wh.gone", "b/old", "b/sub", "b/.wh..wh..opq", "dev/null", "fifo"} {
		if _, err := os.Lstat(filepath.Join(tree, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: exists (%v), want removed", p, err)
		}
	}
	if l, err := os.Readlink(filepath.Join(tree, "link")); err != nil || l != "a/keep" {
		t.Errorf("link -> %q, %v", l, err)
	}
	owners := []struct {
		path     string
		uid, gid uint32
		mode     fs.FileMode
	}{
		{"a/keep", 1000, 1001, 0o640},
		{"hard", 1000, 1001, 0o640},
		{"b", 33, 33, fs.ModeDir | 0o750},
		{"b/new", 33, 33, 0o644},
		{"bin/su", 0, 0, fs.ModeSetuid | 0o755},
		{"dev", 0, 0, fs.ModeDir | 0o755},
		{"link", 0, 0, fs.ModeSymlink | 0o777},
	}
	for _, o := range owners {
		fi, err := fs.Lstat(fsys, rootfsDir+"/"+o.path)
		if err != nil {
			t.Errorf("%s: %v", o.path, err)
			continue
		}
		own, _ := fi.Sys().(rootfs.Owner)
		if own.UID != o.uid || own.GID != o.gid || fi.Mode() != o.mode {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d %v", o.path, own.UID, own.GID, fi.Mode(), o.uid, o.gid, o.mode)
		}
	}
}

func TestBakeOCILayout(t *testing.T) {
	img := twoLayers(t)
	osDir := t.TempDir()
	p, err := layout.Write(filepath.Join(osDir, "img"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	res, err := bakeOne(t, osDir, "oci-layout:img", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkTwoLayers(t, res, "oci-layout:img", want)
}

func TestBakeDockerArchive(t *testing.T) {
	img := twoLayers(t)
	osDir := t.TempDir()
	tag, _ := name.NewTag("example.com/app:v1")
	if err := tarball.WriteToFile(filepath.Join(osDir, "app.tar"), tag, img); err != nil {
		t.Fatal(err)
	}
	res, err := bakeOne(t, osDir, "docker-archive:app.tar", Options{})
	if err != nil {
		t.Fatal(err)
	}
	// docker save writes Docker media types; the digest is the archive's.
	ai, err := tarball.ImageFromPath(filepath.Join(osDir, "app.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ai.Digest()
	checkTwoLayers(t, res, "docker-archive:app.tar", want)
}

func TestBakeRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(nullLogger())))
	u, _ := url.Parse(srv.URL)
	host := u.Host // 127.0.0.1:PORT
	img := twoLayers(t)
	dig, _ := img.Digest()
	// A multi-platform index: the amd64 image must be picked.
	arm := mkImage(t, mkLayer(t, ent{name: "arm", data: "arm"}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	tag, _ := name.NewTag(host + "/team/app:v1")
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	single, _ := name.NewTag(host + "/team/single:v1")
	if err := remote.Write(single, img); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	cache := t.TempDir()
	opts := Options{CacheDir: cache, Keychain: authn.NewMultiKeychain()}

	for _, ref := range []string{host + "/team/app:v1", host + "/team/app@" + idxDigest.String(), host + "/team/single@" + dig.String()} {
		res, err := bakeOne(t, "", ref, opts)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		checkTwoLayers(t, res, ref, dig)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)
	if _, err := bakeOne(t, "", host+"/team/app@"+wrong, opts); err == nil {
		t.Fatal("a wrong digest was accepted")
	}

	// Warm: the registry is gone, the cache answers.
	srv.Close()
	res, err := bakeOne(t, "", host+"/team/app:v1", opts)
	if err != nil {
		t.Fatalf("warm bake without the registry: %v", err)
	}
	checkTwoLayers(t, res, host+"/team/app:v1", dig)
	if _, err := bakeOne(t, "", host+"/team/other:v1", opts); err == nil {
		t.Fatal("an image neither cached nor reachable was baked")
	}
}

// retarget points the cache's index entry for key at the manifest of img.
func retarget(t *testing.T, cacheDir, key string, img v1.Image) {
	t.Helper()
	p := filepath.Join(cacheDir, "images", "index.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(b, &im); err != nil {
		t.Fatal(err)
	}
	dig, _ := img.Digest()
	size, _ := img.Size()
	found := false
	for i, d := range im.Manifests {
		if d.Annotations[refAnnotation] == key {
			im.Manifests[i].Digest, im.Manifests[i].Size, found = dig, size, true
		}
	}
	if !found {
		t.Fatalf("no cache entry for %s", key)
	}
	if b, err = json.Marshal(im); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// corruptBlob flips one byte of a cached blob.
func corruptBlob(t *testing.T, cacheDir string, h v1.Hash) {
	t.Helper()
	p := filepath.Join(cacheDir, "images", "blobs", h.Algorithm, h.Hex)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xFF
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The pull cache is checked before use: a digest pin against the cached
// manifest (or the cached pinned index), and every blob's digest.
func TestBakeRegistryCacheVerified(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(nullLogger())))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	host := u.Host
	img := twoLayers(t)
	dig, _ := img.Digest()
	other := mkImage(t, mkLayer(t, ent{name: "other", data: "other"}))
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	idxDigest, _ := idx.Digest()
	for tag, w := range map[string]func(name.Reference) error{
		"single:v1": func(r name.Reference) error { return remote.Write(r, img) },
		"other:v1":  func(r name.Reference) error { return remote.Write(r, other) },
		"app:v1":    func(r name.Reference) error { return remote.WriteIndex(r, idx) },
	} {
		ref, _ := name.NewTag(host + "/team/" + tag)
		if err := w(ref); err != nil {
			t.Fatal(err)
		}
	}
	cache := t.TempDir()
	opts := Options{CacheDir: cache, Keychain: authn.NewMultiKeychain()}
	pinned := host + "/team/single@" + dig.String()
	pinnedIdx := host + "/team/app@" + idxDigest.String()
	for _, ref := range []string{pinned, pinnedIdx, host + "/team/app:v1", host + "/team/other:v1"} {
		if _, err := bakeOne(t, "", ref, opts); err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
	}
	// A cache entry naming another image: pulled again while the registry
	// is there.
	retarget(t, cache, pinned, other)
	res, err := bakeOne(t, "", pinned, opts)
	if err != nil {
		t.Fatalf("retargeted entry, registry up: %v", err)
	}
	checkTwoLayers(t, res, pinned, dig)

	srv.Close()
	// The pinned index is checked from its cached blob.
	if res, err := bakeOne(t, "", pinnedIdx, opts); err != nil {
		t.Fatalf("warm pinned index: %v", err)
	} else {
		checkTwoLayers(t, res, pinnedIdx, dig)
	}
	retarget(t, cache, pinned, other)
	if _, err := bakeOne(t, "", pinned, opts); err == nil || !strings.Contains(err.Error(), "does not match the pinned digest") {
		t.Fatalf("retargeted entry, registry down: %v", err)
	}
	retarget(t, cache, pinnedIdx, other)
	if _, err := bakeOne(t, "", pinnedIdx, opts); err == nil || !strings.Contains(err.Error(), "is neither "+idxDigest.String()+" nor listed by it") {
		t.Fatalf("retargeted index entry: %v", err)
	}
	retarget(t, cache, pinnedIdx, img)
	corruptBlob(t, cache, idxDigest)
	if _, err := bakeOne(t, "", pinnedIdx, opts); err == nil || !strings.Contains(err.Error(), "cached index "+idxDigest.String()+" is corrupt") {
		t.Fatalf("corrupt index blob: %v", err)
	}
	// A corrupt layer blob fails the build, naming the cache.
	layers, _ := img.Layers()
	ld, _ := layers[1].Digest()
	corruptBlob(t, cache, ld)
	if _, err := bakeOne(t, "", host+"/team/app:v1", opts); err == nil || !strings.Contains(err.Error(), "cached image is corrupt") {
		t.Fatalf("corrupt layer blob: %v", err)
	}
	// A corrupt manifest too.
	od, _ := other.Digest()
	corruptBlob(t, cache, od)
	if _, err := bakeOne(t, "", host+"/team/other:v1", opts); err == nil || !strings.Contains(err.Error(), "image cache") {
		t.Fatalf("corrupt manifest blob: %v", err)
	}
}

func TestBakeRegistryWrongPlatform(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(nullLogger())))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	arm := mkImage(t, mkLayer(t, ent{name: "arm", data: "arm"}))
	cf, _ := arm.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "arm64"
	arm, _ = mutate.ConfigFile(arm, cf)
	tag, _ := name.NewTag(u.Host + "/arm:v1")
	if err := remote.Write(tag, arm); err != nil {
		t.Fatal(err)
	}
	_, err := bakeOne(t, "", u.Host+"/arm:v1", Options{Keychain: authn.NewMultiKeychain()})
	if err == nil || !strings.Contains(err.Error(), "not linux/amd64") {
		t.Fatalf("err = %v, want a platform error", err)
	}
}

func TestBakeHostile(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]ent
	}{
		{"traversal", [][]ent{{{name: "../../etc/passwd", data: "x"}}}},
		{"traversal-in-middle", [][]ent{{{name: "a/../../x", data: "x"}}}},
		{"symlink-climbs-out", [][]ent{{{name: "evil", typ: tar.TypeSymlink, link: "../../../etc"}}}},
		{"nested-symlink-climbs-out", [][]ent{{{name: "a/b/evil", typ: tar.TypeSymlink, link: "../../../x"}}}},
		{"hardlink-climbs-out", [][]ent{{{name: "h", typ: tar.TypeLink, link: "../etc/shadow"}}}},
		{"write-through-symlink", [][]ent{{
			{name: "evil", typ: tar.TypeSymlink, link: "/"},
			{name: "evil/etc/passwd", data: "x"},
		}}},
		{"write-through-symlink-next-layer", [][]ent{
			{{name: "evil", typ: tar.TypeSymlink, link: "/etc"}},
			{{name: "evil/passwd", data: "x"}},
		}},
		{"hardlink-through-symlink", [][]ent{{
			{name: "s", typ: tar.TypeSymlink, link: "/etc"},
			{name: "h", typ: tar.TypeLink, link: "s/shadow"},
		}}},
		{"negative-owner", [][]ent{{{name: "f", uid: -1, data: "x"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var layers []v1.Layer
			for _, l := range tc.layers {
				layers = append(layers, mkLayer(t, l...))
			}
			img := mkImage(t, layers...)
			osDir := t.TempDir()
			p, err := layout.Write(filepath.Join(osDir, "img"), empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.AppendImage(img); err != nil {
				t.Fatal(err)
			}
			_, err = bakeOne(t, osDir, "oci-layout:img", Options{})
			if !errors.Is(err, ErrHostile) {
				t.Fatalf("err = %v, want a hostile-layer error", err)
			}
			t.Log(err)
		})
	}
}

func TestBakeAllowedLinks(t *testing.T) {
	// Links that stay inside the image, and a symlink replaced by a
	// directory (in a later layer) before being written through, are fine.
	img := mkImage(t,
		mkLayer(t,
			ent{name: "usr/lib/x/", typ: tar.TypeDir},
			ent{name: "usr/lib/x/rel", typ: tar.TypeSymlink, link: "../../bin/app"},
			ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		),
		mkLayer(t,
			ent{name: "lib/", typ: tar.TypeDir},
			ent{name: "lib/f", data: "f"},
		),
	)
	osDir := t.TempDir()
	p, _ := layout.Write(filepath.Join(osDir, "img"), empty.Index)
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	res, err := bakeOne(t, osDir, "oci-layout:img", Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if b, err := os.ReadFile(filepath.Join(res.Dir, "rootfs", d.Hex, "lib/f")); err != nil || string(b) != "f" {
		t.Fatalf("lib/f = %q, %v", b, err)
	}
}

func TestBakeGo(t *testing.T) {
	osDir := filepath.Join("..", "..", "os", "examples")
	const ref = "go://./os/examples/hello-web"
	opts := Options{SourceDateEpoch: 1700000000}
	res, err := bakeOne(t, osDir, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	bi := res.Images[0]
	p, err := layout.FromPath(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(bi.Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	cf, _ := img.ConfigFile()
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Errorf("media types: %+v", m)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || strings.Join(cf.Config.Entrypoint, " ") != "/hello-web" ||
		cf.Created.Unix() != 1700000000 || len(cf.History) != 1 {
		t.Errorf("config: %+v", cf)
	}
	tree := filepath.Join(res.Dir, bi.Rootfs)
	st, err := os.Stat(filepath.Join(tree, "hello-web"))
	if err != nil || st.Mode().Perm() != 0o755 || st.Size() < 1<<20 {
		t.Fatalf("hello-web: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(tree, "etc/passwd")); err != nil || !strings.Contains(string(b), "nobody:x:65534") {
		t.Errorf("etc/passwd = %q, %v", b, err)
	}
	// Reproducible: a second bake gives the same digest, whatever the
	// host's go environment says (GOFLAGS=-mod=bogus and an unknown
	// GOEXPERIMENT fail go build outright; GOAMD64=v3 changes the binary).
	t.Setenv("GOAMD64", "v3")
	t.Setenv("GOFLAGS", "-mod=bogus")
	t.Setenv("GOEXPERIMENT", "nosuchexperiment")
	t.Setenv("CGO_ENABLED", "1")
	again, err := bakeOne(t, osDir, ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	if again.Images[0].Digest != bi.Digest {
		t.Errorf("second bake: %s, first %s", again.Images[0].Digest, bi.Digest)
	}

	// Without the toolchain, the error says so.
	_, err = bakeOne(t, osDir, ref, Options{GoCommand: "/nonexistent/go"})
	if err == nil || !strings.Contains(err.Error(), "need the Go toolchain") {
		t.Errorf("missing go: %v", err)
	}
	// A package that does not build names the package.
	_, err = bakeOne(t, osDir, "go://./os/examples/nonexistent", opts)
	if err == nil || !strings.Contains(err.Error(), "go build ./os/examples/nonexistent") {
		t.Errorf("bad package: %v", err)
	}
}

func TestBuildEnv(t *testing.T) {
	host := []string{"PATH=/usr/bin", "HOME=/home/u", "GOCACHE=/c", "GOMODCACHE=/m", "GOPROXY=off", "GOPATH=/g",
		"GOAMD64=v3", "GOFLAGS=-tags=x", "GOEXPERIMENT=arenas", "GOTOOLCHAIN=go1.99.0", "CGO_ENABLED=1", "GOOS=darwin", "GOARCH=arm64"}
	got := map[string][]string{}
	for _, kv := range buildEnv(host) {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = append(got[k], v)
	}
	want := map[string]string{"PATH": "/usr/bin", "HOME": "/home/u", "GOCACHE": "/c", "GOMODCACHE": "/m", "GOPROXY": "off", "GOPATH": "/g",
		"GOAMD64": "v1", "GOFLAGS": "", "GOEXPERIMENT": "", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64"}
	for k, v := range want {
		if len(got[k]) != 1 || got[k][0] != v {
			t.Errorf("%s = %q, want exactly %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("env = %v", got)
	}
}

// TestRootfsOwners builds an erofs root with a baked layout mounted into a
// MapFS and reads the owners back.
func TestRootfsOwners(t *testing.T) {
	img := twoLayers(t)
	osDir := t.TempDir()
	p, _ := layout.Write(filepath.Join(osDir, "img"), empty.Index)
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	res, err := bakeOne(t, osDir, "oci-layout:img", Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := fstest.MapFS{
		"usr/share/cairn/os.yaml": &fstest.MapFile{Data: []byte("name: x\n"), Mode: 0o644},
		"sbin/init":               &fstest.MapFile{Data: []byte("init"), Mode: 0o755},
	}
	efs := buildErofs(t, t.TempDir(), Mount(base, RootPath, res.FS()))
	d, _ := img.Digest()
	tree := RootPath + "/rootfs/" + d.Hex
	for _, c := range []struct {
		path     string
		uid, gid uint32
		mode     fs.FileMode
	}{
		{tree + "/a/keep", 1000, 1001, 0o640},
		{tree + "/b", 33, 33, fs.ModeDir | 0o750},
		{tree + "/bin/su", 0, 0, fs.ModeSetuid | 0o755},
		{RootPath + "/index.json", 0, 0, 0o644},
		{RootPath, 0, 0, fs.ModeDir | 0o755},
		{"sbin/init", 0, 0, 0o755},
	} {
		fi, err := fs.Stat(efs, c.path)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		st, _ := fi.Sys().(*erofs.Stat)
		if st == nil || st.UID != c.uid || st.GID != c.gid || st.Mode != c.mode {
			t.Errorf("%s: %+v mode %v, want %d:%d %v", c.path, st, fi.Mode(), c.uid, c.gid, c.mode)
		}
	}
	// Absolute symlinks are stored as links, never followed on the host.
	for _, l := range []struct{ path, target string }{{"hostetc", "/etc"}, {"mtab", "/proc/self/mounts"}, {"abs", "/bin/app"}} {
		fi, err := fs.Lstat(efs, tree+"/"+l.path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s: %v %v, want a symlink", l.path, fi, err)
			continue
		}
		if got, err := fs.ReadLink(efs, tree+"/"+l.path); err != nil || got != l.target {
			t.Errorf("%s -> %q, %v; want %q", l.path, got, err, l.target)
		}
	}
	if b, err := fs.ReadFile(efs, tree+"/a/keep"); err != nil || string(b) != "keep" {
		t.Errorf("a/keep = %q, %v", b, err)
	}
	ents, err := fs.ReadDir(efs, "usr/share/cairn")
	if err != nil || len(ents) != 2 {
		t.Errorf("usr/share/cairn: %v, %v", ents, err)
	}
}

// buildErofs builds root as dir/root.erofs and opens it; the file is
// closed when the test ends.
func buildErofs(t *testing.T, dir string, root fs.FS) fs.FS {
	t.Helper()
	out := filepath.Join(dir, "root.erofs")
	if _, err := rootfs.Build(context.Background(), root, out, rootfs.Options{BuildTime: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	efs, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	return efs
}

// capNetRaw is a security.capability value (VFS_CAP_REVISION_2, permitted
// and effective CAP_NET_RAW).
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

// nonRootEnv names the directory TestBakeNonRoot's child works in.
const nonRootEnv = "CAIRN_BAKE_NONROOT_DIR"

// TestBakeNonRoot bakes, as a build user who is not root (uid 65534 in a
// child process when the test runs as root), an image with a mode-0000
// file, a mode-0500 directory and extended attributes (a file capability),
// then builds an erofs root from it: the on-disk copies stay usable, the
// erofs entries keep the image's modes and the kept xattrs.
func TestBakeNonRoot(t *testing.T) {
	if dir := os.Getenv(nonRootEnv); dir != "" {
		bakeNonRoot(t, dir)
		return
	}
	dir, err := os.MkdirTemp("", "bake-nonroot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	img := mkImage(t, mkLayer(t,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/shadow", mode: -1, data: "root:*:1::::::\n"},
		ent{name: "ro/", typ: tar.TypeDir, mode: 0o500, pax: map[string]string{"SCHILY.xattr.user.dir": "d"}},
		ent{name: "ro/f", mode: 0o400, data: "f"},
		ent{name: "ping", mode: 0o755, data: "ping", pax: map[string]string{
			"SCHILY.xattr.security.capability": capNetRaw,
			"SCHILY.xattr.user.note":           "n",
			"SCHILY.xattr.trusted.overlay.x":   "y",
			"SCHILY.xattr.security.selinux":    "system_u:object_r:bin_t:s0",
		}},
		ent{name: "ping2", typ: tar.TypeLink, link: "ping"},
	))
	p, err := layout.Write(filepath.Join(dir, "os", "img"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"work", "cache"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 {
		bakeNonRoot(t, dir)
		return
	}
	// The child runs a copy of the test binary (go's build directory is
	// private to root) as 65534 in a tree it owns.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bake.test"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "bake.test"), "-test.run=^TestBakeNonRoot$", "-test.v")
	cmd.Env = append(os.Environ(), nonRootEnv+"="+dir, "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestBakeNonRoot") {
		t.Fatalf("bake as uid 65534: %v\n%s", err, out)
	}
}

func bakeNonRoot(t *testing.T, dir string) {
	if os.Geteuid() == 0 {
		t.Fatal("running as root")
	}
	opts := Options{WorkDir: filepath.Join(dir, "work"), CacheDir: filepath.Join(dir, "cache")}
	res, err := bakeOne(t, filepath.Join(dir, "os"), "oci-layout:img", opts)
	if err != nil {
		t.Fatal(err)
	}
	efs := buildErofs(t, dir, Mount(fstest.MapFS{"usr/share/cairn/os.yaml": &fstest.MapFile{Data: []byte("name: x\n"), Mode: 0o644}}, RootPath, res.FS()))
	tree := RootPath + "/" + res.Images[0].Rootfs
	for _, c := range []struct {
		path, data string
		mode       fs.FileMode
		xattrs     map[string]string
	}{
		{"etc/shadow", "root:*:1::::::\n", 0, nil},
		{"ro", "", fs.ModeDir | 0o500, map[string]string{"user.dir": "d"}},
		{"ro/f", "f", 0o400, nil},
		// Kept: file capabilities and user.*; dropped: trusted.*, security.selinux.
		{"ping", "ping", 0o755, map[string]string{"security.capability": capNetRaw, "user.note": "n"}},
		{"ping2", "ping", 0o755, map[string]string{"security.capability": capNetRaw, "user.note": "n"}},
	} {
		fi, err := fs.Stat(efs, tree+"/"+c.path)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if st, _ := fi.Sys().(*erofs.Stat); st == nil || st.Mode != c.mode || !maps.Equal(st.Xattrs, c.xattrs) {
			t.Errorf("%s: %+v, want mode %v, xattrs %q", c.path, st, c.mode, c.xattrs)
		}
		if c.data != "" {
			if b, err := fs.ReadFile(efs, tree+"/"+c.path); err != nil || string(b) != c.data {
				t.Errorf("%s = %q, %v", c.path, b, err)
			}
		}
	}
}

func TestRefs(t *testing.T) {
	r := Refs(mustOS(t))
	want := []string{"go://./a", "reg.example/b:1", "oci-layout:c"}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("Refs = %v, want %v", r, want)
	}
}

// TestBakeSameImageTwice: two strings naming the same image get one
// descriptor each and share one tree.
func TestBakeSameImageTwice(t *testing.T) {
	img := twoLayers(t)
	osDir := t.TempDir()
	p, _ := layout.Write(filepath.Join(osDir, "img"), empty.Index)
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	var refs []Ref
	for _, s := range []string{"oci-layout:img", "oci-layout:./img"} {
		r, err := ParseRef(s)
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, r)
	}
	res, err := BakeRefs(context.Background(), osDir, refs, Options{WorkDir: t.TempDir(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	im := index(t, res)
	if len(im.Manifests) != 2 || len(res.Images) != 2 {
		t.Fatalf("index = %+v", im.Manifests)
	}
	for i, m := range im.Manifests {
		if m.Digest != d || m.Annotations[refAnnotation] != refs[i].Raw || m.Annotations[rootfsAnnotation] != "rootfs/"+d.Hex {
			t.Errorf("descriptor %d = %+v", i, m)
		}
		if res.Images[i].Ref != refs[i].Raw || res.Images[i].RootfsSize == 0 {
			t.Errorf("image %d = %+v", i, res.Images[i])
		}
	}
	ents, err := os.ReadDir(filepath.Join(res.Dir, "rootfs"))
	if err != nil || len(ents) != 1 {
		t.Errorf("rootfs trees: %v %v", ents, err)
	}
}

func TestPick(t *testing.T) {
	a := mkImage(t, mkLayer(t, ent{name: "a", data: "a"}))
	b := mkImage(t, mkLayer(t, ent{name: "b", data: "b"}))
	ad, _ := a.Digest()
	amd := &v1.Platform{OS: "linux", Architecture: "amd64"}
	arm := &v1.Platform{OS: "linux", Architecture: "arm64"}
	add := func(img v1.Image, p *v1.Platform) mutate.IndexAddendum {
		return mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}}
	}
	nested := mutate.AppendManifests(empty.Index, add(a, amd))
	tests := []struct {
		name    string
		idx     v1.ImageIndex
		wantErr bool
	}{
		{"one image", mutate.AppendManifests(empty.Index, add(a, nil)), false},
		{"by platform", mutate.AppendManifests(empty.Index, add(b, arm), add(a, amd)), false},
		{"nested index", mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: nested}), false},
		{"two without platforms", mutate.AppendManifests(empty.Index, add(a, nil), add(b, nil)), true},
		{"no amd64", mutate.AppendManifests(empty.Index, add(b, arm), add(a, arm)), true},
		{"empty", empty.Index, true},
	}
	for _, tc := range tests {
		img, err := pick(tc.idx, 0)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if d, _ := img.Digest(); d != ad {
			t.Errorf("%s: picked %s, want %s", tc.name, d, ad)
		}
	}
}

func TestHeaderXattrsBounded(t *testing.T) {
	big := strings.Repeat("x", maxXattrValue+1)
	for _, pax := range []map[string]string{
		{"SCHILY.xattr.security.capability": big},
		{"SCHILY.xattr.user.a": big[:maxXattrValue/2+1], "SCHILY.xattr.user.b": big[:maxXattrValue/2+1]},
	} {
		if _, err := headerXattrs(&tar.Header{PAXRecords: pax}); !errors.Is(err, unpack.ErrLimit) {
			t.Errorf("%d records: %v, want ErrLimit", len(pax), err)
		}
	}
	// Unbounded but dropped names do not count.
	if x, err := headerXattrs(&tar.Header{PAXRecords: map[string]string{"SCHILY.xattr.trusted.a": big, "SCHILY.xattr.user.": "v"}}); err != nil || x != nil {
		t.Errorf("dropped names: %v, %v", x, err)
	}
}
