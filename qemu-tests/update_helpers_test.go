package qemutests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/update/repo"
)

// front is what the test puts in front of the update server: it can serve
// the repository paths (metadata/, targets/, chunks/) from another
// directory (a hostile copy), and hold the root image's download at a
// byte offset (a power cut lands mid-write).
type front struct {
	mu   sync.Mutex
	dir  string // "": the server's own repository
	gate *rootGate
}

// rootGate stops a root image download after at bytes.
type rootGate struct {
	at      int64
	reached chan struct{}
	once    sync.Once
}

// serveFrom serves the repository paths from dir ("" for the real one).
func (e *updateEnv) serveFrom(dir string) {
	e.front.mu.Lock()
	e.front.dir = dir
	e.front.mu.Unlock()
}

// holdRoot makes root image downloads stop after at bytes (a negative at
// removes the gate); the channel is closed when a download reaches it.
func (e *updateEnv) holdRoot(at int64) <-chan struct{} {
	e.front.mu.Lock()
	defer e.front.mu.Unlock()
	if at < 0 {
		e.front.gate = nil
		return nil
	}
	e.front.gate = &rootGate{at: at, reached: make(chan struct{})}
	return e.front.gate.reached
}

func isRepoPath(p string) bool {
	return strings.HasPrefix(p, "/metadata/") || strings.HasPrefix(p, "/targets/") || strings.HasPrefix(p, "/chunks/")
}

// handler is the update server behind the front.
func (e *updateEnv) handler() http.Handler {
	next := e.srv.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.front.mu.Lock()
		dir, gate := e.front.dir, e.front.gate
		e.front.mu.Unlock()
		p := path.Clean("/" + r.URL.Path)
		if gate != nil && r.Method == http.MethodGet && strings.HasPrefix(p, "/targets/") && strings.HasSuffix(p, ".root.erofs") {
			base := dir
			if base == "" {
				base = e.repo
			}
			gate.serve(w, r, filepath.Join(base, filepath.FromSlash(p)))
			return
		}
		if dir != "" && isRepoPath(p) {
			http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// serve sends the first g.at bytes of the file, then holds the connection
// until the client goes away (the VM is killed).
func (g *rootGate) serve(w http.ResponseWriter, r *http.Request, file string) {
	f, err := os.Open(file)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = io.CopyN(w, f, min(g.at, fi.Size()))
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	g.once.Do(func() { close(g.reached) })
	<-r.Context().Done()
}

// copyRepo copies a repository directory (hard links for the immutable
// targets and chunks, copies for metadata, which the test may change).
func copyRepo(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, data, 0o644)
	})
	if err != nil {
		t.Fatalf("copy repository: %v", err)
	}
	return dst
}

// repoTarget returns the path of the one file below dir/targets whose name
// ends in suffix.
func repoTarget(t *testing.T, dir, suffix string) string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(filepath.Join(dir, "targets"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, suffix) {
			found = append(found, p)
		}
		return err
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("targets ending in %s below %s: %v %v", suffix, dir, found, err)
	}
	return found[0]
}

// publishTo publishes a manifest into a repository directory.
func (e *updateEnv) publishTo(dir, manifest string, opts repo.PublishOptions) {
	e.t.Helper()
	if opts.Channel == "" {
		opts.Channel = "stable"
	}
	if _, err := repo.Publish(context.Background(), dir, e.keys, manifest, opts); err != nil {
		e.t.Fatalf("publish %s to %s: %v", manifest, dir, err)
	}
}

// corruptSignature flips one hex digit of the first signature of a
// metadata file.
func corruptSignature(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Signed     json.RawMessage  `json:"signed"`
		Signatures []map[string]any `json:"signatures"`
	}
	if err := json.Unmarshal(data, &m); err != nil || len(m.Signatures) == 0 {
		t.Fatalf("%s: %v (%d signatures)", file, err, len(m.Signatures))
	}
	sig, _ := m.Signatures[0]["sig"].(string)
	if sig == "" {
		t.Fatalf("%s: no sig", file)
	}
	flip := byte('0')
	if sig[0] == '0' {
		flip = '1'
	}
	m.Signatures[0]["sig"] = string(flip) + sig[1:]
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// partBytes reads the first n bytes of a partition of a disk image.
func partBytes(t *testing.T, img, label string, n int64) []byte {
	t.Helper()
	p := partition(t, img, label)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, min(n, p.Size))
	if _, err := f.ReadAt(buf, p.Offset); err != nil {
		t.Fatalf("read %s of %s: %v", label, img, err)
	}
	return buf
}

// espUKIs lists EFI/Linux on the ESP of a disk image (mtools).
func espUKIs(t *testing.T, img string) []string {
	t.Helper()
	requireTool(t, "mdir")
	p := partition(t, img, disk.LabelESP)
	out, err := exec.Command("mdir", "-b", "-i", fmt.Sprintf("%s@@%d", img, p.Offset), "::/EFI/Linux").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir EFI/Linux: %v\n%s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, path.Base(l))
		}
	}
	return names
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }

// fatCrashMarks are the only fsck.fat -n findings allowed after power
// cuts with the ESP mounted read-write: Linux sets the volume's dirty bit
// (byte 65 of the boot sector, so it differs from the backup) at mount and
// never clears it once it was found set, and the free-cluster hint of the
// FSInfo sector is only rewritten at unmount. Neither loses a file; any
// other line (a truncated or orphaned cluster chain, a bad directory
// entry) fails the test.
var fatCrashMarks = regexp.MustCompile(`^(fsck\.fat [0-9.]+ .*|There are differences between boot sector and its backup\.|This is mostly harmless\. Differences: \(offset:original/backup\)|65:01/00|Not automatically fixing this\.|Dirty bit is set\. Fs was not properly unmounted and some data may be corrupt\.|Automatically removing dirty bit\.|Free cluster summary wrong \(\d+ vs\. really \d+\)|Auto-correcting\.|Leaving filesystem unchanged\.|\S+: \d+ files, \d+/\d+ clusters)$`)

// checkDiskAfterPowerCuts is checkDisk for a disk whose ESP was mounted
// when the power was cut: sgdisk -v and e2fsck -fn must be clean, and
// fsck.fat -n may only report fatCrashMarks.
func checkDiskAfterPowerCuts(t *testing.T, img string) {
	t.Helper()
	requireTool(t, "sgdisk")
	requireTool(t, "fsck.fat")
	requireTool(t, "e2fsck")
	if out, err := run(t, "sgdisk", "-v", img); err != nil || !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s: %v\n%s", img, err, out)
	}
	if out, err := run(t, "e2fsck", "-fn", stateDev(t, img)); err != nil {
		t.Errorf("e2fsck -fn on STATE: %v\n%s", err, out)
	}
	out, err := run(t, "fsck.fat", "-n", extract(t, img, partition(t, img, disk.LabelESP)))
	if err == nil {
		return
	}
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !fatCrashMarks.MatchString(l) {
			t.Errorf("fsck.fat -n on the ESP: %v: %q\n%s", err, l, out)
			return
		}
	}
	t.Logf("fsck.fat -n on the ESP: only the marks of a power cut:\n%s", out)
}

// withWebService adds a service with an HTTP health check to the OS file
// at p (written by osFile): hello-web, built from Go source and baked into
// the root by cairn build, answering /healthz with 200, or with 503 when
// healthy is false (HEALTHY=false), so that a trial of that version fails
// at its health stage. The check is quick (1 s interval, 3 s start period)
// so that a trial can pass within the OS file's trial.timeout.
func (e *updateEnv) withWebService(p string, healthy bool) string {
	e.t.Helper()
	e.goModule()
	svc := fmt.Sprintf(`services:
  web:
    image: go://./os/examples/hello-web
    command: ["-listen", ":8080"]
    environment: {HEALTHY: %q}
    restart: always
    healthcheck: {http: "http://127.0.0.1:8080/healthz", interval: 1s, timeout: 2s, retries: 2, start_period: 3s}
`, strconv.FormatBool(healthy))
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := f.WriteString(svc); err != nil {
		f.Close()
		e.t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// goModule makes the OS files' directory (a temporary one) the root of a
// copy of this module holding hello-web's source: cairn build builds a
// go:// image in the module at or above the OS file, and the temporary
// directory has none. go.mod and go.sum are copied so the build resolves
// hello-web's dependency from the host's module cache, offline.
func (e *updateEnv) goModule() {
	e.t.Helper()
	if _, err := os.Stat(filepath.Join(e.dir, "go.mod")); err == nil {
		return
	}
	for _, f := range []string{"go.mod", "go.sum", "os/examples/hello-web/main.go"} {
		data, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			e.t.Fatal(err)
		}
		dst := filepath.Join(e.dir, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}
