//go:build linux

package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestRenderResolvConf(t *testing.T) {
	tests := []struct {
		name    string
		servers []netip.Addr
		search  []string
		want    string
	}{
		{name: "none", want: "# written by cairn\n# no DNS servers known yet\n"},
		{name: "one", servers: addrs("10.0.2.3"), want: "# written by cairn\nnameserver 10.0.2.3\n"},
		{name: "dedup and cap", servers: addrs("1.1.1.1", "10.0.2.3", "1.1.1.1", "fd00::1", "8.8.8.8"), search: []string{"a.example.", "b.example", "a.example", "bad domain"},
			want: "# written by cairn\nnameserver 1.1.1.1\nnameserver 10.0.2.3\nnameserver fd00::1\nsearch a.example b.example\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(RenderResolvConf(tt.servers, tt.search)); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRenderHosts(t *testing.T) {
	const base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	tests := []struct {
		name, host string
		addrs      []netip.Addr
		want       string
	}{
		{name: "no address yet", host: "hello", want: base + "127.0.1.1\thello\n"},
		{name: "lease", host: "hello", addrs: addrs("10.0.2.15"), want: base + "10.0.2.15\thello\n"},
		{name: "fqdn and several", host: "web.example.com", addrs: addrs("10.0.2.15", "10.0.2.15", "fd00::5", "127.0.0.1"),
			want: base + "10.0.2.15\tweb.example.com web\nfd00::5\tweb.example.com web\n"},
		{name: "no name", host: "", addrs: addrs("10.0.2.15"), want: base},
		{name: "bad name", host: "bad name\n10.0.0.1 evil", want: base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(RenderHosts(tt.host, tt.addrs)); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestWriteIfChanged(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	for i, tt := range []struct {
		body    string
		changed bool
	}{{"a\n", true}, {"a\n", false}, {"b\n", true}} {
		changed, err := writeIfChanged(p, []byte(tt.body))
		if err != nil || changed != tt.changed {
			t.Fatalf("step %d: changed=%v err=%v, want %v", i, changed, err, tt.changed)
		}
		if b, _ := os.ReadFile(p); string(b) != tt.body {
			t.Fatalf("step %d: file %q", i, b)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
	if _, err := writeIfChanged(filepath.Join(t.TempDir(), "no", "dir"), nil); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
