package etc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMachineID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lib/cairn/machine-id")
	if _, ok := LoadMachineID(p); ok {
		t.Fatal("missing file loaded")
	}
	id, err := NewMachineID(bytes.NewReader(bytes.Repeat([]byte{0xff}, 16)))
	if err != nil || id != "ffffffffffff4fffbfffffffffffffff" || !ValidMachineID(id) {
		t.Fatalf("%q %v", id, err)
	}
	if err := SaveMachineID(p, id); err != nil {
		t.Fatal(err)
	}
	if got, ok := LoadMachineID(p); !ok || got != id {
		t.Fatalf("load: %q %v", got, ok)
	}
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("garbage"), 0o644)
	if _, ok := LoadMachineID(p); ok {
		t.Fatal("garbage accepted")
	}
	if err := SaveMachineID(p, "nope"); err == nil {
		t.Fatal("bad id saved")
	}
	if _, err := NewMachineID(strings.NewReader("short")); err == nil {
		t.Fatal("short random accepted")
	}
	a, _ := NewMachineID(nil)
	b, _ := NewMachineID(nil)
	if a == b || !ValidMachineID(a) {
		t.Fatalf("random ids %q %q", a, b)
	}
	for _, bad := range []string{"", "00000000000000000000000000000000", "ABCDEF00000000000000000000000000", "zz" + strings.Repeat("0", 30)} {
		if ValidMachineID(bad) {
			t.Errorf("ValidMachineID(%q)", bad)
		}
	}
}

func TestPopulate(t *testing.T) {
	etc := t.TempDir()
	skel := t.TempDir()
	os.MkdirAll(filepath.Join(skel, "ssh"), 0o755)
	os.WriteFile(filepath.Join(skel, "ssh/sshd_config"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(skel, "resolv.conf"), []byte("nameserver 10.0.2.3\n"), 0o644)
	os.Symlink("/run/x", filepath.Join(skel, "link"))
	err := Populate(Config{Dir: etc, Hostname: "node1", MachineID: "0123456789abcdef0123456789abcdef", Skeleton: skel})
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, want string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(etc, name))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v", name, b, err)
		}
	}
	check("hostname", "node1\n")
	check("machine-id", "0123456789abcdef0123456789abcdef\n")
	check("resolv.conf", "nameserver 10.0.2.3\n")
	check("ssh/sshd_config", "x")
	if l, _ := os.Readlink(filepath.Join(etc, "os-release")); l != "../usr/lib/os-release" {
		t.Errorf("os-release -> %q", l)
	}
	if l, _ := os.Readlink(filepath.Join(etc, "link")); l != "/run/x" {
		t.Errorf("link -> %q", l)
	}
	if st, _ := os.Stat(filepath.Join(etc, "ssh/sshd_config")); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	// Missing skeleton is fine.
	if err := Populate(Config{Dir: etc, Hostname: "a", MachineID: "0123456789abcdef0123456789abcdef", Skeleton: filepath.Join(skel, "nope")}); err != nil {
		t.Fatal(err)
	}
}
