package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cairn.dev/cairn/images/manifest"
)

// BuildTimeout bounds one `cairn build`.
const BuildTimeout = 15 * time.Minute

// Images builds OS images with the cairn binary, at most once per distinct
// build per test binary. Create one in TestMain and share it with the tests;
// it holds no package-level state:
//
//	var images *harness.Images
//
//	func TestMain(m *testing.M) {
//		images = harness.NewImages()
//		code := m.Run()
//		images.Close()
//		os.Exit(code)
//	}
//
//	func TestBoot(t *testing.T) {
//		img := images.Build(t, "testdata/hello.yaml")
//		vm := harness.Boot(t, harness.Options{Image: img, Direct: true})
//		...
//	}
//
// Images are built into a temp dir removed by Close. Tests must not write to
// the returned images: Boot works on a private copy.
type Images struct {
	mu     sync.Mutex
	dir    string
	dirErr error
	builds map[string]*build
}

type build struct {
	once sync.Once
	path string
	log  string
	err  error
}

// NewImages returns an empty image cache.
func NewImages() *Images { return &Images{builds: map[string]*build{}} }

// Close removes every built image.
func (im *Images) Close() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.dir == "" {
		return nil
	}
	err := os.RemoveAll(im.dir)
	im.dir = ""
	if err != nil {
		return fmt.Errorf("harness: remove images: %w", err)
	}
	return nil
}

func (im *Images) tempDir() (string, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.dir == "" && im.dirErr == nil {
		im.dir, im.dirErr = os.MkdirTemp("", "cairn-test-images-")
	}
	return im.dir, im.dirErr
}

// CairnBinary locates the cairn CLI: $CAIRN_BIN, else bin/cairn in the
// nearest directory above the working directory that has one (the Makefile
// builds it there; tests in qemu-tests/ find ../bin/cairn).
func CairnBinary() (string, error) {
	if p := os.Getenv("CAIRN_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("harness: CAIRN_BIN: %w", err)
		}
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "bin", "cairn")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil || filepath.Dir(d) == d {
			break // do not leave the module
		}
	}
	return "", errors.New("harness: cairn binary not found: run `make` (builds bin/cairn) or set CAIRN_BIN")
}

// Build returns the disk image built from osFile with
// `cairn build -o DIR [args...] osFile`, building it on first use. A failed
// build fails every test that asks for it, with the build log.
func (im *Images) Build(t testing.TB, osFile string, args ...string) string {
	t.Helper()
	abs, err := filepath.Abs(osFile)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	key := strings.Join(append([]string{abs}, args...), "\x00")
	im.mu.Lock()
	b := im.builds[key]
	if b == nil {
		b = &build{}
		im.builds[key] = b
	}
	im.mu.Unlock()
	b.once.Do(func() {
		start := time.Now()
		b.path, b.log, b.err = im.run(abs, key, args)
		if b.err == nil {
			t.Logf("harness: built %s in %s", b.path, time.Since(start).Round(time.Millisecond))
		}
	})
	if b.err != nil {
		t.Fatalf("harness: build %s: %v\n%s", osFile, b.err, b.log)
	}
	return b.path
}

func (im *Images) run(osFile, key string, args []string) (path, log string, err error) {
	bin, err := CairnBinary()
	if err != nil {
		return "", "", err
	}
	root, err := im.tempDir()
	if err != nil {
		return "", "", fmt.Errorf("temp dir: %w", err)
	}
	sum := sha256.Sum256([]byte(key))
	out := filepath.Join(root, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", "", fmt.Errorf("output dir: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
	defer cancel()
	cmdArgs := append(append([]string{"build", "-o", out}, args...), osFile)
	cmd := exec.CommandContext(ctx, bin, cmdArgs...)
	logb, err := cmd.CombinedOutput()
	log = string(logb)
	if err != nil {
		return "", log, fmt.Errorf("%s %s: %w", bin, strings.Join(cmdArgs, " "), err)
	}
	// The manifest names the disk image among the artifacts.
	ms, err := filepath.Glob(filepath.Join(out, "*.manifest.json"))
	if err != nil || len(ms) != 1 {
		return "", log, fmt.Errorf("want exactly one manifest in %s after the build, found %d (%v)", out, len(ms), err)
	}
	m, err := manifest.Read(ms[0])
	if err != nil {
		return "", log, err
	}
	for _, a := range m.Artifacts {
		if a.Kind == "disk" {
			return filepath.Join(out, a.Name), log, nil
		}
	}
	return "", log, fmt.Errorf("manifest %s lists no disk image", ms[0])
}
