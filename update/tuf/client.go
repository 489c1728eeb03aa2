// Package tuf is Cairn's update client for a TUF repository (go-tuf/v2's
// metadata/updater): it keeps verified metadata in a local directory,
// refuses rollback, freeze and mix-and-match attacks and expired metadata,
// lists the versions of a channel from the targets' custom metadata, and
// downloads targets verified against their signed length and hashes.
//
// It is usable in the guest: it imports no host-only package.
package tuf

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"cairn.dev/cairn/internal/atomicfile"
)

// ErrNotRefreshed is returned by Versions and Download before a successful Refresh.
var ErrNotRefreshed = errors.New("tuf: no successful refresh yet")

// ErrVerify marks a download whose bytes do not match the signed metadata.
var ErrVerify = errors.New("target does not match its signed length and hashes")

// Config configures a Client.
type Config struct {
	// MetadataDir caches verified metadata between runs (on STATE in the
	// guest). It holds root.json, timestamp.json, snapshot.json,
	// targets.json as go-tuf keeps them, and <n>.root.json for every root
	// version followed, so that a restart goes on from the newest root.
	MetadataDir string
	// TrustedRoot is the root metadata shipped in the image: the anchor
	// of trust. A root in MetadataDir counts only if it chains from it.
	TrustedRoot []byte
	// RepoURL is the repository's base URL; metadata is under
	// RepoURL/metadata/, targets under RepoURL/targets/.
	RepoURL string
	// HTTPClient is used for every request (default http.DefaultClient).
	HTTPClient *http.Client
	// Now is the clock that decides expiry (default time.Now).
	Now func() time.Time
}

// Client reads a Cairn TUF repository. It is safe for concurrent use.
type Client struct {
	cfg Config

	mu  sync.Mutex
	upd *updater.Updater // the last successful refresh
}

// New checks cfg and the trusted root. It does not touch the network.
func New(cfg Config) (*Client, error) {
	if cfg.MetadataDir == "" {
		return nil, errors.New("tuf: MetadataDir is empty")
	}
	if len(cfg.TrustedRoot) == 0 {
		return nil, errors.New("tuf: TrustedRoot is empty")
	}
	u, err := url.Parse(cfg.RepoURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tuf: repository URL %q is not an http(s) URL", cfg.RepoURL)
	}
	cfg.RepoURL = strings.TrimRight(cfg.RepoURL, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if _, err := trustedmetadata.New(cfg.TrustedRoot); err != nil {
		return nil, fmt.Errorf("tuf: trusted root: %w", err)
	}
	if err := os.MkdirAll(cfg.MetadataDir, 0o700); err != nil {
		return nil, fmt.Errorf("tuf: metadata directory: %w", err)
	}
	return &Client{cfg: cfg}, nil
}

var rootFileRe = regexp.MustCompile(`^([0-9]{1,9})\.root\.json$`)

// chainedRoot returns the newest root that chains from the trusted root
// through the <n>.root.json files of the metadata directory.
func (c *Client) chainedRoot() ([]byte, error) {
	trusted, err := trustedmetadata.New(c.cfg.TrustedRoot)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	best := c.cfg.TrustedRoot
	for v := trusted.Root.Signed.Version + 1; ; v++ {
		data, err := os.ReadFile(filepath.Join(c.cfg.MetadataDir, fmt.Sprintf("%d.root.json", v)))
		if err != nil {
			break
		}
		if _, err := trusted.UpdateRoot(data); err != nil {
			// A cached root that does not chain is ignored: the
			// updater fetches the chain again from the repository.
			break
		}
		best = data
	}
	return best, nil
}

// fetcher implements go-tuf's fetcher.Fetcher with a context, and records the
// root versions it downloaded.
type fetcher struct {
	ctx    context.Context
	client *http.Client

	mu    sync.Mutex
	roots map[int64][]byte
}

func (f *fetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	resp, err := get(f.ctx, f.client, urlPath)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: fmt.Sprintf("read %s: %v", urlPath, err)}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is larger than %d bytes", urlPath, maxLength)}
	}
	if m := rootFileRe.FindStringSubmatch(path.Base(urlPath)); m != nil {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		f.mu.Lock()
		f.roots[v] = data
		f.mu.Unlock()
	}
	return data, nil
}

// get issues a GET and turns a non-200 answer into go-tuf's ErrDownloadHTTP
// (the updater reads a 404 for the next root as "no newer root").
func get(ctx context.Context, client *http.Client, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", u, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: u}
	}
	return resp, nil
}

// Refresh fetches and verifies the repository's metadata (root chain,
// timestamp, snapshot, targets) and keeps it for Versions and Download.
// It fails, keeping the previous state, on a version lower than one already
// seen (rollback), expired metadata (freeze), metadata that does not match
// what the timestamp and snapshot name (mix and match), or a bad signature.
func (c *Client) Refresh(ctx context.Context) error {
	root, err := c.chainedRoot()
	if err != nil {
		return fmt.Errorf("tuf: %w", err)
	}
	if err := repairCache(c.cfg.MetadataDir); err != nil {
		return fmt.Errorf("tuf: %w", err)
	}
	cfg, err := config.New(c.cfg.RepoURL+"/metadata", root)
	if err != nil {
		return fmt.Errorf("tuf: updater config: %w", err)
	}
	f := &fetcher{ctx: ctx, client: c.cfg.HTTPClient, roots: map[int64][]byte{}}
	cfg.Fetcher = f
	cfg.LocalMetadataDir = c.cfg.MetadataDir
	cfg.RemoteTargetsURL = c.cfg.RepoURL + "/targets"
	// Targets are never cached by go-tuf: Download streams them.
	cfg.LocalTargetsDir = filepath.Join(c.cfg.MetadataDir, "targets")
	upd, err := updater.New(cfg)
	if err != nil {
		return fmt.Errorf("tuf: updater: %w", err)
	}
	upd.UnsafeSetRefTime(c.cfg.Now())
	refreshErr := upd.Refresh()
	// Keep every root version the updater accepted, so the next run starts
	// from the newest (even if a later step of this refresh failed).
	if err := c.saveRoots(f, upd.GetTrustedMetadataSet().Root.Signed.Version); err != nil {
		return fmt.Errorf("tuf: %w", err)
	}
	// go-tuf renames the metadata it accepted into place without fsync: make
	// it durable, so that a power cut cannot leave an empty timestamp.json.
	if err := syncCache(c.cfg.MetadataDir); err != nil {
		return fmt.Errorf("tuf: %w", err)
	}
	if refreshErr != nil {
		return fmt.Errorf("tuf: refresh from %s refused%s: %w", c.cfg.RepoURL, explain(refreshErr), refreshErr)
	}
	c.mu.Lock()
	c.upd = upd
	c.mu.Unlock()
	return nil
}

// cachedRoles are the top-level metadata files go-tuf caches besides the
// root.
var cachedRoles = [...]string{"timestamp.json", "snapshot.json", "targets.json"}

// repairCache removes cached top-level metadata that is not JSON at all (a
// file truncated by a power cut before syncCache existed, or by a disk
// fault): go-tuf would refuse every later refresh with a parse error, and
// the machine would never update again. The file then counts as absent,
// as python-tuf treats unreadable local metadata; the root chain stays.
func repairCache(dir string) error {
	for _, name := range cachedRoles {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read cached %s: %w", name, err)
		}
		if json.Valid(b) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("remove corrupt cached %s: %w", name, err)
		}
	}
	return nil
}

// syncCache fsyncs the cached metadata files and their directory.
func syncCache(dir string) error {
	for _, name := range append(cachedRoles[:], "root.json") {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sync cached %s: %w", name, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync cached %s: %w", name, err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync metadata dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync metadata dir: %w", err)
	}
	return nil
}

// explain names the attack or fault behind a refresh error.
func explain(err error) string {
	switch {
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		return " (rollback: a metadata version lower than one already trusted)"
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return " (expired metadata: a freeze attack, a repository not re-signed in time, or a wrong clock)"
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return " (bad signature: metadata not signed by the keys the root trusts)"
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return " (metadata differs from what timestamp or snapshot signed: mix and match or tampering)"
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return " (metadata larger than allowed)"
	}
	return ""
}

func (c *Client) saveRoots(f *fetcher, trustedVersion int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for v, data := range f.roots {
		if v > trustedVersion {
			continue
		}
		p := filepath.Join(c.cfg.MetadataDir, fmt.Sprintf("%d.root.json", v))
		if err := atomicfile.WriteFile(p, data, 0o600); err != nil {
			return fmt.Errorf("cache root version %d: %w", v, err)
		}
	}
	return nil
}

// Target is one signed file of a version.
type Target struct {
	Name   string            // TUF target name, <os>/<version>/<file>
	Length int64             // signed length
	Hashes map[string]string // signed hashes, algorithm → lower-case hex
	Custom Custom
}

// Version is a version of an OS in a channel, as the repository lists it.
type Version struct {
	OS, Version, Channel string
	// MinVersion is the oldest version that may update to this one ("" for any).
	MinVersion     string
	Waves          []Wave
	Published      time.Time
	VerityRootHash string
	Root           Target
	UKIs           map[string]Target // by slot, "A" and "B"
	ChunkIndex     *Target           // nil when the version has none
}

// CanUpdateFrom reports whether a machine running current may install v.
func (v *Version) CanUpdateFrom(current string) bool {
	return v.MinVersion == "" || CompareVersions(current, v.MinVersion) >= 0
}

// WaveAllows reports whether a machine with seed (fixed per machine, in
// [0,1)) may install v at now: with no waves everyone may; otherwise the
// largest percentage among the waves already started must exceed seed*100.
func (v *Version) WaveAllows(seed float64, now time.Time) bool {
	if len(v.Waves) == 0 {
		return true
	}
	var allowed int64
	for _, w := range v.Waves {
		start := v.Published.Add(time.Duration(w.StartAfterHours) * time.Hour)
		if !now.Before(start) && w.Percent > allowed {
			allowed = w.Percent
		}
	}
	return seed*100 < float64(allowed)
}

// Versions lists the complete versions of osName in channel, newest first
// (CompareVersions). Targets without Cairn custom metadata are ignored; a
// Cairn target whose metadata is malformed or contradicts its version's
// other targets is an error, as is a version without a root image and both
// UKIs.
func (c *Client) Versions(channel, osName string) ([]Version, error) {
	c.mu.Lock()
	upd := c.upd
	c.mu.Unlock()
	if upd == nil {
		return nil, ErrNotRefreshed
	}
	return versionsFrom(upd.GetTopLevelTargets(), channel, osName)
}

func versionsFrom(targets map[string]*metadata.TargetFiles, channel, osName string) ([]Version, error) {
	byVersion := map[string]*Version{}
	names := make([]string, 0, len(targets))
	for name := range targets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		tf := targets[name]
		if tf.Custom == nil {
			continue
		}
		cu, ok, err := ParseCustom(*tf.Custom)
		if err != nil {
			return nil, fmt.Errorf("tuf: target %s: %w", name, err)
		}
		if !ok || cu.OS != osName || cu.Channel != channel {
			continue
		}
		if want := TargetName(cu.OS, cu.Version, cu.File()); name != want {
			return nil, fmt.Errorf("tuf: target %s: its metadata says it is %s", name, want)
		}
		if cu.Kind != KindChunkIndex && cu.Size != tf.Length {
			return nil, fmt.Errorf("tuf: target %s: custom size %d, signed length %d", name, cu.Size, tf.Length)
		}
		t := Target{Name: name, Length: tf.Length, Hashes: map[string]string{}, Custom: cu}
		for alg, h := range tf.Hashes {
			t.Hashes[alg] = hex.EncodeToString(h)
		}
		v := byVersion[cu.Version]
		if v == nil {
			v = &Version{OS: cu.OS, Version: cu.Version, Channel: cu.Channel, MinVersion: cu.MinVersion,
				Waves: cu.Waves, Published: cu.Published, UKIs: map[string]Target{}}
			byVersion[cu.Version] = v
		}
		if v.MinVersion != cu.MinVersion || !v.Published.Equal(cu.Published) || !equalWaves(v.Waves, cu.Waves) {
			return nil, fmt.Errorf("tuf: target %s: min_version, published or waves differ from the other targets of %s", name, cu.Version)
		}
		if cu.VerityRootHash != "" {
			if v.VerityRootHash != "" && v.VerityRootHash != cu.VerityRootHash {
				return nil, fmt.Errorf("tuf: target %s: verity root hash differs from the other targets of %s", name, cu.Version)
			}
			v.VerityRootHash = cu.VerityRootHash
		}
		switch cu.Kind {
		case KindRoot:
			v.Root = t
		case KindUKI:
			v.UKIs[cu.Slot] = t
		case KindChunkIndex:
			tc := t
			v.ChunkIndex = &tc
		}
	}
	out := make([]Version, 0, len(byVersion))
	for _, v := range byVersion {
		if v.Root.Name == "" || v.UKIs["A"].Name == "" || v.UKIs["B"].Name == "" {
			return nil, fmt.Errorf("tuf: version %s of %s lacks its root image or a UKI", v.Version, osName)
		}
		if v.ChunkIndex != nil && v.ChunkIndex.Custom.Size != v.Root.Length {
			return nil, fmt.Errorf("tuf: version %s of %s: chunk index describes %d bytes, root image is %d", v.Version, osName, v.ChunkIndex.Custom.Size, v.Root.Length)
		}
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return CompareVersions(out[i].Version, out[j].Version) > 0 })
	return out, nil
}

func equalWaves(a, b []Wave) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Download streams the target name to w and verifies its length and every
// signed hash. The bytes reach w before they are verified: on an error the
// caller must discard what w received (DownloadFile does so for a file).
// It reads at most the signed length plus one byte.
func (c *Client) Download(ctx context.Context, name string, w io.Writer) error {
	c.mu.Lock()
	upd := c.upd
	c.mu.Unlock()
	if upd == nil {
		return ErrNotRefreshed
	}
	tf, err := lookup(upd, name)
	if err != nil {
		return err
	}
	u, err := c.targetURL(upd, name, tf)
	if err != nil {
		return err
	}
	hashers := map[string]hash.Hash{}
	writers := []io.Writer{w}
	for alg := range tf.Hashes {
		var h hash.Hash
		switch alg {
		case "sha256":
			h = sha256.New()
		case "sha512":
			h = sha512.New()
		default:
			return fmt.Errorf("tuf: target %s: unsupported hash algorithm %q", name, alg)
		}
		hashers[alg] = h
		writers = append(writers, h)
	}
	if len(hashers) == 0 {
		return fmt.Errorf("tuf: target %s: no hashes signed", name)
	}
	resp, err := get(ctx, c.cfg.HTTPClient, u)
	if err != nil {
		return fmt.Errorf("tuf: download %s: %w", name, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.MultiWriter(writers...), io.LimitReader(resp.Body, tf.Length+1))
	if err != nil {
		return fmt.Errorf("tuf: download %s: %w", name, err)
	}
	if n != tf.Length {
		return fmt.Errorf("tuf: download %s: got %d bytes, signed length is %d: %w", name, n, tf.Length, ErrVerify)
	}
	for alg, h := range hashers {
		if got := h.Sum(nil); !equalBytes(got, tf.Hashes[alg]) {
			return fmt.Errorf("tuf: download %s: %s %s, signed %s: %w", name, alg, hex.EncodeToString(got), hex.EncodeToString(tf.Hashes[alg]), ErrVerify)
		}
	}
	return nil
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

// lookup finds a target in the trusted top-level targets (Cairn's
// repositories have no delegations). It only reads the updater's state, so
// concurrent downloads are safe.
func lookup(upd *updater.Updater, name string) (*metadata.TargetFiles, error) {
	tf, ok := upd.GetTopLevelTargets()[name]
	if !ok || tf == nil {
		return nil, fmt.Errorf("tuf: no target %s in the signed targets", name)
	}
	return tf, nil
}

// targetURL is where a target lives: with consistent snapshots, as
// <dir>/<sha256 hex>.<base> below RepoURL/targets/.
func (c *Client) targetURL(upd *updater.Updater, name string, tf *metadata.TargetFiles) (string, error) {
	remote := name
	if upd.GetTrustedMetadataSet().Root.Signed.ConsistentSnapshot {
		sum, ok := tf.Hashes["sha256"]
		if !ok {
			return "", fmt.Errorf("tuf: target %s: no sha256 for its consistent-snapshot name", name)
		}
		dir, base := path.Split(name)
		remote = dir + hex.EncodeToString(sum) + "." + base
	}
	var b strings.Builder
	b.WriteString(c.cfg.RepoURL + "/targets")
	for _, seg := range strings.Split(remote, "/") {
		b.WriteString("/" + url.PathEscape(seg))
	}
	return b.String(), nil
}

// DownloadFile downloads the target name into the file dst: it writes a
// temporary file next to dst, verifies it, syncs it and renames it into
// place. On any error dst is left as it was and nothing else remains.
func (c *Client) DownloadFile(ctx context.Context, name, dst string) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return fmt.Errorf("tuf: download %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if err := c.Download(ctx, name, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("tuf: download %s: sync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tuf: download %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("tuf: download %s: %w", name, err)
	}
	return nil
}

// Fetch returns the verified bytes of a small target (such as a chunk
// index), refusing one whose signed length exceeds limit.
func (c *Client) Fetch(ctx context.Context, name string, limit int64) ([]byte, error) {
	c.mu.Lock()
	upd := c.upd
	c.mu.Unlock()
	if upd == nil {
		return nil, ErrNotRefreshed
	}
	tf, err := lookup(upd, name)
	if err != nil {
		return nil, err
	}
	if tf.Length > limit {
		return nil, fmt.Errorf("tuf: target %s is %d bytes, limit %d", name, tf.Length, limit)
	}
	var buf strings.Builder
	buf.Grow(int(tf.Length))
	if err := c.Download(ctx, name, &buf); err != nil {
		return nil, err
	}
	return []byte(buf.String()), nil
}
