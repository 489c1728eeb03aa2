package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cairn.dev/cairn/internal/testenv"
)

func TestSparseCopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	chunks := map[int64]string{0: "head", 4096: "block1", 100 << 20: "middle", size - 5: "tail!"}
	for off, s := range chunks {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for name, copyFn := range map[string]func(dst, src string) error{
		"seek data": SparseCopy,
		"zero skip": func(dst, src string) error {
			in, _ := os.Open(src)
			defer in.Close()
			out, _ := os.Create(dst)
			defer out.Close()
			if err := out.Truncate(size); err != nil {
				return err
			}
			return copySkippingZeros(out, in, size)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".img")
			if err := copyFn(dst, src); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(src)
			if !bytes.Equal(got, want) {
				t.Fatal("copy differs from source")
			}
			var st syscall.Stat_t
			if err := syscall.Stat(dst, &st); err != nil {
				t.Fatal(err)
			}
			if alloc := st.Blocks * 512; alloc > 16<<20 {
				t.Errorf("copy allocates %d bytes: holes not kept", alloc)
			}
		})
	}
	if err := SparseCopy(filepath.Join(dir, "x"), dir); err == nil {
		t.Error("copying a directory succeeded")
	}
	if err := SparseCopy(filepath.Join(dir, "x"), filepath.Join(dir, "missing")); err == nil {
		t.Error("copying a missing file succeeded")
	}
}

// recTB records fatal failures instead of failing the real test.
type recTB struct {
	testing.TB
	mu     sync.Mutex
	fatals []string
}

func (r *recTB) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recTB) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// call runs f like a test body: Fatal ends f, not the caller.
func (r *recTB) call(f func()) {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	<-done
}

func fakeCairn(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cairn")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImagesBuildOnce(t *testing.T) {
	count := filepath.Join(t.TempDir(), "count")
	// args: build -o DIR [extra] FILE
	t.Setenv("CAIRN_BIN", fakeCairn(t, `echo "$@" >> `+count+`
[ "$1" = build ] && [ "$2" = -o ] || exit 3
eval last=\${$#}
case "$last" in *bad.yaml) echo "boom: bad OS file" >&2; exit 1;; esac
name=$(basename "$last" .yaml)
touch "$3/$name.img" "$3/$name.root.erofs"
echo '{"artifacts":[{"name":"'$name'.root.erofs","kind":"root"},{"name":"'$name'.img","kind":"disk"}]}' > "$3/$name.manifest.json"
`))
	im := NewImages()
	defer im.Close()
	var paths []string
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := im.Build(t, "testdata/hello.yaml")
			mu.Lock()
			paths = append(paths, p)
			mu.Unlock()
		}()
	}
	wg.Wait()
	other := im.Build(t, "testdata/hello.yaml", "--version", "2")
	for _, p := range paths {
		if p != paths[0] || filepath.Base(p) != "hello.img" {
			t.Fatalf("paths %v", paths)
		}
	}
	if other == paths[0] {
		t.Error("builds with different args share an image")
	}
	log, _ := os.ReadFile(count)
	if n := strings.Count(string(log), "\n"); n != 2 {
		t.Errorf("cairn ran %d times, want 2:\n%s", n, log)
	}
	if !strings.Contains(string(log), "--version 2 ") {
		t.Errorf("extra args not passed: %s", log)
	}

	r := &recTB{TB: t}
	for range 2 {
		r.call(func() { im.Build(r, "testdata/bad.yaml") })
	}
	if len(r.fatals) != 2 || !strings.Contains(r.fatals[1], "boom: bad OS file") {
		t.Errorf("failed build reports: %q", r.fatals)
	}
	log, _ = os.ReadFile(count)
	if n := strings.Count(string(log), "bad.yaml"); n != 1 {
		t.Errorf("failed build ran %d times, want 1", n)
	}
	dir := im.dir
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", dir, err)
	}
}

func TestCairnBinaryMissing(t *testing.T) {
	t.Setenv("CAIRN_BIN", filepath.Join(t.TempDir(), "nope"))
	if _, err := CairnBinary(); err == nil {
		t.Fatal("missing CAIRN_BIN accepted")
	}
	t.Setenv("CAIRN_BIN", "")
	t.Chdir(t.TempDir())
	if _, err := CairnBinary(); err == nil || !strings.Contains(err.Error(), "make") {
		t.Fatalf("err = %v", err)
	}
}

// needKernel returns the pinned Debian kernel, fetched and extracted into
// the cache by testenv when missing.
func needKernel(t *testing.T) string {
	t.Helper()
	return testenv.Artifacts(t).Vmlinuz
}

func TestSmokeHarnessKernelPanic(t *testing.T) {
	RequireQEMU(t)
	kernel := needKernel(t)
	vm := Boot(t, Options{Kernel: kernel, Append: "console=ttyS0 panic=-1", NoReboot: true})
	vm.Expect(t, "Linux version 6.1", time.Minute)
	m := vm.ExpectRegexp(t, regexp.MustCompile(`VFS: Unable to mount root fs on (\S+)`), 90*time.Second)
	if m[1] != "unknown-block(0,0)" {
		t.Errorf("submatch %q", m[1])
	}
	if err := vm.WaitExit(t, time.Minute); err != nil {
		t.Fatalf("exit: %v", err)
	}

	// A failing expectation reports the console tail.
	r := &recTB{TB: t}
	r.call(func() { vm.Expect(r, "CAIRN-READY", 5*time.Second) })
	if len(r.fatals) != 1 || !strings.Contains(r.fatals[0], "console closed") ||
		!strings.Contains(r.fatals[0], "Kernel panic") || !strings.Contains(r.fatals[0], "last 60 console lines") {
		t.Errorf("failure report: %q", r.fatals)
	}

	// Restart boots the same configuration again.
	vm.Restart(t)
	vm.Expect(t, "Linux version 6.1", time.Minute)
	st := vm.QMP(t, "query-status", nil)
	if !strings.Contains(string(st), "running") {
		t.Errorf("query-status: %s", st)
	}
}

func TestSmokeHarnessOVMFOverlay(t *testing.T) {
	RequireQEMU(t)
	img := filepath.Join(t.TempDir(), "blank.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	for _, overlay := range []bool{false, true} {
		t.Run(fmt.Sprintf("overlay=%v", overlay), func(t *testing.T) {
			vm := Boot(t, Options{Image: img, Overlay: overlay})
			if vm.Disk() == img {
				t.Fatal("VM uses the shared image")
			}
			vm.Expect(t, "BdsDxe", 3*time.Minute)
			vm.QMP(t, "quit", nil)
			if err := vm.WaitExit(t, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(vm.VarsFile()); err != nil {
				t.Errorf("vars file: %v", err)
			}
		})
	}
}
