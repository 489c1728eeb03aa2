// Package repo writes Cairn's static TUF update repository (host side):
// keys, the initial metadata, publishing a built version (its root image,
// UKIs and chunk index as TUF targets with Cairn's custom metadata), timely
// re-signing, and root key rotation. It uses go-tuf/v2's metadata package.
//
// Layout of a repository directory (any web server can serve it):
//
//	metadata/1.root.json, 2.root.json, …   every root version (clients follow the chain)
//	metadata/root.json                      a copy of the newest root, to ship in images
//	metadata/<n>.targets.json, <n>.snapshot.json, timestamp.json (consistent snapshots)
//	targets/<os>/<version>/<sha256>.<file>  the targets, hash-prefixed
//	chunks/<hex[0:2]>/<hex>                  chunk blobs (written by the chunk indexer)
package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/internal/atomicfile"
	"cairn.dev/cairn/update/tuf"
)

// Expiry is how long each role's metadata stays valid after signing.
type Expiry struct {
	Root, Targets, Snapshot, Timestamp time.Duration
}

// DefaultExpiry is used for every zero field of an Expiry: the timestamp
// must be re-signed daily (Resign), the rest far less often.
func DefaultExpiry() Expiry {
	return Expiry{Root: 365 * 24 * time.Hour, Targets: 90 * 24 * time.Hour,
		Snapshot: 7 * 24 * time.Hour, Timestamp: 24 * time.Hour}
}

func (e Expiry) withDefaults() Expiry {
	d := DefaultExpiry()
	if e.Root <= 0 {
		e.Root = d.Root
	}
	if e.Targets <= 0 {
		e.Targets = d.Targets
	}
	if e.Snapshot <= 0 {
		e.Snapshot = d.Snapshot
	}
	if e.Timestamp <= 0 {
		e.Timestamp = d.Timestamp
	}
	return e
}

// Options are common to every operation that signs.
type Options struct {
	Expiry Expiry
	// Now is the signing clock (default time.Now); tests set it.
	Now func() time.Time
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now().UTC()
	}
	return time.Now().UTC()
}

// ErrVersionExists is returned by Publish for a version already published.
var ErrVersionExists = errors.New("version already published (use force to replace it)")

const (
	metadataDir = "metadata"
	targetsDir  = "targets"
	chunksDir   = "chunks"
)

// repository is the newest signed state of a repository directory.
type repository struct {
	dir       string
	root      *metadata.Metadata[metadata.RootType]
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
}

// lock takes an exclusive lock on the repository directory for one writer.
func lock(ctx context.Context, repoDir string) (unlock func(), err error) {
	if err := os.MkdirAll(repoDir, 0o755); err != nil {
		return nil, fmt.Errorf("repository directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(repoDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("repository lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("repository lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("repository lock: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return func() { f.Close() }, nil
}

// Init creates the repository's first metadata (root version 1, empty
// targets) signed with the keys in keysDir, which InitKeys created. It
// refuses a directory that already has a root.
func Init(ctx context.Context, repoDir, keysDir string, opts Options) error {
	unlock, err := lock(ctx, repoDir)
	if err != nil {
		return err
	}
	defer unlock()
	return initLocked(repoDir, keysDir, opts)
}

func initLocked(repoDir, keysDir string, opts Options) error {
	if _, err := os.Stat(filepath.Join(repoDir, metadataDir, "1.root.json")); err == nil {
		return fmt.Errorf("repository %s already initialised", repoDir)
	}
	keys := map[string]*roleKey{}
	for _, role := range Roles {
		k, err := loadKey(keysDir, role)
		if err != nil {
			return err
		}
		keys[role] = k
	}
	exp, now := opts.Expiry.withDefaults(), opts.now()
	r := &repository{dir: repoDir}
	r.root = metadata.Root(now.Add(exp.Root))
	r.root.Signed.ConsistentSnapshot = true
	for _, role := range Roles {
		if err := r.root.Signed.AddKey(keys[role].key, role); err != nil {
			return fmt.Errorf("add %s key: %w", role, err)
		}
	}
	if _, err := r.root.Sign(keys[metadata.ROOT].signer); err != nil {
		return fmt.Errorf("sign root: %w", err)
	}
	// Versions start at 0 so that the first signing makes them 1.
	r.targets = metadata.Targets(now)
	r.targets.Signed.Version = 0
	r.snapshot = metadata.Snapshot(now)
	r.snapshot.Signed.Version = 0
	r.timestamp = metadata.Timestamp(now)
	r.timestamp.Signed.Version = 0
	for _, d := range []string{metadataDir, targetsDir, chunksDir} {
		if err := os.MkdirAll(filepath.Join(repoDir, d), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := r.writeRoot(); err != nil {
		return err
	}
	signers := map[string][]*roleKey{}
	for _, role := range Roles {
		signers[role] = []*roleKey{keys[role]}
	}
	return r.commit(signers, opts, true, true)
}

var versionedRe = regexp.MustCompile(`^([0-9]{1,9})\.root\.json$`)

// load reads the newest state of repoDir and checks its signatures.
func load(repoDir string) (*repository, error) {
	md := filepath.Join(repoDir, metadataDir)
	entries, err := os.ReadDir(md)
	if err != nil {
		return nil, fmt.Errorf("repository %s: %w", repoDir, err)
	}
	var newest int64
	for _, e := range entries {
		if m := versionedRe.FindStringSubmatch(e.Name()); m != nil {
			if v, _ := strconv.ParseInt(m[1], 10, 64); v > newest {
				newest = v
			}
		}
	}
	if newest == 0 {
		return nil, fmt.Errorf("repository %s has no root metadata", repoDir)
	}
	r := &repository{dir: repoDir}
	if r.root, err = metadata.Root().FromFile(filepath.Join(md, fmt.Sprintf("%d.root.json", newest))); err != nil {
		return nil, fmt.Errorf("read root version %d: %w", newest, err)
	}
	if r.timestamp, err = metadata.Timestamp().FromFile(filepath.Join(md, "timestamp.json")); err != nil {
		return nil, fmt.Errorf("read timestamp: %w", err)
	}
	sm, ok := r.timestamp.Signed.Meta["snapshot.json"]
	if !ok {
		return nil, errors.New("timestamp names no snapshot")
	}
	if r.snapshot, err = metadata.Snapshot().FromFile(filepath.Join(md, fmt.Sprintf("%d.snapshot.json", sm.Version))); err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	tm, ok := r.snapshot.Signed.Meta["targets.json"]
	if !ok {
		return nil, errors.New("snapshot names no targets")
	}
	if r.targets, err = metadata.Targets().FromFile(filepath.Join(md, fmt.Sprintf("%d.targets.json", tm.Version))); err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	for role, m := range map[string]any{metadata.ROOT: r.root, metadata.TARGETS: r.targets,
		metadata.SNAPSHOT: r.snapshot, metadata.TIMESTAMP: r.timestamp} {
		if err := r.root.VerifyDelegate(role, m); err != nil {
			return nil, fmt.Errorf("repository %s: %s metadata does not verify against root version %d: %w", repoDir, role, newest, err)
		}
	}
	return r, nil
}

// signers loads the keys of roles from keysDir and checks that the root
// trusts them.
func (r *repository) signers(keysDir string, roles ...string) (map[string][]*roleKey, error) {
	out := map[string][]*roleKey{}
	for _, role := range roles {
		k, err := loadKey(keysDir, role)
		if err != nil {
			return nil, err
		}
		if !trusts(r.root, role, k.id) {
			return nil, fmt.Errorf("the %s key in %s is not a %s key of root version %d (rotated?)", role, keysDir, role, r.root.Signed.Version)
		}
		out[role] = []*roleKey{k}
	}
	return out, nil
}

func trusts(root *metadata.Metadata[metadata.RootType], role, id string) bool {
	rl, ok := root.Signed.Roles[role]
	if !ok {
		return false
	}
	for _, k := range rl.KeyIDs {
		if k == id {
			return true
		}
	}
	return false
}

func metaFile(version int64, data []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(data)
	m := metadata.MetaFile(version)
	m.Length = int64(len(data))
	m.Hashes = metadata.Hashes{"sha256": sum[:]}
	return m
}

// commit re-signs and writes targets (when signTargets) and snapshot (when
// signSnapshot or targets changed) and always the timestamp, each with a new
// version. The versioned files are written first, timestamp.json last, so a
// client sees either the old or the new state.
func (r *repository) commit(signers map[string][]*roleKey, opts Options, signTargets, signSnapshot bool) error {
	exp, now := opts.Expiry.withDefaults(), opts.now()
	md := filepath.Join(r.dir, metadataDir)
	if signTargets {
		r.targets.Signed.Version++
		r.targets.Signed.Expires = now.Add(exp.Targets)
		data, err := sign(r.targets, signers[metadata.TARGETS])
		if err != nil {
			return fmt.Errorf("targets: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(md, fmt.Sprintf("%d.targets.json", r.targets.Signed.Version)), data, 0o644); err != nil {
			return err
		}
		r.snapshot.Signed.Meta["targets.json"] = metaFile(r.targets.Signed.Version, data)
		signSnapshot = true
	}
	if signSnapshot {
		r.snapshot.Signed.Version++
		r.snapshot.Signed.Expires = now.Add(exp.Snapshot)
		data, err := sign(r.snapshot, signers[metadata.SNAPSHOT])
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		if err := atomicfile.WriteFile(filepath.Join(md, fmt.Sprintf("%d.snapshot.json", r.snapshot.Signed.Version)), data, 0o644); err != nil {
			return err
		}
		r.timestamp.Signed.Meta["snapshot.json"] = metaFile(r.snapshot.Signed.Version, data)
	}
	r.timestamp.Signed.Version++
	r.timestamp.Signed.Expires = now.Add(exp.Timestamp)
	data, err := sign(r.timestamp, signers[metadata.TIMESTAMP])
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(md, "timestamp.json"), data, 0o644)
}

// sign replaces m's signatures by those of keys and returns its file bytes.
func sign[T metadata.Roles](m *metadata.Metadata[T], keys []*roleKey) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing key")
	}
	m.ClearSignatures()
	for _, k := range keys {
		if _, err := m.Sign(k.signer); err != nil {
			return nil, fmt.Errorf("sign: %w", err)
		}
	}
	data, err := m.ToBytes(true)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return data, nil
}

// writeRoot writes the (already signed) root as <n>.root.json and root.json.
func (r *repository) writeRoot() error {
	data, err := r.root.ToBytes(true)
	if err != nil {
		return fmt.Errorf("encode root: %w", err)
	}
	md := filepath.Join(r.dir, metadataDir)
	if err := atomicfile.WriteFile(filepath.Join(md, fmt.Sprintf("%d.root.json", r.root.Signed.Version)), data, 0o644); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(md, "root.json"), data, 0o644)
}

// ChunkIndexFunc splits the root image at rootImage into chunks, stores
// every chunk not yet there under chunksDir (chunks/<hex[0:2]>/<hex>), and
// returns the chunk index (the JSON format of the update contract).
type ChunkIndexFunc func(ctx context.Context, rootImage, chunksDir string) ([]byte, error)

// PublishOptions says where and how a version is published.
type PublishOptions struct {
	Options
	Channel string
	// MinVersion is the oldest version that may update to this one ("" for any).
	MinVersion string
	// Waves is the staged rollout (none: everyone at once); the last wave
	// must reach 100 percent.
	Waves []tuf.Wave
	// Force replaces a version already published.
	Force bool
	// ChunkIndex builds the chunk index target (default BuildChunks);
	// NoChunkIndex publishes without one (clients then download the
	// whole root image).
	ChunkIndex   ChunkIndexFunc
	NoChunkIndex bool
}

// Published describes what Publish added.
type Published struct {
	OS, Version    string
	Targets        []string
	TargetsVersion int64
}

// Publish adds the version that manifestPath describes (images/manifest,
// with its artifacts next to it) to the repository in repoDir, signing with
// the targets, snapshot and timestamp keys in keysDir. It initialises the
// repository first when it has no root yet (which needs root.key too).
// Artifacts are checked against the manifest's sizes and sha256 sums as they
// are copied. A version already in the repository is refused unless
// opts.Force; a version older than the newest of its channel is allowed.
func Publish(ctx context.Context, repoDir, keysDir, manifestPath string, opts PublishOptions) (*Published, error) {
	if err := tuf.ValidChannel(opts.Channel); err != nil {
		return nil, err
	}
	if opts.MinVersion != "" {
		if err := tuf.ValidVersion(opts.MinVersion); err != nil {
			return nil, fmt.Errorf("min version: %w", err)
		}
	}
	if err := tuf.ValidateWaves(opts.Waves); err != nil {
		return nil, fmt.Errorf("waves: %w", err)
	}
	if n := len(opts.Waves); n > 0 && opts.Waves[n-1].Percent != 100 {
		return nil, fmt.Errorf("waves: the last wave lets %d%% in, it must reach 100%%", opts.Waves[n-1].Percent)
	}
	if opts.ChunkIndex == nil && !opts.NoChunkIndex {
		opts.ChunkIndex = BuildChunks
	}
	m, err := manifest.Read(manifestPath)
	if err != nil {
		return nil, err
	}
	if err := tuf.ValidOSName(m.Name); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", manifestPath, err)
	}
	if err := tuf.ValidVersion(m.Version); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", manifestPath, err)
	}
	arts, err := versionArtifacts(m)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", manifestPath, err)
	}

	unlock, err := lock(ctx, repoDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(repoDir, metadataDir, "1.root.json")); errors.Is(err, fs.ErrNotExist) {
		if err := initLocked(repoDir, keysDir, opts.Options); err != nil {
			return nil, fmt.Errorf("initialise repository: %w", err)
		}
	}
	r, err := load(repoDir)
	if err != nil {
		return nil, err
	}
	signers, err := r.signers(keysDir, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP)
	if err != nil {
		return nil, err
	}
	prefix := m.Name + "/" + m.Version + "/"
	var existing []string
	for name := range r.targets.Signed.Targets {
		if strings.HasPrefix(name, prefix) {
			existing = append(existing, name)
		}
	}
	if len(existing) > 0 && !opts.Force {
		return nil, fmt.Errorf("%s %s: %w", m.Name, m.Version, ErrVersionExists)
	}

	srcDir := filepath.Dir(manifestPath)
	dstDir := filepath.Join(repoDir, targetsDir, m.Name, m.Version)
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return nil, fmt.Errorf("targets directory: %w", err)
	}
	now := opts.now()
	base := tuf.Custom{OS: m.Name, Version: m.Version, Channel: opts.Channel, MinVersion: opts.MinVersion,
		Waves: opts.Waves, Published: now}
	added := map[string]*metadata.TargetFiles{}
	var rootTarget string
	for _, a := range arts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dst, err := copyVerified(filepath.Join(srcDir, a.art.Name), dstDir, a.file, a.art.Size, a.art.SHA256)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.art.Name, err)
		}
		c := base
		c.Kind, c.Slot, c.Size = a.kind, a.slot, a.art.Size
		if a.kind == tuf.KindRoot {
			c.VerityRootHash = m.Verity.RootHash
			rootTarget = dst
		}
		tf, err := targetFile(a.art.Size, a.art.SHA256, c)
		if err != nil {
			return nil, fmt.Errorf("artifact %s: %w", a.art.Name, err)
		}
		added[tuf.TargetName(m.Name, m.Version, a.file)] = tf
	}
	if !opts.NoChunkIndex {
		index, err := opts.ChunkIndex(ctx, rootTarget, filepath.Join(repoDir, chunksDir))
		if err != nil {
			return nil, fmt.Errorf("chunk index of %s: %w", rootTarget, err)
		}
		sum := sha256.Sum256(index)
		hexSum := hex.EncodeToString(sum[:])
		if err := atomicfile.WriteFile(filepath.Join(dstDir, hexSum+"."+tuf.ChunkIndexFile), index, 0o644); err != nil {
			return nil, err
		}
		c := base
		c.Kind, c.Size, c.VerityRootHash = tuf.KindChunkIndex, added[tuf.TargetName(m.Name, m.Version, tuf.RootFile)].Length, m.Verity.RootHash
		tf, err := targetFile(int64(len(index)), hexSum, c)
		if err != nil {
			return nil, fmt.Errorf("chunk index: %w", err)
		}
		added[tuf.TargetName(m.Name, m.Version, tuf.ChunkIndexFile)] = tf
	}

	for _, name := range existing {
		delete(r.targets.Signed.Targets, name)
	}
	res := &Published{OS: m.Name, Version: m.Version}
	for name, tf := range added {
		tf.Path = name
		r.targets.Signed.Targets[name] = tf
		res.Targets = append(res.Targets, name)
	}
	if err := r.commit(signers, opts.Options, true, true); err != nil {
		return nil, err
	}
	res.TargetsVersion = r.targets.Signed.Version
	return res, nil
}

func targetFile(size int64, sha string, c tuf.Custom) (*metadata.TargetFiles, error) {
	sum, err := hex.DecodeString(sha)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("sha256 %q is not 64 hex digits", sha)
	}
	raw, err := tuf.MarshalCustom(c)
	if err != nil {
		return nil, err
	}
	tf := metadata.TargetFile()
	tf.Length = size
	tf.Hashes = metadata.Hashes{"sha256": sum}
	tf.Custom = &raw
	return tf, nil
}

type versionArtifact struct {
	art        manifest.Artifact
	kind, slot string
	file       string // target file name below <os>/<version>/
}

// versionArtifacts finds a version's root image and its two UKIs in m.
func versionArtifacts(m *manifest.Manifest) ([]versionArtifact, error) {
	byName := map[string]manifest.Artifact{}
	var out []versionArtifact
	for _, a := range m.Artifacts {
		if a.Name == "" || a.Name != path.Base(a.Name) || a.Name == "." || a.Name == ".." || strings.ContainsRune(a.Name, '\\') {
			return nil, fmt.Errorf("artifact name %q is not a plain file name", a.Name)
		}
		byName[a.Name] = a
		if a.Kind == "root" {
			out = append(out, versionArtifact{art: a, kind: tuf.KindRoot, file: tuf.RootFile})
		}
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("%d root artifacts, want 1", len(out))
	}
	slots := map[string]bool{}
	for _, s := range m.Slots {
		if s.Slot != "A" && s.Slot != "B" {
			return nil, fmt.Errorf("slot %q, want A or B", s.Slot)
		}
		if slots[s.Slot] {
			return nil, fmt.Errorf("slot %s listed twice", s.Slot)
		}
		slots[s.Slot] = true
		a, ok := byName[s.UKI]
		if !ok || a.Kind != "uki" {
			return nil, fmt.Errorf("slot %s: UKI %q is not a uki artifact", s.Slot, s.UKI)
		}
		out = append(out, versionArtifact{art: a, kind: tuf.KindUKI, slot: s.Slot, file: tuf.UKIFile(s.Slot)})
	}
	if !slots["A"] || !slots["B"] {
		return nil, errors.New("the manifest needs a UKI for both slots A and B")
	}
	return out, nil
}

// copyVerified copies src to dstDir/<sha>.<file>, checking its size and
// sha256 on the way, and returns the destination path.
func copyVerified(src, dstDir, file string, size int64, sha string) (string, error) {
	if _, err := hex.DecodeString(sha); err != nil || len(sha) != 2*sha256.Size {
		return "", fmt.Errorf("manifest sha256 %q is not 64 hex digits", sha)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() != size {
		return "", fmt.Errorf("%s is %d bytes, the manifest says %d", src, st.Size(), size)
	}
	dst := filepath.Join(dstDir, strings.ToLower(sha)+"."+file)
	tmp, err := os.CreateTemp(dstDir, ".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), in)
	if err != nil {
		tmp.Close()
		return "", fmt.Errorf("copy %s: %w", src, err)
	}
	if n != size {
		tmp.Close()
		return "", fmt.Errorf("%s changed while copying: %d bytes, want %d", src, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(sha) {
		tmp.Close()
		return "", fmt.Errorf("%s has sha256 %s, the manifest says %s", src, got, sha)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// Resign renews the metadata's freshness: a new timestamp always, and the
// snapshot and targets when less than half of their validity is left. Run it
// more often than the timestamp expiry (daily for the default of one day).
func Resign(ctx context.Context, repoDir, keysDir string, opts Options) error {
	unlock, err := lock(ctx, repoDir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(repoDir)
	if err != nil {
		return err
	}
	exp, now := opts.Expiry.withDefaults(), opts.now()
	roles := []string{metadata.TIMESTAMP}
	signTargets := r.targets.Signed.Expires.Before(now.Add(exp.Targets / 2))
	signSnapshot := signTargets || r.snapshot.Signed.Expires.Before(now.Add(exp.Snapshot/2))
	if signTargets {
		roles = append(roles, metadata.TARGETS)
	}
	if signSnapshot {
		roles = append(roles, metadata.SNAPSHOT)
	}
	signers, err := r.signers(keysDir, roles...)
	if err != nil {
		return err
	}
	return r.commit(signers, opts, signTargets, signSnapshot)
}

// RotateRoot replaces every top-level key by the keys in newKeysDir (made
// by InitKeys; copy a key from the old directory to keep it): it writes the
// next root version, signed by both the old and the new root key, so that
// clients trusting the old root follow to the new one. Targets, snapshot and
// timestamp are re-signed by both their old and new keys, so clients before
// and after the new root both accept them; later publishes need only the
// new keys.
func RotateRoot(ctx context.Context, repoDir, oldKeysDir, newKeysDir string, opts Options) error {
	unlock, err := lock(ctx, repoDir)
	if err != nil {
		return err
	}
	defer unlock()
	r, err := load(repoDir)
	if err != nil {
		return err
	}
	oldSigners, err := r.signers(oldKeysDir, Roles...)
	if err != nil {
		return err
	}
	exp, now := opts.Expiry.withDefaults(), opts.now()
	newRoot := metadata.Root(now.Add(exp.Root))
	newRoot.Signed.Version = r.root.Signed.Version + 1
	newRoot.Signed.ConsistentSnapshot = true
	signers := map[string][]*roleKey{}
	for _, role := range Roles {
		k, err := loadKey(newKeysDir, role)
		if err != nil {
			return err
		}
		if err := newRoot.Signed.AddKey(k.key, role); err != nil {
			return fmt.Errorf("add %s key: %w", role, err)
		}
		signers[role] = []*roleKey{k}
		if old := oldSigners[role][0]; old.id != k.id {
			signers[role] = append(signers[role], old)
		}
	}
	if _, err := sign(newRoot, signers[metadata.ROOT]); err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if err := r.root.VerifyDelegate(metadata.ROOT, newRoot); err != nil {
		return fmt.Errorf("new root does not verify with the old root: %w", err)
	}
	if err := newRoot.VerifyDelegate(metadata.ROOT, newRoot); err != nil {
		return fmt.Errorf("new root does not verify with itself: %w", err)
	}
	// Targets, snapshot and timestamp are signed by the old and the new
	// keys, so they are valid under both roots: write them, then the root.
	old := r.root
	r.root = newRoot
	if err := r.commit(signers, opts, true, true); err != nil {
		r.root = old
		return err
	}
	return r.writeRoot()
}
