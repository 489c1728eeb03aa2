package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/update/chunk"
	"cairn.dev/cairn/update/tuf"
)

// fixture is a repository served over 127.0.0.1 with a way to tamper with
// what the server sends.
type fixture struct {
	t                       *testing.T
	repo, keys, builds, dst string
	srv                     *httptest.Server

	mu       sync.Mutex
	truncate string // serve targets whose path contains this cut in half
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, repo: t.TempDir(), keys: filepath.Join(t.TempDir(), "keys"), builds: t.TempDir(), dst: t.TempDir()}
	if err := InitKeys(f.keys); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(f.repo))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		cut := f.truncate
		f.mu.Unlock()
		if cut != "" && strings.Contains(r.URL.Path, cut) {
			data, err := os.ReadFile(filepath.Join(f.repo, filepath.FromSlash(r.URL.Path)))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			w.Write(data[:len(data)/2])
			return
		}
		files.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// build writes a fake build of version: tiny artifacts and their manifest.
func (f *fixture) build(version string) string {
	f.t.Helper()
	dir := filepath.Join(f.builds, version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	m := &manifest.Manifest{Name: "hello", Version: version,
		Verity: manifest.Verity{RootHash: strings.Repeat("ab", 32)},
		Slots:  []manifest.Slot{{Slot: "A", UKI: "hello.A.efi"}, {Slot: "B", UKI: "hello.B.efi"}}}
	for _, a := range []struct {
		name, kind string
		size       int
	}{{"hello.img", "disk", 1000}, {"hello.root.erofs", "root", 200 << 10}, {"hello.A.efi", "uki", 3000}, {"hello.B.efi", "uki", 3001}} {
		data := make([]byte, a.size)
		rand.Read(data)
		copy(data, a.name+" "+version)
		if err := os.WriteFile(filepath.Join(dir, a.name), data, 0o644); err != nil {
			f.t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: a.name, Kind: a.kind, Size: int64(a.size), SHA256: hex.EncodeToString(sum[:])})
	}
	p := filepath.Join(dir, "hello.manifest.json")
	if err := m.Write(p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) publish(version string, opts PublishOptions) *Published {
	f.t.Helper()
	if opts.Channel == "" {
		opts.Channel = "stable"
	}
	res, err := Publish(context.Background(), f.repo, f.keys, f.build(version), opts)
	if err != nil {
		f.t.Fatalf("publish %s: %v", version, err)
	}
	return res
}

func (f *fixture) rootV1() []byte {
	f.t.Helper()
	data, err := os.ReadFile(filepath.Join(f.repo, "metadata", "1.root.json"))
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

func (f *fixture) client(cacheDir string, now func() time.Time) *tuf.Client {
	f.t.Helper()
	c, err := tuf.New(tuf.Config{MetadataDir: cacheDir, TrustedRoot: f.rootV1(), RepoURL: f.srv.URL, Now: now})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) refreshed(cacheDir string) *tuf.Client {
	f.t.Helper()
	c := f.client(cacheDir, nil)
	if err := c.Refresh(context.Background()); err != nil {
		f.t.Fatalf("refresh: %v", err)
	}
	return c
}

func versionNames(vs []tuf.Version) string {
	var s []string
	for _, v := range vs {
		s = append(s, v.Version)
	}
	return strings.Join(s, " ")
}

// artifact returns the bytes of a fake build's artifact.
func (f *fixture) artifact(version, name string) []byte {
	f.t.Helper()
	data, err := os.ReadFile(filepath.Join(f.builds, version, name))
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

func TestPublishAndList(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.publish("1.2.9", PublishOptions{})
	f.publish("1.2.10", PublishOptions{MinVersion: "1.2.0", Waves: []tuf.Wave{{StartAfterHours: 0, Percent: 10}, {StartAfterHours: 24, Percent: 100}}})
	f.publish("1.3.0~rc1", PublishOptions{Channel: "beta"})
	f.publish("1.2.1", PublishOptions{}) // older than the newest: allowed

	c := f.refreshed(t.TempDir())
	vs, err := c.Versions("stable", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got := versionNames(vs); got != "1.2.10 1.2.9 1.2.1" {
		t.Fatalf("stable versions %q", got)
	}
	newest := vs[0]
	if newest.MinVersion != "1.2.0" || len(newest.Waves) != 2 || newest.VerityRootHash != strings.Repeat("ab", 32) ||
		newest.ChunkIndex == nil || newest.UKIs["A"].Name != "hello/1.2.10/uki-A.efi" || newest.Root.Name != "hello/1.2.10/root.erofs" {
		t.Fatalf("newest version %+v", newest)
	}
	if newest.CanUpdateFrom("1.1.0") || !newest.CanUpdateFrom("1.2.9") {
		t.Fatal("min version not applied")
	}
	if beta, err := c.Versions("beta", "hello"); err != nil || versionNames(beta) != "1.3.0~rc1" {
		t.Fatalf("beta versions %q, %v", versionNames(beta), err)
	}
	if other, err := c.Versions("stable", "other"); err != nil || len(other) != 0 {
		t.Fatalf("versions of another OS: %v, %v", other, err)
	}

	var buf bytes.Buffer
	if err := c.Download(ctx, newest.Root.Name, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), f.artifact("1.2.10", "hello.root.erofs")) {
		t.Fatal("downloaded root image differs from the built one")
	}
	dst := filepath.Join(f.dst, "uki.efi")
	if err := c.DownloadFile(ctx, newest.UKIs["B"].Name, dst); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, f.artifact("1.2.10", "hello.B.efi")) {
		t.Fatal("downloaded UKI B differs from the built one")
	}

	// The chunk index is a verified target, and its chunks are in chunks/.
	data, err := c.Fetch(ctx, newest.ChunkIndex.Name, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := chunk.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(f.artifact("1.2.10", "hello.root.erofs"))
	if idx.Size != newest.Root.Length || idx.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("chunk index describes %d bytes %s", idx.Size, idx.SHA256)
	}
	for _, ch := range idx.Chunks {
		if _, err := os.Stat(filepath.Join(f.repo, filepath.FromSlash(chunk.BlobPath(ch.SHA256)))); err != nil {
			t.Fatalf("chunk blob: %v", err)
		}
	}
	if _, err := c.Fetch(ctx, newest.ChunkIndex.Name, 10); err == nil {
		t.Fatal("Fetch ignored its limit")
	}
	if err := c.Download(ctx, "hello/9.9.9/root.erofs", &buf); err == nil {
		t.Fatal("downloaded a target that is not signed")
	}
}

func TestRepublish(t *testing.T) {
	f := newFixture(t)
	f.publish("1.0.0", PublishOptions{NoChunkIndex: true})
	_, err := Publish(context.Background(), f.repo, f.keys, f.build("1.0.0"), PublishOptions{Channel: "stable", NoChunkIndex: true})
	if !errors.Is(err, ErrVersionExists) {
		t.Fatalf("republish: %v, want ErrVersionExists", err)
	}
	res := f.publish("1.0.0", PublishOptions{Channel: "beta", Force: true, NoChunkIndex: true})
	if len(res.Targets) != 3 {
		t.Fatalf("targets %v", res.Targets)
	}
	c := f.refreshed(t.TempDir())
	if vs, err := c.Versions("stable", "hello"); err != nil || len(vs) != 0 {
		t.Fatalf("stable after forced move to beta: %q, %v", versionNames(vs), err)
	}
	vs, err := c.Versions("beta", "hello")
	if err != nil || versionNames(vs) != "1.0.0" || vs[0].ChunkIndex != nil {
		t.Fatalf("beta: %+v, %v", vs, err)
	}
	var buf bytes.Buffer
	if err := c.Download(context.Background(), vs[0].Root.Name, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), f.artifact("1.0.0", "hello.root.erofs")) {
		t.Fatal("forced republish does not serve the new build")
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	f.publish("1.0.0", PublishOptions{NoChunkIndex: true})
	ts, _ := os.ReadFile(filepath.Join(f.repo, "metadata", "timestamp.json"))
	edit := func(version string, fn func(m *manifest.Manifest)) string {
		p := f.build(version)
		m, err := manifest.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		fn(m)
		if err := m.Write(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, tc := range map[string]struct {
		manifest string
		opts     PublishOptions
	}{
		"sha mismatch":  {edit("2.0.0", func(m *manifest.Manifest) { m.Artifacts[1].SHA256 = strings.Repeat("0", 64) }), PublishOptions{}},
		"size mismatch": {edit("2.0.1", func(m *manifest.Manifest) { m.Artifacts[2].Size++ }), PublishOptions{}},
		"bad version":   {edit("2.0.2", func(m *manifest.Manifest) { m.Version = "2+1" }), PublishOptions{}},
		"path escape":   {edit("2.0.3", func(m *manifest.Manifest) { m.Artifacts[1].Name = "../x" }), PublishOptions{}},
		"no slot B":     {edit("2.0.4", func(m *manifest.Manifest) { m.Slots = m.Slots[:1] }), PublishOptions{}},
		"two roots":     {edit("2.0.5", func(m *manifest.Manifest) { m.Artifacts[0].Kind = "root" }), PublishOptions{}},
		"bad channel":   {f.build("2.0.6"), PublishOptions{Channel: "Stable!"}},
		"waves short":   {f.build("2.0.7"), PublishOptions{Waves: []tuf.Wave{{StartAfterHours: 0, Percent: 50}}}},
		"bad min":       {f.build("2.0.8"), PublishOptions{MinVersion: "a b"}},
		"chunker fails": {f.build("2.0.9"), PublishOptions{ChunkIndex: func(context.Context, string, string) ([]byte, error) {
			return nil, errors.New("boom")
		}}},
	} {
		if tc.opts.Channel == "" {
			tc.opts.Channel = "stable"
		}
		if _, err := Publish(context.Background(), f.repo, f.keys, tc.manifest, tc.opts); err == nil {
			t.Errorf("%s: published", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if now, _ := os.ReadFile(filepath.Join(f.repo, "metadata", "timestamp.json")); !bytes.Equal(ts, now) {
		t.Fatal("a refused publish changed the timestamp")
	}
}

func TestKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "k")
	if err := InitKeys(dir); err != nil {
		t.Fatal(err)
	}
	for _, role := range Roles {
		st, err := os.Stat(filepath.Join(dir, role+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s key: %v %v", role, st.Mode(), err)
		}
		if _, err := loadKey(dir, role); err != nil {
			t.Fatal(err)
		}
	}
	if err := InitKeys(dir); err == nil {
		t.Fatal("InitKeys overwrote keys")
	}
	os.Chmod(filepath.Join(dir, "targets.key"), 0o644)
	if _, err := loadKey(dir, "targets"); err == nil {
		t.Fatal("loaded a world-readable key")
	}
	os.Chmod(filepath.Join(dir, "targets.key"), 0o600)
	os.WriteFile(filepath.Join(dir, "snapshot.key"), []byte("junk"), 0o600)
	if _, err := loadKey(dir, "snapshot"); err == nil {
		t.Fatal("loaded junk as a key")
	}
}

// resign re-signs the repository's current state after fn changed it,
// as an attacker holding the online keys could.
func resign(t *testing.T, f *fixture, fn func(r *repository), targets, snapshot bool) {
	t.Helper()
	r, err := load(f.repo)
	if err != nil {
		t.Fatal(err)
	}
	fn(r)
	signers, err := r.signers(f.keys, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.commit(signers, Options{}, targets, snapshot); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// editJSON changes a metadata file's signed part without signing it again.
func editJSON(t *testing.T, p string, fn func(signed map[string]any)) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, p), &m); err != nil {
		t.Fatal(err)
	}
	fn(m["signed"].(map[string]any))
	data, _ := json.Marshal(m)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostileRepository(t *testing.T) {
	md := func(f *fixture, name string) string { return filepath.Join(f.repo, "metadata", name) }
	for _, tc := range []struct {
		name string
		// attack changes the repository after 1.0.0 and 2.0.0 were
		// published and a client refreshed after 1.0.0.
		attack func(t *testing.T, f *fixture)
		now    time.Time // the client's clock (zero: now)
		want   error     // for a refused refresh; nil: refresh passes, downloads fail
		// alsoWant is another acceptable refusal: metadata longer than
		// the length signed for it is cut off before its hash is checked.
		alsoWant error
		seenV2   bool // the client refreshed after 2.0.0 too
	}{
		{name: "edited timestamp (bad signature)", want: &metadata.ErrUnsignedMetadata{}, attack: func(t *testing.T, f *fixture) {
			editJSON(t, md(f, "timestamp.json"), func(s map[string]any) { s["expires"] = "2099-01-01T00:00:00Z" })
		}},
		{name: "edited targets", want: &metadata.ErrLengthOrHashMismatch{}, attack: func(t *testing.T, f *fixture) {
			editJSON(t, md(f, "3.targets.json"), func(s map[string]any) {
				for _, tf := range s["targets"].(map[string]any) {
					tf.(map[string]any)["length"] = 1
				}
			})
		}},
		{name: "targets signed by a stranger", want: &metadata.ErrUnsignedMetadata{}, attack: func(t *testing.T, f *fixture) {
			stranger := filepath.Join(t.TempDir(), "k")
			if err := InitKeys(stranger); err != nil {
				t.Fatal(err)
			}
			k, err := loadKey(stranger, metadata.TARGETS)
			if err != nil {
				t.Fatal(err)
			}
			r, err := load(f.repo)
			if err != nil {
				t.Fatal(err)
			}
			signers, _ := r.signers(f.keys, metadata.SNAPSHOT, metadata.TIMESTAMP)
			signers[metadata.TARGETS] = []*roleKey{k}
			if err := r.commit(signers, Options{}, true, true); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "expired timestamp (freeze)", want: &metadata.ErrExpiredMetadata{}, now: time.Now().Add(25 * time.Hour)},
		{name: "expired snapshot", want: &metadata.ErrExpiredMetadata{}, now: time.Now().Add(8 * 24 * time.Hour), attack: func(t *testing.T, f *fixture) {
			// A timestamp valid for 9 days over the snapshot (valid 7).
			r, err := load(f.repo)
			if err != nil {
				t.Fatal(err)
			}
			r.timestamp.Signed.Version++
			r.timestamp.Signed.Expires = time.Now().Add(9 * 24 * time.Hour)
			k, _ := loadKey(f.keys, metadata.TIMESTAMP)
			data, err := sign(r.timestamp, []*roleKey{k})
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(md(f, "timestamp.json"), data, 0o644)
		}},
		{name: "old timestamp served again (rollback)", want: &metadata.ErrBadVersionNumber{}, seenV2: true, attack: func(t *testing.T, f *fixture) {
			os.WriteFile(md(f, "timestamp.json"), readFile(t, filepath.Join(f.dst, "timestamp.v1")), 0o644)
		}},
		{name: "new timestamp over an old snapshot (rollback)", want: &metadata.ErrBadVersionNumber{}, attack: func(t *testing.T, f *fixture) {
			resign(t, f, func(r *repository) {
				r.timestamp.Signed.Meta["snapshot.json"] = metaFile(1, readFile(t, md(f, "1.snapshot.json")))
			}, false, false)
		}},
		{name: "new snapshot over old targets (rollback)", want: &metadata.ErrBadVersionNumber{}, attack: func(t *testing.T, f *fixture) {
			resign(t, f, func(r *repository) {
				r.snapshot.Signed.Meta["targets.json"] = metaFile(1, readFile(t, md(f, "1.targets.json")))
			}, false, true)
		}},
		{name: "snapshot of another state (mix and match)", want: &metadata.ErrLengthOrHashMismatch{}, alsoWant: &metadata.ErrDownloadLengthMismatch{}, attack: func(t *testing.T, f *fixture) {
			os.WriteFile(md(f, "3.snapshot.json"), readFile(t, md(f, "2.snapshot.json")), 0o644)
		}},
		{name: "tampered target", attack: func(t *testing.T, f *fixture) {
			matches, _ := filepath.Glob(filepath.Join(f.repo, "targets", "hello", "2.0.0", "*.root.erofs"))
			data := readFile(t, matches[0])
			data[100] ^= 1
			os.WriteFile(matches[0], data, 0o644)
		}},
		{name: "target with bytes appended", attack: func(t *testing.T, f *fixture) {
			matches, _ := filepath.Glob(filepath.Join(f.repo, "targets", "hello", "2.0.0", "*.root.erofs"))
			os.WriteFile(matches[0], append(readFile(t, matches[0]), 0), 0o644)
		}},
		{name: "truncated download", attack: func(t *testing.T, f *fixture) {
			f.mu.Lock()
			f.truncate = "root.erofs"
			f.mu.Unlock()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.publish("1.0.0", PublishOptions{NoChunkIndex: true})
			cache := t.TempDir()
			f.refreshed(cache)
			os.WriteFile(filepath.Join(f.dst, "timestamp.v1"), readFile(t, md(f, "timestamp.json")), 0o644)
			f.publish("2.0.0", PublishOptions{NoChunkIndex: true})
			if tc.seenV2 {
				f.refreshed(cache)
			}
			if tc.attack != nil {
				tc.attack(t, f)
			}
			var now func() time.Time
			if !tc.now.IsZero() {
				now = func() time.Time { return tc.now }
			}
			c := f.client(cache, now)
			err := c.Refresh(ctx)
			if tc.want != nil {
				if !errors.Is(err, tc.want) && (tc.alsoWant == nil || !errors.Is(err, tc.alsoWant)) {
					t.Fatalf("refresh: %v, want %T", err, tc.want)
				}
				t.Logf("refused: %v", err)
				if _, err := c.Versions("stable", "hello"); !errors.Is(err, tuf.ErrNotRefreshed) {
					t.Fatalf("versions after a refused refresh: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			vs, err := c.Versions("stable", "hello")
			if err != nil || versionNames(vs) != "2.0.0 1.0.0" {
				t.Fatalf("versions %q, %v", versionNames(vs), err)
			}
			var buf bytes.Buffer
			if err := c.Download(ctx, vs[0].Root.Name, &buf); !errors.Is(err, tuf.ErrVerify) {
				t.Fatalf("download: %v, want ErrVerify", err)
			} else {
				t.Logf("refused: %v", err)
			}
			dst := filepath.Join(f.dst, "out", "root")
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := c.DownloadFile(ctx, vs[0].Root.Name, dst); !errors.Is(err, tuf.ErrVerify) {
				t.Fatalf("download file: %v, want ErrVerify", err)
			}
			if left, _ := os.ReadDir(filepath.Dir(dst)); len(left) != 0 {
				t.Fatalf("a refused download left %v", left)
			}
			// The other, intact targets still download.
			if err := c.Download(ctx, vs[0].UKIs["A"].Name, &buf); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRotateRoot(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.publish("1.0.0", PublishOptions{NoChunkIndex: true})
	cache := t.TempDir()
	f.refreshed(cache)

	newKeys := filepath.Join(t.TempDir(), "keys2")
	if err := InitKeys(newKeys); err != nil {
		t.Fatal(err)
	}
	if err := RotateRoot(ctx, f.repo, f.keys, newKeys, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(ctx, f.repo, f.keys, f.build("2.0.0"), PublishOptions{Channel: "stable", NoChunkIndex: true}); err == nil {
		t.Fatal("published with the rotated-out keys")
	}
	oldKeys := f.keys
	f.keys = newKeys
	f.publish("2.0.0", PublishOptions{NoChunkIndex: true})

	// A client with cached state and one starting from the shipped root
	// both follow the chain.
	for name, dir := range map[string]string{"cached": cache, "fresh": t.TempDir()} {
		c := f.refreshed(dir)
		vs, err := c.Versions("stable", "hello")
		if err != nil || versionNames(vs) != "2.0.0 1.0.0" {
			t.Fatalf("%s: versions %q, %v", name, versionNames(vs), err)
		}
		if _, err := os.Stat(filepath.Join(dir, "2.root.json")); err != nil {
			t.Fatalf("%s: root version 2 not cached: %v", name, err)
		}
	}

	// A next root signed only by a stranger is refused.
	stranger := filepath.Join(t.TempDir(), "k3")
	if err := InitKeys(stranger); err != nil {
		t.Fatal(err)
	}
	forged := metadata.Root(time.Now().Add(time.Hour))
	forged.Signed.Version = 3
	for _, role := range Roles {
		k, _ := loadKey(stranger, role)
		forged.Signed.AddKey(k.key, role)
	}
	k3, _ := loadKey(stranger, metadata.ROOT)
	data, err := sign(forged, []*roleKey{k3})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(f.repo, "metadata", "3.root.json"), data, 0o644)
	if err := f.client(t.TempDir(), nil).Refresh(ctx); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("forged root: %v", err)
	}
	os.Remove(filepath.Join(f.repo, "metadata", "3.root.json"))

	// After a restart, the client goes on from its cached root version 2,
	// not from the shipped version 1: with 2.root.json gone from the server,
	// a timestamp signed with the rotated-out key is still refused.
	r, err := load(f.repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(f.repo, "metadata", "2.root.json")); err != nil {
		t.Fatal(err)
	}
	// The attacker holds the rotated-out online keys and signs a newer
	// state with them.
	signers := map[string][]*roleKey{}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		k, err := loadKey(oldKeys, role)
		if err != nil {
			t.Fatal(err)
		}
		signers[role] = []*roleKey{k}
	}
	r.targets.Signed.Version += 10
	r.snapshot.Signed.Version += 10
	r.timestamp.Signed.Version += 10
	if err := r.commit(signers, Options{}, true, true); err != nil {
		t.Fatal(err)
	}
	if err := f.client(cache, nil).Refresh(ctx); !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
		t.Fatalf("state signed by the old keys, root version 2 withheld: %v", err)
	}
}

func TestResign(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.publish("1.0.0", PublishOptions{NoChunkIndex: true})
	later := time.Now().Add(20 * 24 * time.Hour)
	if err := f.client(t.TempDir(), func() time.Time { return later }).Refresh(ctx); !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
		t.Fatalf("20 days later without re-signing: %v", err)
	}
	if err := Resign(ctx, f.repo, f.keys, Options{Now: func() time.Time { return later }}); err != nil {
		t.Fatal(err)
	}
	c := f.client(t.TempDir(), func() time.Time { return later })
	if err := c.Refresh(ctx); err != nil {
		t.Fatalf("20 days later after re-signing: %v", err)
	}
	if vs, err := c.Versions("stable", "hello"); err != nil || versionNames(vs) != "1.0.0" {
		t.Fatalf("versions %q, %v", versionNames(vs), err)
	}
}

// TestCorruptCache: a cached timestamp.json, snapshot.json or targets.json
// left empty or truncated (a power cut before go-tuf's rename reached the
// disk) must not block every later refresh.
func TestCorruptCache(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.publish("1.0.0", PublishOptions{})
	for _, name := range []string{"timestamp.json", "snapshot.json", "targets.json"} {
		for _, content := range []string{"", `{"signed": {"_type": "times`} {
			cache := t.TempDir()
			f.refreshed(cache)
			if err := os.WriteFile(filepath.Join(cache, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			c := f.client(cache, nil)
			if err := c.Refresh(ctx); err != nil {
				t.Fatalf("%s = %q: refresh: %v", name, content, err)
			}
			if vs, err := c.Versions("stable", "hello"); err != nil || versionNames(vs) != "1.0.0" {
				t.Fatalf("%s = %q: versions %v %v", name, content, versionNames(vs), err)
			}
		}
	}
}
