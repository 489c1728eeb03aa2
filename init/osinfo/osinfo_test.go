package osinfo

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	i, err := Parse([]byte("name: edge\nversion: 1.0.0\nkernel: {modules: [veth]}\n"))
	if err != nil || i.Name != "edge" || i.Version != "1.0.0" || i.Hostname != "edge" {
		t.Fatalf("%+v %v", i, err)
	}
	i, err = Parse([]byte("name: edge\nhostname: node-1.example\n"))
	if err != nil || i.Hostname != "node-1.example" {
		t.Fatalf("%+v %v", i, err)
	}
	for _, bad := range []string{"name: [", "hostname: -bad", "hostname: UPPER", "hostname: " + strings.Repeat("a", 65), "hostname: a..b", strings.Repeat("#", maxSize+1)} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%.30q) accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("name: edge\nhostname: a.b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		i, err := Parse(b)
		if err == nil && i.Hostname != "" && !ValidHostname(i.Hostname) {
			t.Fatalf("bad hostname %q", i.Hostname)
		}
	})
}
