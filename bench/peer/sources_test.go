package peer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

const hostDeb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestParseDeb822(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // URI|suites|components
		wantErr string
	}{
		{"host", hostDeb822, []string{
			"http://deb.debian.org/debian|bookworm bookworm-updates|main",
			"http://deb.debian.org/debian-security|bookworm-security|main"}, ""},
		{"disabled", "Enabled: no\nTypes: deb\nURIs: http://a/\nSuites: x\n", nil, ""},
		{"deb-src only", "Types: deb-src\nURIs: http://a/\nSuites: x\n", nil, ""},
		{"continuation", "Types: deb\nURIs: http://a/\n http://b/\nSuites: s\nComponents: main\n", []string{"http://a/|s|main", "http://b/|s|main"}, ""},
		{"no types", "URIs: http://a/\nSuites: x\n", nil, "x.sources:1: stanza has no Types field"},
		{"no uris", "\n\nTypes: deb\nSuites: x\n", nil, "x.sources:3: field URIs: missing"},
		{"no suites", "Types: deb\nURIs: http://a/\n", nil, "x.sources:1: field Suites: missing"},
		{"bad uri", "Types: deb\nURIs: ftp://a/\nSuites: x\n", nil, "x.sources:1: field URIs"},
		{"shell chars", "Types: deb\nURIs: http://a/$(x)\nSuites: x\n", nil, "invalid character"},
		{"stray continuation", " foo\n", nil, "x.sources:1: continuation line"},
		{"no colon", "Types deb\n", nil, "x.sources:1: want \"Field: value\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDeb822("x.sources", []byte(tc.in))
			checkSources(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestParseOneLine(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{"google", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n", []string{"https://packages.cloud.google.com/apt|cloud-sdk-bookworm|main"}, ""},
		{"options", "deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib # c\n", []string{"http://m/debian|bookworm|main contrib"}, ""},
		{"comments and src", "# x\n\ndeb-src http://m/ bookworm main\n", nil, ""},
		{"unclosed options", "deb [arch=amd64 http://m/ bookworm main\n", nil, "x.list:1: options"},
		{"bad type", "\ndebx http://m/ bookworm\n", nil, "x.list:2: type \"debx\""},
		{"no suite", "deb http://m/\n", nil, "x.list:1: want URI and suite"},
		{"bad uri", "deb m bookworm main\n", nil, "x.list:1: URI"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOneLine("x.list", []byte(tc.in))
			checkSources(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func checkSources(t *testing.T, got []Source, err error, want []string, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want it to contain %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var g []string
	for _, s := range got {
		g = append(g, s.URI+"|"+strings.Join(s.Suites, " ")+"|"+strings.Join(s.Components, " "))
	}
	if !slices.Equal(g, want) {
		t.Fatalf("got %q, want %q", g, want)
	}
}

func TestReadHostSourcesAndPick(t *testing.T) {
	root := t.TempDir()
	d := filepath.Join(root, "etc/apt/sources.list.d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]string{
		"../sources.list": "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
		"debian.sources":  hostDeb822,
		"ignored.txt":     "garbage",
	} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srcs, err := ReadHostSources(root)
	if err != nil {
		t.Fatal(err)
	}
	m, err := PickMirrors(srcs, "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	want := Mirrors{Main: "http://deb.debian.org/debian", Updates: "http://deb.debian.org/debian", Security: "http://deb.debian.org/debian-security"}
	if m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
	if got := m.SourcesList("bookworm"); !strings.Contains(got, "deb http://deb.debian.org/debian-security bookworm-security main\n") {
		t.Fatalf("sources.list %q", got)
	}
	if _, err := PickMirrors(srcs[:1], "bookworm"); err == nil {
		t.Fatal("no error without a bookworm mirror")
	}
}

func FuzzParseSources(f *testing.F) {
	f.Add([]byte(hostDeb822))
	f.Add([]byte("deb [a=b] http://m/ bookworm main\n"))
	f.Add([]byte(" \n\tx\nTypes: deb\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func(string, []byte) ([]Source, error){ParseOneLine, ParseDeb822} {
			srcs, err := parse("f", b)
			if err != nil {
				continue
			}
			for _, s := range srcs {
				if checkURI(s.URI) != nil || len(s.Suites) == 0 {
					t.Fatalf("accepted bad source %+v", s)
				}
			}
			m, err := PickMirrors(srcs, "bookworm")
			if err == nil && strings.Count(m.SourcesList("bookworm"), "\n") > 3 {
				t.Fatalf("sources.list with injected lines: %q", m.SourcesList("bookworm"))
			}
		}
	})
}

func TestReadKernelPin(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	for _, tc := range []struct{ in, want, wantErr string }{
		{"# c\nlinux-image-6.1.0-56-cloud-amd64 6.1.192-2 e7d0\nsystemd-boot-efi 1 2\n", "linux-image-6.1.0-56-cloud-amd64 6.1.192-2 e7d0", ""},
		{"linux-image-x 1\n", "", "lock:1: want"},
		{"systemd-boot-efi 1 2\n", "", "no linux-image- line"},
	} {
		if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		k, err := ReadKernelPin(p)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("%q: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || k.Name+" "+k.Version+" "+k.SHA256 != tc.want {
			t.Fatalf("%q: got %+v, %v", tc.in, k, err)
		}
		if k.KernelRelease() != "6.1.0-56-cloud-amd64" {
			t.Fatalf("release %q", k.KernelRelease())
		}
	}
}

func TestWriteImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("not really a binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	d1, err := WriteImage(bin, Containers[0], filepath.Join(dir, "a.tar"))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := WriteImage(bin, Containers[0], filepath.Join(dir, "b.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatalf("not reproducible: %s vs %s", d1, d2)
	}
	if err := os.WriteFile(bin, []byte("another binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	d3, err := WriteImage(bin, Containers[0], filepath.Join(dir, "c.tar"))
	if err != nil || d3 == d1 {
		t.Fatalf("digest %s after a change (was %s), %v", d3, d1, err)
	}
}

func TestRootFiles(t *testing.T) {
	f := rootFiles(Mirrors{Main: "http://m/debian"})
	for _, p := range []string{"etc/initramfs-tools/scripts/init-top/00-cairn-bench", "etc/systemd/system/web.service",
		"etc/systemd/system/cairn-peer-warmup.service", "etc/fstab", "etc/apt/sources.list",
		strings.TrimPrefix(warmStamp, "/")} {
		if _, ok := f[p]; !ok {
			t.Errorf("no %s", p)
		}
	}
	for p, text := range f {
		if strings.Contains(p, "meminfo") || strings.Contains(text, "meminfo") {
			t.Errorf("%s: the meminfo probe is gone (the web example serves /meminfo)", p)
		}
	}
	if !strings.HasPrefix(f["etc/initramfs-tools/scripts/init-top/00-cairn-bench"], "#!") {
		t.Error("the early hook is not a script")
	}
	web := f["etc/systemd/system/web.service"]
	for _, want := range []string{"-p 8080:8080", "-e GREETING=hi --memory 64m --pids-limit 64 localhost/web:latest", "--pull=never", "Type=notify"} {
		if !strings.Contains(web, want) {
			t.Errorf("web.service lacks %q:\n%s", want, web)
		}
	}
}

func TestCacheKey(t *testing.T) {
	m := Mirrors{Main: "http://m/debian"}
	pin := KernelPin{Name: "linux-image-x", Version: "1", SHA256: "ab"}
	d := map[string]string{"web": "sha256:1"}
	k := cacheKey(m, pin, d)
	if k != cacheKey(m, pin, map[string]string{"web": "sha256:1"}) {
		t.Fatal("key not stable")
	}
	for name, k2 := range map[string]string{
		"mirror": cacheKey(Mirrors{Main: "http://other/debian"}, pin, d),
		"kernel": cacheKey(m, KernelPin{Name: "linux-image-x", Version: "2", SHA256: "ab"}, d),
		"image":  cacheKey(m, pin, map[string]string{"web": "sha256:3"}),
	} {
		if k2 == k {
			t.Errorf("key ignores the %s", name)
		}
	}
}

func TestPollHTTP(t *testing.T) {
	// A listener that accepts but never answers, like QEMU's forwarded port
	// before the guest listens, must not hold the poll up once the real
	// server answers.
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			<-r.Context().Done() // hang like a guest that is not up yet
			return
		}
		fmt.Fprintln(w, "hi")
	}))
	defer srv.Close()
	done := make(chan error, 1)
	go func() {
		_, err := PollHTTP(context.Background(), srv.URL)
		done <- err
	}()
	ready.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := PollHTTP(ctx, "http://127.0.0.1:1/"); err == nil {
		t.Fatal("no error after cancel")
	}
}
