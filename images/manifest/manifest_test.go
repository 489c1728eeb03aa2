package manifest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	m := &Manifest{Name: "hello", Version: "1.0.0", Kernel: "6.1.0-56-cloud-amd64",
		Packages:  []Package{{Name: "linux-image-x", Version: "1", SHA256: "ab", Fallback: true, Pinned: "0"}},
		Artifacts: []Artifact{{Name: "hello.img", Kind: "disk", Size: 10, SHA256: "cd"}}}
	p := filepath.Join(t.TempDir(), "m.json")
	if err := m.Write(p); err != nil {
		t.Fatal(err)
	}
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v, want %+v", got, m)
	}
}

func TestReadHostile(t *testing.T) {
	for name, data := range map[string]string{
		"truncated":  `{"name": "hel`,
		"wrong type": `{"name": 5}`,
		"not json":   "\x00\x01",
	} {
		p := filepath.Join(t.TempDir(), "m.json")
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add([]byte(`{"name":"a","artifacts":[{"name":"x","size":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "m.json")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = Read(p) // must not panic
	})
}
