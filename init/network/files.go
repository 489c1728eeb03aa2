//go:build linux

package network

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// MaxNameservers is how many nameservers the C resolvers read (MAXNS).
const MaxNameservers = 3

// maxSearch bounds the search list (glibc reads 6 domains since 2.26 more,
// but a longer list only slows lookups down).
const maxSearch = 6

// RenderResolvConf returns a resolv.conf listing the servers and search
// domains, deduplicated, at most MaxNameservers servers.
func RenderResolvConf(servers []netip.Addr, search []string) []byte {
	var b bytes.Buffer
	b.WriteString("# written by cairn\n")
	seen := map[netip.Addr]bool{}
	n := 0
	for _, s := range servers {
		if !s.IsValid() || seen[s] || n == MaxNameservers {
			continue
		}
		seen[s] = true
		n++
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if n == 0 {
		b.WriteString("# no DNS servers known yet\n")
	}
	if s := dedup(search, validDomain); len(s) > 0 {
		if len(s) > maxSearch {
			s = s[:maxSearch]
		}
		fmt.Fprintf(&b, "search %s\n", strings.Join(s, " "))
	}
	return b.Bytes()
}

// RenderHosts returns an /etc/hosts naming localhost and the machine: its
// name goes with its addresses, or with 127.0.1.1 while it has none (as
// Debian does, so that the name always resolves).
func RenderHosts(hostname string, addrs []netip.Addr) []byte {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname == "" || !validHostname(hostname) {
		return b.Bytes()
	}
	names := hostname
	if short, _, ok := strings.Cut(hostname, "."); ok {
		names += " " + short
	}
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !a.IsValid() || seen[a] || a.IsLoopback() {
			continue
		}
		seen[a] = true
		fmt.Fprintf(&b, "%s\t%s\n", a, names)
	}
	if len(seen) == 0 {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", names)
	}
	return b.Bytes()
}

func dedup(in []string, ok func(string) bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSuffix(s, ".")
		if s == "" || seen[s] || !ok(s) {
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// writeIfChanged replaces path with body atomically (temp file and rename in
// the same directory), unless it already holds body. Readers such as the
// container runtime copy the file, so a rename is safe.
func writeIfChanged(path string, body []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, body) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return false, fmt.Errorf("network: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return false, fmt.Errorf("network: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return false, fmt.Errorf("network: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("network: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("network: write %s: %w", path, err)
	}
	return true, nil
}
