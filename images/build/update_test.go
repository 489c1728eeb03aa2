package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/os/schema"
)

func TestUpdateRoot(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("root.json", `{"signed":{"_type":"root","version":1},"signatures":[]}`)
	write("targets.json", `{"signed":{"_type":"targets"}}`)
	write("junk.json", `not json`)
	src := filepath.Join(dir, "os.yaml")
	tests := []struct {
		name string
		u    *schema.Update
		err  string
	}{
		{"no update", nil, ""},
		{"relative", &schema.Update{Root: "root.json"}, ""},
		{"absolute", &schema.Update{Root: filepath.Join(dir, "root.json")}, ""},
		{"missing root", &schema.Update{}, "update.root: required"},
		{"absent file", &schema.Update{Root: "nope.json"}, "no such file"},
		{"not root", &schema.Update{Root: "targets.json"}, "not TUF root metadata"},
		{"junk", &schema.Update{Root: "junk.json"}, "not TUF root metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst, data, err := updateRoot(&schema.OS{Source: src, Update: tt.u})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), src) {
					t.Fatalf("err = %v, want %q naming %s", err, tt.err, src)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.u == nil {
				if data != nil {
					t.Fatal("data without an update section")
				}
				return
			}
			if dst != "usr/share/cairn/update/root.json" || !strings.Contains(string(data), `"root"`) {
				t.Fatalf("dst %q data %q", dst, data)
			}
		})
	}
}
