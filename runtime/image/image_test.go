package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
	"cairn.dev/cairn/runtime/image/unpack"
)

type tent struct {
	name, body, link string
	typ              byte
}

func tarBytes(t testing.TB, ents ...tent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// gzLayer returns a gzip-compressed layer of the given tar.
func gzLayer(t testing.TB, tarb []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarb)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mkImage(t testing.TB, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

// whiteoutImage has a base layer and a top layer that deletes /a and /d/x
// and makes /o opaque.
func whiteoutImage(t testing.TB) v1.Image {
	base := tarBytes(t,
		tent{name: "a", body: "a"},
		tent{name: "d/", typ: tar.TypeDir},
		tent{name: "d/x", body: "x"},
		tent{name: "d/y", body: "y"},
		tent{name: "o/", typ: tar.TypeDir},
		tent{name: "o/old", body: "old"},
		tent{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox"},
	)
	top := tarBytes(t,
		tent{name: ".wh.a"},
		tent{name: "d/.wh.x"},
		tent{name: "o/", typ: tar.TypeDir},
		tent{name: "o/.wh..wh..opq"},
		tent{name: "o/new", body: "new"},
	)
	return mkImage(t, "amd64", gzLayer(t, base), static.NewLayer(top, types.OCIUncompressedLayer))
}

func newStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), append([]Option{WithoutSync()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digestOf(t testing.TB, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// tokenRegistry serves pkg/registry on loopback behind a Docker-style token
// service: /v2/ answers 401 with a Bearer challenge; /token hands out a token
// for the right basic credentials.
func tokenRegistry(t testing.TB, user, pass string) (host string) {
	t.Helper()
	const token = "s3cr3t-token"
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != pass {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"token": token})
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, srv.URL))
			http.Error(w, "auth required", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func writeDockerConfig(t testing.TB, host, user, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	cfg := fmt.Sprintf(`{"auths":{"http://%s/v2/":{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func push(t testing.TB, ref string, kc authn.Keychain, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithAuthFromKeychain(kc)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func readTree(t testing.TB, dirs []string, rel string) (string, bool) {
	t.Helper()
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, rel))
		if err == nil {
			return string(b), true
		}
	}
	return "", false
}

func TestPullWithTokenAuth(t *testing.T) {
	testhost.Root(t) // whiteouts need mknod
	host := tokenRegistry(t, "alice", "pw")
	kc, err := LoadDockerConfig(writeDockerConfig(t, host, "alice", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	img := whiteoutImage(t)
	push(t, host+"/team/app:v1", kc, img)
	ctx := context.Background()

	s := newStore(t)
	// Without credentials the registry refuses.
	if _, err := s.Pull(ctx, host+"/team/app:v1", WithKeychain(&DockerConfig{})); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	bad, _ := LoadDockerConfig(writeDockerConfig(t, host, "alice", "wrong"))
	if _, err := s.Pull(ctx, host+"/team/app:v1", WithKeychain(bad)); err == nil {
		t.Fatal("pull with wrong credentials succeeded")
	}
	got, err := s.Pull(ctx, host+"/team/app:v1", WithKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, img) || got.Name != host+"/team/app:v1" {
		t.Fatalf("pulled %+v, want digest %s", got, digestOf(t, img))
	}
	// By digest, and a second pull reuses everything.
	byDigest := host + "/team/app@" + got.Digest.String()
	if _, err := s.Pull(ctx, byDigest, WithKeychain(kc)); err != nil {
		t.Fatal(err)
	}
	list, _ := s.List()
	if len(list) != 2 {
		t.Errorf("List = %v", list)
	}
	dirs, err := s.Lowerdirs(ctx, got.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("lowerdirs = %v", dirs)
	}
	if b, _ := os.ReadFile(filepath.Join(dirs[0], "o/new")); string(b) != "new" {
		t.Errorf("top layer o/new = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dirs[1], "d/y")); string(b) != "y" {
		t.Errorf("base layer d/y = %q", b)
	}
	cfg, err := s.Config(ctx, got.Digest)
	if err != nil || cfg.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("config: %v %v", cfg, err)
	}
}

func TestPullMultiArchIndex(t *testing.T) {
	host := tokenRegistry(t, "u", "p")
	kc, _ := LoadDockerConfig(writeDockerConfig(t, host, "u", "p"))
	amd := mkImage(t, "amd64", static.NewLayer(tarBytes(t, tent{name: "arch", body: "amd64"}), types.OCIUncompressedLayer))
	arm := mkImage(t, "arm64", static.NewLayer(tarBytes(t, tent{name: "arch", body: "arm64"}), types.OCIUncompressedLayer))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	r, _ := name.ParseReference(host + "/multi:latest")
	if err := remote.WriteIndex(r, idx, remote.WithAuthFromKeychain(kc)); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	got, err := s.Pull(context.Background(), host+"/multi:latest", WithKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, amd) {
		t.Fatalf("picked %s, want amd64 %s", got.Digest, digestOf(t, amd))
	}
	dirs, _ := s.Lowerdirs(context.Background(), got.Digest)
	if v, _ := readTree(t, dirs, "arch"); v != "amd64" {
		t.Errorf("arch file = %q", v)
	}
	// A single-platform arm64 image is refused.
	push(t, host+"/armonly:latest", kc, arm)
	if _, err := s.Pull(context.Background(), host+"/armonly:latest", WithKeychain(kc)); err == nil {
		t.Error("pulled an arm64-only image for amd64")
	}
}

func TestOCILayoutRoundTrip(t *testing.T) {
	ctx := context.Background()
	img := mkImage(t, "amd64",
		gzLayer(t, tarBytes(t, tent{name: "etc/os-release", body: "cairn"})),
		static.NewLayer(tarBytes(t, tent{name: "bin/app", body: "app"}), types.OCIUncompressedLayer))
	arm := mkImage(t, "arm64", static.NewLayer(tarBytes(t, tent{name: "x", body: "arm"}), types.OCIUncompressedLayer))
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: "example.com/app:1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(arm, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"})); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	got, err := s.LoadOCILayout(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Digest != digestOf(t, img) || got[0].Name != "example.com/app:1" {
		t.Fatalf("loaded %+v", got)
	}
	// Export from the store and load into a fresh store: same digest.
	out, err := s.Image(ctx, got[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	p2, _ := layout.Write(dir2, empty.Index)
	if err := p2.AppendImage(out); err != nil {
		t.Fatal(err)
	}
	s2 := newStore(t)
	got2, err := s2.LoadOCILayout(ctx, dir2)
	if err != nil {
		t.Fatal(err)
	}
	if got2[0].Digest != got[0].Digest || got2[0].Name != "" {
		t.Fatalf("round trip %+v != %+v", got2[0], got[0])
	}
	dirs, _ := s2.Lowerdirs(ctx, got2[0].Digest)
	if v, _ := readTree(t, dirs, "bin/app"); v != "app" {
		t.Errorf("bin/app = %q", v)
	}

	// A layout holding a multi-arch index.
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	dir3 := t.TempDir()
	p3, _ := layout.Write(dir3, empty.Index)
	if err := p3.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationContainerdName: "docker.io/library/multi:2"})); err != nil {
		t.Fatal(err)
	}
	got3, err := newStore(t).LoadOCILayout(ctx, dir3)
	if err != nil {
		t.Fatal(err)
	}
	if got3[0].Digest != digestOf(t, img) || got3[0].Name != "index.docker.io/library/multi:2" {
		t.Fatalf("index layout: %+v", got3)
	}
}

func TestDockerArchiveRoundTrip(t *testing.T) {
	ctx := context.Background()
	img := mkImage(t, "amd64",
		gzLayer(t, tarBytes(t, tent{name: "etc/hostname", body: "cairn"})),
		gzLayer(t, tarBytes(t, tent{name: "bin/app", body: "app"})))
	// ggcr's tarball writer: docker save format with gzip layers.
	p := filepath.Join(t.TempDir(), "save.tar")
	tag, _ := name.NewTag("example.com/app:saved")
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	got, err := s.LoadDockerArchive(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "example.com/app:saved" {
		t.Fatalf("loaded %+v", got)
	}
	cfg, err := s.Config(ctx, got[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, _ := img.ConfigName()
	out, _ := s.Image(ctx, got[0].Digest)
	if gotCfg, _ := out.ConfigName(); gotCfg != wantCfg || len(cfg.RootFS.DiffIDs) != 2 {
		t.Fatalf("image ID %s, want %s", gotCfg, wantCfg)
	}
	dirs, _ := s.Lowerdirs(ctx, got[0].Digest)
	if v, _ := readTree(t, dirs, "etc/hostname"); v != "cairn" {
		t.Errorf("etc/hostname = %q", v)
	}

	// Export from the store as a docker archive and load it again.
	p2 := filepath.Join(t.TempDir(), "again.tar")
	if err := tarball.WriteToFile(p2, tag, out); err != nil {
		t.Fatal(err)
	}
	got2, err := newStore(t).LoadDockerArchive(ctx, p2)
	if err != nil || got2[0].Digest != got[0].Digest {
		t.Fatalf("round trip: %+v %v, want %s", got2, err, got[0].Digest)
	}

	// A docker 25+ style archive: uncompressed layers under blobs/sha256,
	// legacy directories holding symlinks to them.
	layer := tarBytes(t, tent{name: "hello", body: "world"})
	lh := sha256Hex(layer)
	cfgJSON := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}`, lh)
	ch := sha256Hex([]byte(cfgJSON))
	man := fmt.Sprintf(`[{"Config":"blobs/sha256/%s","RepoTags":["local/hello:1"],"Layers":["legacy/layer.tar"]}]`, ch)
	arch := tarBytes(t,
		tent{name: "blobs/sha256/" + lh, body: string(layer)},
		tent{name: "blobs/sha256/" + ch, body: cfgJSON},
		tent{name: "legacy/layer.tar", typ: tar.TypeSymlink, link: "../blobs/sha256/" + lh},
		tent{name: "manifest.json", body: man})
	p3 := filepath.Join(t.TempDir(), "new.tar")
	if err := os.WriteFile(p3, arch, 0o644); err != nil {
		t.Fatal(err)
	}
	s3 := newStore(t)
	got3, err := s3.LoadDockerArchive(ctx, p3)
	if err != nil {
		t.Fatal(err)
	}
	if got3[0].Name != "index.docker.io/local/hello:1" {
		t.Errorf("name %q", got3[0].Name)
	}
	dirs3, _ := s3.Lowerdirs(ctx, got3[0].Digest)
	if v, _ := readTree(t, dirs3, "hello"); v != "world" {
		t.Errorf("hello = %q", v)
	}
	// The uncompressed layer is stored under its diffID.
	if !exists(filepath.Join(s3.Root(), "blobs/sha256", lh)) {
		t.Error("layer blob not stored under its diffID")
	}

	// A lying archive: config says another diff_id.
	lieCfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"config":{}}`, strings.Repeat("ab", 32))
	lieMan := `[{"Config":"c.json","RepoTags":["local/lie:1"],"Layers":["l.tar"]}]`
	p4 := filepath.Join(t.TempDir(), "lie.tar")
	_ = os.WriteFile(p4, tarBytes(t, tent{name: "l.tar", body: string(layer)}, tent{name: "c.json", body: lieCfg}, tent{name: "manifest.json", body: lieMan}), 0o644)
	s4 := newStore(t)
	if _, err := s4.LoadDockerArchive(ctx, p4); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("lying archive: err = %v", err)
	}
	assertNoLeftovers(t, s4)
}

func assertNoLeftovers(t testing.TB, s *Store) {
	t.Helper()
	for _, d := range []string{"tmp", "snapshots", "blobs/sha256"} {
		ents, _ := os.ReadDir(filepath.Join(s.Root(), d))
		if len(ents) != 0 {
			t.Errorf("%s not empty after failure: %d entries", d, len(ents))
		}
	}
}

// fakeCore is a CompressedImageCore whose parts can lie.
type fakeCore struct {
	rawC, rawM []byte
	blobs      map[v1.Hash][]byte
	descs      map[v1.Hash]v1.Descriptor
}

func (f *fakeCore) RawConfigFile() ([]byte, error)      { return f.rawC, nil }
func (f *fakeCore) RawManifest() ([]byte, error)        { return f.rawM, nil }
func (f *fakeCore) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (f *fakeCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	return &fakeLayer{b: f.blobs[h], d: f.descs[h]}, nil
}

type fakeLayer struct {
	b []byte
	d v1.Descriptor
}

func (l *fakeLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l *fakeLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l *fakeLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }
func (l *fakeLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.b)), nil
}

// lyingImage declares layer decl (digest, size, diffID) but serves served.
func lyingImage(t testing.TB, decl []byte, diffID string, served []byte) v1.Image {
	t.Helper()
	h := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(decl)}
	cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}`, diffID)
	desc := v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: int64(len(decl)), Digest: h}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex([]byte(cfg))}},
		Layers: []v1.Descriptor{desc}}
	rawM, _ := json.Marshal(m)
	img, err := partial.CompressedToImage(&fakeCore{rawC: []byte(cfg), rawM: rawM,
		blobs: map[v1.Hash][]byte{h: served}, descs: map[v1.Hash]v1.Descriptor{h: desc}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestAddVerifies(t *testing.T) {
	testhost.Root(t)
	good := tarBytes(t, tent{name: "f", body: "good"})
	evil := tarBytes(t, tent{name: "f", body: "evil"})
	hostile := tarBytes(t, tent{name: "../../escape", body: "x"})
	for _, tc := range []struct {
		name string
		img  v1.Image
		want error
	}{
		{"blob-digest", lyingImage(t, good, sha256Hex(good), evil), nil},
		{"blob-truncated", lyingImage(t, good, sha256Hex(good), good[:512]), nil},
		{"blob-longer", lyingImage(t, good, sha256Hex(good), append(append([]byte{}, good...), 0)), nil},
		{"diff-id", lyingImage(t, good, strings.Repeat("cd", 32), good), nil},
		{"hostile-layer", lyingImage(t, hostile, sha256Hex(hostile), hostile), unpack.ErrHostile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			_, err := s.Add(context.Background(), tc.img)
			if err == nil {
				t.Fatal("Add accepted a lying image")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			assertNoLeftovers(t, s)
		})
	}
	// Sanity: the honest version is accepted.
	if _, err := newStore(t).Add(context.Background(), lyingImage(t, good, sha256Hex(good), good)); err != nil {
		t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	shared := static.NewLayer(tarBytes(t, tent{name: "base", body: "b"}), types.OCIUncompressedLayer)
	a := mkImage(t, "amd64", shared, static.NewLayer(tarBytes(t, tent{name: "a", body: "a"}), types.OCIUncompressedLayer))
	b := mkImage(t, "amd64", shared, static.NewLayer(tarBytes(t, tent{name: "b", body: "b"}), types.OCIUncompressedLayer))
	c := mkImage(t, "amd64", static.NewLayer(tarBytes(t, tent{name: "c", body: "c"}), types.OCIUncompressedLayer))
	for n, img := range map[string]v1.Image{"x/a": a, "x/b": b, "x/c": c} {
		added, err := s.Add(ctx, img)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Tag(ctx, n, added.Digest); err != nil {
			t.Fatal(err)
		}
	}
	count := func(d string) int {
		ents, _ := os.ReadDir(filepath.Join(s.Root(), d))
		return len(ents)
	}
	// 4 distinct layers, 3 configs, 3 manifests; 4 snapshots.
	if count("blobs/sha256") != 10 || count("snapshots") != 4 {
		t.Fatalf("blobs %d snapshots %d", count("blobs/sha256"), count("snapshots"))
	}
	_ = os.WriteFile(filepath.Join(s.Root(), "tmp", "blob-stale"), []byte("x"), 0o600)
	if st, err := s.GC(ctx); err != nil || st.Blobs != 0 || st.Snapshots != 0 {
		t.Fatalf("GC with everything named: %+v %v", st, err)
	}
	if count("tmp") != 0 {
		t.Error("stale tmp not removed")
	}
	if err := s.Untag(ctx, "x/a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Untag(ctx, "x/c"); err != nil {
		t.Fatal(err)
	}
	// c is still used by a container.
	st, err := s.GC(ctx, digestOf(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 3 || st.Snapshots != 1 {
		t.Fatalf("GC removed %+v, want 3 blobs (a's manifest, config, top layer) and 1 snapshot", st)
	}
	if _, err := s.Lowerdirs(ctx, digestOf(t, b)); err != nil {
		t.Fatalf("b broken after GC: %v", err)
	}
	if _, err := s.Lowerdirs(ctx, digestOf(t, c)); err != nil {
		t.Fatalf("in-use c broken after GC: %v", err)
	}
	if _, err := s.Lowerdirs(ctx, digestOf(t, a)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a still there: %v", err)
	}
	st, _ = s.GC(ctx)
	if st.Blobs != 3 || st.Snapshots != 1 {
		t.Fatalf("second GC removed %+v, want c's 3 blobs and 1 snapshot", st)
	}
	if err := s.Untag(ctx, "x/b"); err != nil {
		t.Fatal(err)
	}
	_, _ = s.GC(ctx)
	if count("blobs/sha256") != 0 || count("snapshots") != 0 {
		t.Fatalf("empty store keeps blobs %d snapshots %d", count("blobs/sha256"), count("snapshots"))
	}
}

// TestOverlayMount mounts the snapshots of an image with real overlayfs and
// checks that whiteouts and opaque directories take effect.
func TestOverlayMount(t *testing.T) {
	testhost.Root(t)
	ctx := context.Background()
	s := newStore(t)
	added, err := s.Add(ctx, whiteoutImage(t))
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := s.Lowerdirs(ctx, added.Digest)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	upper, wd, merged := filepath.Join(work, "upper"), filepath.Join(work, "work"), filepath.Join(work, "merged")
	for _, d := range []string{upper, wd, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(dirs, ":"), upper, wd)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	for _, tc := range []struct {
		path string
		want string // "" = must not exist
	}{
		{"a", ""}, {"d/x", ""}, {"d/y", "y"}, {"o/old", ""}, {"o/new", "new"},
	} {
		b, err := os.ReadFile(filepath.Join(merged, tc.path))
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s visible through overlay (whiteout ignored)", tc.path)
		case tc.want != "" && string(b) != tc.want:
			t.Errorf("%s = %q, %v; want %q", tc.path, b, err, tc.want)
		}
	}
	if l, err := os.Readlink(filepath.Join(merged, "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q %v", l, err)
	}
	// Writes go to the container's upper dir, never into shared snapshots.
	if err := os.WriteFile(filepath.Join(merged, "d/y"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if v, _ := os.ReadFile(filepath.Join(dirs[1], "d/y")); string(v) != "y" {
		t.Errorf("snapshot modified through overlay: %q", v)
	}
}

func TestUserNSSnapshots(t *testing.T) {
	testhost.Root(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "su", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 1})
	_, _ = tw.Write([]byte("x"))
	_ = tw.Close()
	img := mkImage(t, "amd64", static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
	root := t.TempDir()
	for _, tc := range []struct {
		opts    []Option
		setuid  bool
		keySufx string
	}{{nil, true, ""}, {[]Option{WithUserNS()}, false, "-userns"}} {
		s, err := Open(root, append(tc.opts, WithoutSync())...)
		if err != nil {
			t.Fatal(err)
		}
		added, err := s.Add(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		dirs, err := s.Lowerdirs(context.Background(), added.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(filepath.Dir(dirs[0]), tc.keySufx) {
			t.Errorf("snapshot %s lacks suffix %q", dirs[0], tc.keySufx)
		}
		fi, _ := os.Stat(filepath.Join(dirs[0], "su"))
		if (fi.Mode()&os.ModeSetuid != 0) != tc.setuid {
			t.Errorf("userns=%v: mode %v", tc.opts != nil, fi.Mode())
		}
	}
}

func TestParseDockerConfig(t *testing.T) {
	enc := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name, json, registry, user, pass string
		err                              bool
	}{
		{"hub-legacy-key", `{"auths":{"https://index.docker.io/v1/":{"auth":"` + enc([]byte("u:p")) + `"}}}`, "index.docker.io", "u", "p", false},
		{"docker.io", `{"auths":{"docker.io":{"username":"u2","password":"p2"}}}`, "index.docker.io", "u2", "p2", false},
		{"host-port", `{"auths":{"reg.example:5000":{"auth":"` + enc([]byte("a:b:c")) + `"}}}`, "reg.example:5000", "a", "b:c", false},
		{"other-host-anon", `{"auths":{"reg.example":{"auth":"` + enc([]byte("a:b")) + `"}}}`, "other.example", "", "", false},
		{"bad-base64", `{"auths":{"x":{"auth":"!!"}}}`, "", "", "", true},
		{"no-colon", `{"auths":{"x":{"auth":"` + enc([]byte("nocolon")) + `"}}}`, "", "", "", true},
		{"not-json", `{`, "", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseDockerConfig([]byte(tc.json))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			reg, _ := name.NewRegistry(tc.registry)
			a, err := c.Resolve(reg)
			if err != nil {
				t.Fatal(err)
			}
			ac, _ := a.Authorization()
			if ac.Username != tc.user || ac.Password != tc.pass {
				t.Errorf("got %q/%q", ac.Username, ac.Password)
			}
		})
	}
}

func FuzzParseDockerConfig(f *testing.F) {
	f.Add([]byte(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}`))
	f.Add([]byte(`{"auths":{"h:1/v2/":{"username":"u","identitytoken":"t"}},"credsStore":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseDockerConfig(b)
		if err != nil {
			return
		}
		reg, _ := name.NewRegistry("index.docker.io")
		if _, err := c.Resolve(reg); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseManifestConfig(f *testing.F) {
	img := mkImage(f, "amd64", static.NewLayer(tarBytes(f, tent{name: "a", body: "b"}), types.OCIUncompressedLayer))
	m, _ := img.RawManifest()
	c, _ := img.RawConfigFile()
	f.Add(m, c)
	f.Add([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:../../../etc"}}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, mb, cb []byte) {
		m, err := parseManifest(mb)
		if err != nil {
			return
		}
		if checkHash(m.Config.Digest) != nil {
			t.Fatal("accepted a bad config digest")
		}
		for _, l := range m.Layers {
			if checkHash(l.Digest) != nil || strings.ContainsAny(l.Digest.Hex, "/.") {
				t.Fatal("accepted a bad layer digest")
			}
		}
		cfg, err := parseConfig(m, cb)
		if err != nil {
			return
		}
		if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
			t.Fatal("diff_ids and layers disagree")
		}
	})
}

func FuzzDockerArchiveManifest(f *testing.F) {
	f.Add([]byte(`[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l/layer.tar"]}]`))
	f.Add([]byte(`[{"Config":"","Layers":null}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ents, err := parseDockerArchiveManifest(b)
		if err != nil {
			return
		}
		for _, e := range ents {
			if e.Config == "" || len(e.Layers) > maxLayers {
				t.Fatal("invalid entry accepted")
			}
		}
	})
}

// FuzzLoadDockerArchive loads arbitrary archive bytes into a store: it must
// not panic, must not write outside the store, and must leave nothing
// half-committed on failure.
func FuzzLoadDockerArchive(f *testing.F) {
	layer := tarBytes(f, tent{name: "hello", body: "world"})
	lh := sha256Hex(layer)
	cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}`, lh)
	f.Add(tarBytes(f, tent{name: "l.tar", body: string(layer)}, tent{name: "c.json", body: cfg},
		tent{name: "manifest.json", body: `[{"Config":"c.json","RepoTags":["t:1"],"Layers":["l.tar"]}]`}))
	f.Add(tarBytes(f, tent{name: "manifest.json", body: `[{"Config":"../../etc/passwd","Layers":["/etc/shadow"]}]`}))
	f.Fuzz(func(t *testing.T, b []byte) {
		tmp, err := os.MkdirTemp("", "fuzzarchive-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(tmp)
		p := filepath.Join(tmp, "a.tar")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(filepath.Join(tmp, "store"), WithoutSync(), WithLimits(Limits{MaxLayerBytes: 1 << 20, MaxLayerEntries: 1000, MaxManifestBytes: 1 << 16}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadDockerArchive(context.Background(), p); err != nil {
			if ents, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(ents) != 0 {
				t.Fatal("tmp leftovers after failed load")
			}
		}
	})
}
