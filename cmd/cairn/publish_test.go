package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/manifest"
)

// fakeBuild writes tiny artifacts and their manifest, as cairn build would.
func fakeBuild(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	m := &manifest.Manifest{Name: "hello", Version: version, Verity: manifest.Verity{RootHash: strings.Repeat("cd", 32)},
		Slots: []manifest.Slot{{Slot: "A", UKI: "hello.A.efi"}, {Slot: "B", UKI: "hello.B.efi"}}}
	for _, a := range [][2]string{{"hello.root.erofs", "root"}, {"hello.A.efi", "uki"}, {"hello.B.efi", "uki"}} {
		data := []byte(strings.Repeat(a[0]+version, 500))
		if err := os.WriteFile(filepath.Join(dir, a[0]), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: a[0], Kind: a[1], Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	}
	p := filepath.Join(dir, "hello.manifest.json")
	if err := m.Write(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeysAndPublishCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys, keys2, repoDir := filepath.Join(dir, "keys"), filepath.Join(dir, "keys2"), filepath.Join(dir, "repo")
	steps := []struct {
		run  func() error
		want error // nil: success; errUsage; or any error (errAny)
	}{
		{func() error { return keysCmd(ctx, []string{"init", keys}) }, nil},
		{func() error { return keysCmd(ctx, []string{"init", keys}) }, errAny},
		{func() error { return keysCmd(ctx, []string{"init"}) }, errUsage},
		{func() error { return keysCmd(ctx, []string{"bogus"}) }, errUsage},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, "--waves", "0h:10%,24h:100%", fakeBuild(t, "1.0.0")})
		}, nil},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, "--no-chunks", fakeBuild(t, "1.0.0")})
		}, errAny},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, "--force", "--channel", "beta", "--min-version", "0.9", fakeBuild(t, "1.0.0")})
		}, nil},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, "--waves", "0h:10%", fakeBuild(t, "1.0.1")})
		}, errAny},
		{func() error { return publishCmd(ctx, []string{"--repo", repoDir, fakeBuild(t, "1.0.1")}) }, errUsage},
		{func() error { return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, "--resign"}) }, nil},
		{func() error { return keysCmd(ctx, []string{"init", keys2}) }, nil},
		{func() error {
			return keysCmd(ctx, []string{"rotate-root", "--repo", repoDir, "--old", keys, "--new", keys2})
		}, nil},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, fakeBuild(t, "1.0.2")})
		}, errAny},
		{func() error {
			return publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys2, fakeBuild(t, "1.0.2")})
		}, nil},
	}
	for i, s := range steps {
		err := s.run()
		switch {
		case s.want == nil && err != nil:
			t.Fatalf("step %d: %v", i, err)
		case s.want == errUsage && !errors.Is(err, errUsage):
			t.Fatalf("step %d: %v, want a usage error", i, err)
		case s.want == errAny && err == nil:
			t.Fatalf("step %d: no error", i)
		}
	}
	for _, f := range []string{"1.root.json", "2.root.json", "root.json", "timestamp.json"} {
		if _, err := os.Stat(filepath.Join(repoDir, "metadata", f)); err != nil {
			t.Error(err)
		}
	}
}

var errAny = errors.New("any error")

// TestPublishInit creates an empty repository (its root.json is what the
// first image trusts), then publishes into it.
func TestPublishInit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys, repoDir := filepath.Join(dir, "keys"), filepath.Join(dir, "repo")
	if err := keysCmd(ctx, []string{"init", keys}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--init", "--repo", repoDir, "--keys", keys, fakeBuild(t, "1.0.0")},
		{"--init", "--resign", "--repo", repoDir, "--keys", keys},
		{"--init", "--repo", repoDir},
	} {
		if err := publishCmd(ctx, args); !errors.Is(err, errUsage) {
			t.Errorf("publish %v: %v, want a usage error", args, err)
		}
	}
	if _, err := os.Stat(repoDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a usage error created %s: %v", repoDir, err)
	}
	if err := publishCmd(ctx, []string{"--init", "--repo", repoDir, "--keys", keys}); err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(repoDir, "metadata", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := publishCmd(ctx, []string{"--init", "--repo", repoDir, "--keys", keys}); err == nil {
		t.Error("a second --init succeeded")
	}
	if err := publishCmd(ctx, []string{"--repo", repoDir, "--keys", keys, fakeBuild(t, "1.0.0")}); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(repoDir, "metadata", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(root) {
		t.Error("publishing replaced the root that --init created (images built with it would no longer trust the repository)")
	}
}
