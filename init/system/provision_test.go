//go:build linux

package system

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/os/schema"
)

func TestWriteFiles(t *testing.T) {
	tests := []struct {
		name    string
		files   []schema.File
		want    map[string]string // relative to etcDir
		mode    os.FileMode
		wantErr string
	}{
		{"plain", []schema.File{{Path: "/etc/motd", Content: "hi\n"}}, map[string]string{"motd": "hi\n"}, 0o644, ""},
		{"nested with mode", []schema.File{{Path: "/etc/app/conf.d/x.conf", Content: "x", Mode: "0600"}}, map[string]string{"app/conf.d/x.conf": "x"}, 0o600, ""},
		{"outside /etc", []schema.File{{Path: "/usr/x", Content: "x"}}, nil, 0, "not under /etc/"},
		{"dot-dot", []schema.File{{Path: "/etc/../x", Content: "x"}}, nil, 0, "not under /etc/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			err := writeFiles(dir, tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for rel, content := range tt.want {
				p := filepath.Join(dir, rel)
				b, err := os.ReadFile(p)
				if err != nil || string(b) != content {
					t.Fatalf("%s = %q, %v; want %q", rel, b, err, content)
				}
				if st, _ := os.Stat(p); st.Mode().Perm() != tt.mode {
					t.Fatalf("%s mode %v, want %v", rel, st.Mode().Perm(), tt.mode)
				}
			}
		})
	}
}
