package bake

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log"
	"strings"
	"testing"

	"cairn.dev/cairn/os/schema"
)

func nullLogger() *log.Logger { return log.New(io.Discard, "", 0) }

func mustOS(t *testing.T) *schema.OS {
	t.Helper()
	return &schema.OS{
		Source: "x/os.yaml",
		Services: map[string]schema.Service{
			"z": {Image: "oci-layout:c"},
			"a": {Image: "go://./a"},
			"b": {Image: "reg.example/b:1", PullPolicy: "build"},
			"c": {Image: "reg.example/pulled:1", PullPolicy: "missing"},
			"d": {Image: "go://./a"},
		},
		Onboot: []schema.Onboot{{Name: "x", Image: "reg.example/at-boot", PullPolicy: "always"}, {Name: "y", Image: "go://./a"}},
	}
}

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		kind    Kind
		path    string
		name    string
		wantErr bool
	}{
		{in: "go://./os/examples/hello-web", kind: KindGo, path: "./os/examples/hello-web"},
		{in: "go://example.com/cmd/tool", kind: KindGo, path: "example.com/cmd/tool"},
		{in: "go://example.com/tool/v2", kind: KindGo, path: "example.com/tool/v2"},
		{in: "oci-layout:img", kind: KindOCILayout, path: "img"},
		{in: "docker-archive:../a.tar", kind: KindDockerArchive, path: "../a.tar"},
		{in: "alpine", kind: KindRegistry, name: "index.docker.io/library/alpine:latest"},
		{in: "127.0.0.1:5000/a/b:v1", kind: KindRegistry, name: "127.0.0.1:5000/a/b:v1"},
		{in: "ghcr.io/x/y@sha256:" + string(bytes.Repeat([]byte("a"), 64)), kind: KindRegistry, name: "ghcr.io/x/y@sha256:" + string(bytes.Repeat([]byte("a"), 64))},
		{in: "", wantErr: true},
		{in: "go://", wantErr: true},
		{in: "go://-toolexec=x", wantErr: true},
		{in: "go://./...", wantErr: true},
		{in: "go://../x", wantErr: true},
		{in: "go:///abs", wantErr: true},
		{in: "go://.", wantErr: true},
		{in: "oci-layout:", wantErr: true},
		{in: "docker-archive:", wantErr: true},
		{in: "http://x/y", wantErr: true},
		{in: "UPPER/case", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "x@sha256:short", wantErr: true},
	}
	for _, tc := range tests {
		r, err := ParseRef(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseRef(%q) = %+v, want an error", tc.in, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRef(%q): %v", tc.in, err)
			continue
		}
		got := ""
		if r.Name != nil {
			got = r.Name.Name()
		}
		if r.Kind != tc.kind || r.Path != tc.path || got != tc.name || r.Raw != tc.in {
			t.Errorf("ParseRef(%q) = %v %q %q, want %v %q %q", tc.in, r.Kind, r.Path, got, tc.kind, tc.path, tc.name)
		}
	}
}

func TestBinaryName(t *testing.T) {
	for in, want := range map[string]string{
		"./os/examples/hello-web": "hello-web", "example.com/tool/v2": "tool", "./cmd/x/": "x", "v2": "v2",
	} {
		if got := binaryName(in); got != want {
			t.Errorf("binaryName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"go://./x", "oci-layout:d", "docker-archive:f", "alpine:3", "a/b@sha256:00", "go://-x", "::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.Raw != s || r.Kind < KindGo || r.Kind > KindRegistry {
			t.Fatalf("ParseRef(%q) = %+v", s, r)
		}
		if r.Kind == KindGo && (binaryName(r.Path) == "" || r.Path[0] == '-') {
			t.Fatalf("ParseRef(%q) accepted package %q", s, r.Path)
		}
	})
}

// FuzzLayerCheck feeds arbitrary bytes to the layer checker as a tar
// stream: it must return, never panic.
func FuzzLayerCheck(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
		{Name: "a/.wh.x", Typeflag: tar.TypeReg},
		{Name: "h", Typeflag: tar.TypeLink, Linkname: "a/f"},
		{Name: "s/x", Typeflag: tar.TypeReg},
	} {
		_ = tw.WriteHeader(h)
	}
	_ = tw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 1024))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := newLayerChecker()
		_ = c.check(context.Background(), bytes.NewReader(b))
		for s := range c.symlinks {
			if s == "" || s[0] == '/' {
				t.Fatalf("symlink path %q", s)
			}
		}
	})
}

func TestBakeErrorNamesField(t *testing.T) {
	o := &schema.OS{
		Source:   "dir/os.yaml",
		Services: map[string]schema.Service{"web": {Image: "oci-layout:missing"}},
		Onboot:   []schema.Onboot{{Name: "x", Image: "go://-bad"}},
	}
	_, err := Bake(context.Background(), o, Options{WorkDir: t.TempDir(), CacheDir: t.TempDir()})
	if err == nil || !strings.HasPrefix(err.Error(), "dir/os.yaml: onboot[0].image: ") {
		t.Errorf("err = %v", err)
	}
	o.Onboot = nil
	_, err = Bake(context.Background(), o, Options{WorkDir: t.TempDir(), CacheDir: t.TempDir()})
	if err == nil || !strings.HasPrefix(err.Error(), `dir/os.yaml: services.web.image: image "oci-layout:missing": read OCI layout dir/missing`) {
		t.Errorf("err = %v", err)
	}
}
