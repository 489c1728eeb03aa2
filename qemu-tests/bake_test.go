package qemutests

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/qemu-tests/harness"
	"github.com/erofs/go-erofs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const webOS = "../os/examples/web.yaml"

// TestBuildWebBakedImages builds os/examples/web.yaml twice with the same
// SOURCE_DATE_EPOCH: the artifacts are byte-identical, and the erofs root
// holds the OCI layout of the go:// image with its flattened tree, as the
// supervisor in PID 1 expects it (see images/bake).
func TestBuildWebBakedImages(t *testing.T) {
	t.Parallel()
	bin, err := harness.CairnBinary()
	if err != nil {
		t.Fatal(err)
	}
	var ms []*manifest.Manifest
	var outs []string
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(bin, "build", "-o", out, webOS)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %d: %v\n%s", i, err, b)
		}
		m, err := manifest.Read(filepath.Join(out, "web.manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		ms, outs = append(ms, m), append(outs, out)
	}
	for i, a := range ms[0].Artifacts {
		if b := ms[1].Artifacts[i]; a != b {
			t.Errorf("artifact differs between builds: %+v vs %+v", a, b)
		}
	}
	if len(ms[0].Images) != 1 {
		t.Fatalf("manifest images = %+v", ms[0].Images)
	}
	baked := ms[0].Images[0]
	if baked.Ref != "go://./os/examples/hello-web" || !strings.HasPrefix(baked.Digest, "sha256:") || baked.Size <= 0 ||
		baked.Rootfs != "rootfs/"+strings.TrimPrefix(baked.Digest, "sha256:") || baked.RootfsSize <= 0 {
		t.Fatalf("manifest image = %+v", baked)
	}

	f, err := os.Open(filepath.Join(outs[0], "web.root.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root, err := erofs.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	const dir = "usr/share/cairn/images"
	b, err := fs.ReadFile(root, dir+"/index.json")
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %s", b)
	}
	d := idx.Manifests[0]
	if d.Digest.String() != baked.Digest || d.Annotations["org.opencontainers.image.ref.name"] != baked.Ref ||
		d.Annotations["dev.cairn.rootfs"] != baked.Rootfs {
		t.Fatalf("index.json descriptor: %+v", d)
	}
	if _, err := fs.Stat(root, dir+"/blobs/sha256/"+d.Digest.Hex); err != nil {
		t.Errorf("manifest blob: %v", err)
	}
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{
		{"hello-web", 0o755},
		{"etc/passwd", 0o644},
		{"etc", fs.ModeDir | 0o755},
	} {
		fi, err := fs.Stat(root, dir+"/"+baked.Rootfs+"/"+c.path)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		st, _ := fi.Sys().(*erofs.Stat)
		if st == nil || st.Mode != c.mode || st.UID != 0 || st.GID != 0 {
			t.Errorf("%s: %+v, want 0:0 %v", c.path, st, c.mode)
		}
	}
	// The standard tool agrees that the root is sound.
	if fsck, err := exec.LookPath("fsck.erofs"); err == nil {
		if b, err := exec.Command(fsck, filepath.Join(outs[0], "web.root.erofs")).CombinedOutput(); err != nil {
			t.Errorf("fsck.erofs: %v\n%s", err, b)
		}
	}
}
