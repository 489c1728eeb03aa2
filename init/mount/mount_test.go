package mount

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRemoveSameDev(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"a/b/c", "keep/x", "d"} {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc", filepath.Join(root, "a/link")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		t.Fatal(err)
	}
	if err := RemoveSameDev(root, st.Dev, filepath.Join(root, "keep")); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 || ents[0].Name() != "keep" {
		t.Fatalf("left: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(root, "keep/x/f")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/hostname"); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// Another device number: nothing is removed.
	if err := RemoveSameDev(root, st.Dev+1, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "keep/x/f")); err != nil {
		t.Fatal("removed across devices")
	}
}

func TestIsMountpoint(t *testing.T) {
	if ok, err := IsMountpoint("/"); err != nil || !ok {
		t.Fatalf("/: %v %v", ok, err)
	}
	if ok, err := IsMountpoint(t.TempDir()); err != nil || ok {
		t.Fatalf("tempdir: %v %v", ok, err)
	}
}
