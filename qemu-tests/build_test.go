package qemutests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/qemu-tests/harness"
)

// TestFreshImageChecks runs the standard tools over an image just built:
// the GPT, the ESP and the empty STATE must all be clean.
func TestFreshImageChecks(t *testing.T) {
	t.Parallel()
	img := images.Build(t, helloOS)
	checkDisk(t, img)
}

// TestBuildReproducible builds the same OS file twice with the same
// SOURCE_DATE_EPOCH into two directories: every artifact must be
// byte-identical.
func TestBuildReproducible(t *testing.T) {
	t.Parallel()
	bin, err := harness.CairnBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ms []*manifest.Manifest
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(bin, "build", "-o", out, helloOS)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, b)
		}
		m, err := manifest.Read(filepath.Join(out, "hello.manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	if len(ms[0].Artifacts) < 4 {
		t.Fatalf("manifest lists %d artifacts: %+v", len(ms[0].Artifacts), ms[0].Artifacts)
	}
	for i, a := range ms[0].Artifacts {
		if b := ms[1].Artifacts[i]; a != b {
			t.Errorf("artifact differs between builds: %+v vs %+v", a, b)
		}
	}
}

// TestBuildRejectsBadYAML: cairn build and cairn validate name the file, the
// line, the column and the field of a mistake, and build writes nothing.
func TestBuildRejectsBadYAML(t *testing.T) {
	t.Parallel()
	bin, err := harness.CairnBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: bad\nversion: 1.0.0\nkernel:\n  flavour: cloud-amd64\n  modulez: [vfat]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := bad + ":5:3: kernel.modulez: unknown field"
	out := filepath.Join(dir, "out")
	for _, args := range [][]string{{"build", "-o", out, bad}, {"validate", bad}} {
		b, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("cairn %s succeeded on a bad file", args[0])
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("cairn %s printed %q, want it to contain %q", args[0], b, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("build of a bad file created %s", out)
	}
}
