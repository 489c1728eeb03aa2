package qemutests

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/disk"
)

// requireTool skips when a host tool is missing, except in CI where the
// Makefile installs it and its absence is a setup bug.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func partition(t *testing.T, img, label string) disk.Partition {
	t.Helper()
	l, err := disk.ReadLayout(img)
	if err != nil {
		t.Fatalf("read GPT of %s: %v", img, err)
	}
	p, ok := l.Partition(label)
	if !ok {
		t.Fatalf("%s has no %s partition: %+v", img, label, l)
	}
	return p
}

// extract copies a partition into its own sparse file, for tools that
// cannot take an offset (fsck.fat).
func extract(t *testing.T, img string, p disk.Partition) string {
	t.Helper()
	in, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), p.Label+".img")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := out.Truncate(p.Size); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	r := io.NewSectionReader(in, p.Offset, p.Size)
	for off := int64(0); off < p.Size; {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				t.Fatal(werr)
			}
		}
		off += int64(n)
		if err != nil {
			break
		}
	}
	return dst
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// checkDisk runs the standard tools over a disk image: sgdisk -v on the
// GPT, fsck.fat -n on the ESP and e2fsck -fn on STATE. All must be clean.
func checkDisk(t *testing.T, img string) {
	t.Helper()
	requireTool(t, "sgdisk")
	requireTool(t, "fsck.fat")
	requireTool(t, "e2fsck")
	if out, err := run(t, "sgdisk", "-v", img); err != nil || !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s: %v\n%s", img, err, out)
	}
	esp := extract(t, img, partition(t, img, disk.LabelESP))
	if out, err := run(t, "fsck.fat", "-n", esp); err != nil {
		t.Errorf("fsck.fat -n on the ESP: %v\n%s", err, out)
	}
	if out, err := run(t, "e2fsck", "-fn", stateDev(t, img)); err != nil {
		t.Errorf("e2fsck -fn on STATE: %v\n%s", err, out)
	}
}

// stateDev names the STATE file system inside img for e2fsprogs, which
// accept "FILE?offset=N".
func stateDev(t *testing.T, img string) string {
	return fmt.Sprintf("%s?offset=%d", img, partition(t, img, disk.LabelState).Offset)
}

// stateFile reads a file from STATE with debugfs.
func stateFile(t *testing.T, img, path string) string {
	t.Helper()
	requireTool(t, "debugfs")
	out, err := exec.Command("debugfs", "-R", "cat "+path, stateDev(t, img)).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}
