package tuf

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// targetsOf builds signed-targets entries for a complete version, then lets
// edit change them.
func targetsOf(t *testing.T, version string, edit func(name string, c *Custom)) map[string]*metadata.TargetFiles {
	t.Helper()
	out := map[string]*metadata.TargetFiles{}
	add := func(kind, slot string, length int64) {
		c := validCustom()
		c.Version, c.Kind, c.Slot, c.Size = version, kind, slot, length
		if kind == KindUKI {
			c.VerityRootHash = ""
		}
		if kind == KindChunkIndex {
			c.Size = 4096
		}
		name := TargetName(c.OS, c.Version, c.File())
		if edit != nil {
			edit(name, &c)
		}
		data, err := json.Marshal(map[string]Custom{"cairn": c})
		if err != nil {
			t.Fatal(err)
		}
		raw := json.RawMessage(data)
		out[name] = &metadata.TargetFiles{Length: length, Hashes: metadata.Hashes{"sha256": make([]byte, 32)}, Custom: &raw, Path: name}
	}
	add(KindRoot, "", 4096)
	add(KindUKI, "A", 100)
	add(KindUKI, "B", 100)
	add(KindChunkIndex, "", 300)
	return out
}

func merge(ms ...map[string]*metadata.TargetFiles) map[string]*metadata.TargetFiles {
	out := map[string]*metadata.TargetFiles{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestVersionsFrom(t *testing.T) {
	other := json.RawMessage(`{"someone": "else"}`)
	all := merge(targetsOf(t, "1.2.9", nil), targetsOf(t, "1.2.10", nil), targetsOf(t, "1.3.0", func(_ string, c *Custom) { c.Channel = "beta" }),
		map[string]*metadata.TargetFiles{"unrelated.txt": {Length: 1, Custom: &other}, "plain": {Length: 1}})
	vs, err := versionsFrom(all, "stable", "hello")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Version != "1.2.10" || vs[1].Version != "1.2.9" || vs[0].ChunkIndex == nil || vs[0].UKIs["B"].Length != 100 {
		t.Fatalf("versions %+v", vs)
	}
}

func TestVersionsFromHostile(t *testing.T) {
	for name, targets := range map[string]map[string]*metadata.TargetFiles{
		"wrong name": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindUKI && c.Slot == "A" {
				c.Slot = "B"
			}
		}),
		"version mismatch": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindRoot {
				c.Version = "2.0"
			}
		}),
		"min version differs": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindRoot {
				c.MinVersion = "0.1"
			}
		}),
		"waves differ": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindRoot {
				c.Waves = nil
			}
		}),
		"verity differs": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindChunkIndex {
				c.VerityRootHash = strings.Repeat("f", 64)
			}
		}),
		"size lies": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindUKI {
				c.Size = 1
			}
		}),
		"index of another size": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindChunkIndex {
				c.Size = 1
			}
		}),
		"malformed custom": targetsOf(t, "1.0", func(n string, c *Custom) {
			if c.Kind == KindRoot {
				c.Kind = "kernel"
			}
		}),
		"missing uki": func() map[string]*metadata.TargetFiles {
			m := targetsOf(t, "1.0", nil)
			delete(m, "hello/1.0/uki-B.efi")
			return m
		}(),
	} {
		if vs, err := versionsFrom(targets, "stable", "hello"); err == nil {
			t.Errorf("%s: accepted %+v", name, vs)
		}
	}
}

func TestClientBeforeRefresh(t *testing.T) {
	root := []byte(`{"signed":{}}`)
	if _, err := New(Config{MetadataDir: t.TempDir(), TrustedRoot: root, RepoURL: "http://127.0.0.1:1"}); err == nil {
		t.Fatal("accepted a junk trusted root")
	}
	for _, u := range []string{"", "ftp://x", "http://", "file:///x"} {
		if _, err := New(Config{MetadataDir: t.TempDir(), TrustedRoot: []byte("x"), RepoURL: u}); err == nil {
			t.Errorf("accepted repository URL %q", u)
		}
	}
	c := &Client{}
	if _, err := c.Versions("stable", "hello"); !errors.Is(err, ErrNotRefreshed) {
		t.Fatal(err)
	}
	if err := c.Download(context.Background(), "x", io.Discard); !errors.Is(err, ErrNotRefreshed) {
		t.Fatal(err)
	}
}
