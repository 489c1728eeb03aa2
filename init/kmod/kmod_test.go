package kmod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const depFile = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-bufio.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/fs/erofs/erofs.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/broken.ko: kernel/fs/missing.ko
`

const aliasFile = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias fs-erofs erofs
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias devname:mapper/control dm_mod
alias acpi*:LNXPWRBN:* button
alias input:b*v*p*e*-e*k*r*a*m*l*s*f*w* evdev
`

const softdepFile = `softdep libcrc32c pre: crc32c
softdep erofs pre: nosuch post: virtio
`

func testIndex(t testing.TB) *Index {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"modules.dep":             depFile,
		"modules.alias":           aliasFile,
		"modules.softdep":         softdepFile,
		"modules.builtin":         "kernel/fs/ext4/ext4.ko\nkernel/crypto/crc16.ko\n",
		"modules.builtin.modinfo": "crc16.license=GPL\x00crc16.alias=crc-itu\x00junk\x00.alias=x\x00ext4.alias=fs-ext4\x00",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ix, err := LoadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/md/dm-verity.ko": "dm_verity", "dm-verity": "dm_verity",
		"x.ko.xz": "x", "y.ko.zst": "y", "virtio_blk": "virtio_blk",
	} {
		if got := Name(in); got != want {
			t.Errorf("Name(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveMatch(t *testing.T) {
	ix := testIndex(t)
	for in, want := range map[string][]string{
		"dm-verity":     {"dm_verity"},
		"fs-erofs":      {"erofs"},
		"crypto-crc32c": {"crc32c_generic"},
		"ext4":          nil,
		"fs-ext4":       nil,
		"crc-itu":       nil,
		"nosuch":        nil,
		"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00": {"virtio_pci"},
		"acpi:LNXPWRBN:":            {"button"},
		"virtio:d00000002v00001AF4": {"virtio_blk"},
		"virtio:d00000001v00001AF4": nil,
	} {
		if got := ix.Resolve(in); !reflect.DeepEqual(got, want) {
			t.Errorf("Resolve(%q) = %v, want %v", in, got, want)
		}
	}
	if got := ix.SoftDeps("libcrc32c"); !reflect.DeepEqual(got, []string{"crc32c_generic"}) {
		t.Errorf("softdep: %v", got)
	}
	if got := ix.SoftDeps("erofs"); len(got) != 0 {
		t.Errorf("erofs deps: %v", got)
	}
	if !ix.Builtin("ext4") || ix.Builtin("erofs") || !ix.Has("dm-mod") {
		t.Error("Builtin/Has")
	}
}

func TestIndexHostile(t *testing.T) {
	for name, tc := range map[string]struct{ file, body string }{
		"traversal":     {"modules.dep", "../../etc/passwd.ko:\n"},
		"absolute":      {"modules.dep", "/lib/x.ko:\n"},
		"dep traversal": {"modules.dep", "a.ko: ../../b.ko\n"},
		"not ko":        {"modules.dep", "kernel/a.txt:\n"},
		"no colon":      {"modules.dep", "kernel/a.ko\n"},
		"alias fields":  {"modules.alias", "alias onlyone\n"},
		"alias pattern": {"modules.alias", "alias pci:[ x\n"},
		"softdep":       {"modules.softdep", "nosoftdep x\n"},
		"long line":     {"modules.dep", strings.Repeat("a", maxLine+10) + ".ko:\n"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.file != "modules.dep" {
				os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("a.ko:\n"), 0o644)
			}
			os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.body), 0o644)
			if _, err := LoadIndex(dir); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := LoadIndex(t.TempDir()); err == nil {
		t.Fatal("missing modules.dep accepted")
	}
}

// fakeLoader records the load order, checks that every dependency was loaded
// before a module, and tracks the maximum parallelism.
type fakeLoader struct {
	ix       *Index
	delay    time.Duration
	fail     map[string]bool
	mu       sync.Mutex
	loaded   map[string]int
	order    []string
	inflight int
	maxIn    int
	depErr   error
}

func (f *fakeLoader) Load(ctx context.Context, path string) error {
	m := Name(path)
	f.mu.Lock()
	if f.loaded[m] > 0 {
		f.depErr = fmt.Errorf("%s loaded twice", m)
	}
	for _, d := range f.ix.Deps(m) {
		if f.loaded[d] == 0 {
			f.depErr = fmt.Errorf("%s loaded before its dependency %s", m, d)
		}
	}
	f.inflight++
	f.maxIn = max(f.maxIn, f.inflight)
	f.mu.Unlock()
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
	if f.fail[m] {
		return errors.New("boom")
	}
	f.loaded[m]++
	f.order = append(f.order, m)
	return nil
}

func TestSetLoad(t *testing.T) {
	ix := testIndex(t)
	fl := &fakeLoader{ix: ix, delay: 20 * time.Millisecond, loaded: map[string]int{}, fail: map[string]bool{"reed_solomon": true, "crc32c_generic": true}}
	s := NewSet(ix, fl)
	ctx := context.Background()
	res, err := s.Load(ctx, []string{"virtio_pci", "virtio_blk", "fs-erofs", "libcrc32c", "ext4"})
	// crc32c_generic (a soft dependency) fails; libcrc32c still loads.
	if err == nil || !strings.Contains(err.Error(), "boom") || fl.loaded["libcrc32c"] != 1 {
		t.Fatalf("err = %v, loaded %v", err, fl.loaded)
	}
	if fl.depErr != nil {
		t.Fatal(fl.depErr)
	}
	if len(res) != 9 {
		t.Fatalf("results: %v", res)
	}
	if fl.maxIn < 4 {
		t.Fatalf("max parallel loads %d, want >= 4 (independent modules)", fl.maxIn)
	}
	// Loading again is free and does not call the loader.
	n := len(fl.order)
	if _, err := s.Load(ctx, []string{"virtio_blk"}); err != nil || len(fl.order) != n {
		t.Fatalf("reload: %v, %d loads", err, len(fl.order)-n)
	}
	// A failing dependency fails its users without loading them.
	_, err = s.Load(ctx, []string{"dm-verity", "nosuch", "broken"})
	if err == nil || !strings.Contains(err.Error(), "reed_solomon") || !strings.Contains(err.Error(), `"nosuch" not found`) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v", err)
	}
	if fl.loaded["dm_verity"] != 0 || fl.loaded["dm_mod"] != 1 {
		t.Fatalf("loaded: %v", fl.loaded)
	}
	if fl.depErr != nil {
		t.Fatal(fl.depErr)
	}
}

func TestSetCycle(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte("a.ko: b.ko\nb.ko: a.ko\n"), 0o644)
	ix, err := LoadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	fl := &fakeLoader{ix: ix, loaded: map[string]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := NewSet(ix, fl).Load(ctx, []string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("err = %v", err)
	}
}

type blockingLoader struct{}

func (blockingLoader) Load(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() }

func TestSetCancel(t *testing.T) {
	ix := testIndex(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := NewSet(ix, blockingLoader{}).Load(ctx, []string{"virtio_blk"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// A load cancelled by one caller is retried by the next, not remembered as
// a failure.
func TestSetCancelThenRetry(t *testing.T) {
	ix := testIndex(t)
	f := &fakeLoader{ix: ix, delay: 20 * time.Millisecond, loaded: map[string]int{}}
	s := NewSet(ix, f)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Load(ctx, []string{"virtio_blk"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled load: err = %v", err)
	}
	if _, err := s.Load(context.Background(), []string{"virtio_blk"}); err != nil {
		t.Fatalf("retry after cancel: %v", err)
	}
}

// coldplugLoader creates new sysfs devices when a bus driver loads, as the
// kernel does.
type coldplugLoader struct {
	fakeLoader
	sys string
}

func (c *coldplugLoader) Load(ctx context.Context, path string) error {
	if err := c.fakeLoader.Load(ctx, path); err != nil {
		return err
	}
	if Name(path) == "virtio_pci" {
		addDevice(c.sys, "virtio", "pci0000:00/0000:00:02.0/virtio0", "virtio:d00000002v00001AF4\n")
	}
	return nil
}

// addDevice creates sys/devices/<dev> with a modalias file ("-": none) and
// links it from sys/bus/<bus>/devices or, for "class:<c>", sys/class/<c>.
func addDevice(sys, bus, dev, modalias string) {
	d := filepath.Join(sys, "devices", dev)
	os.MkdirAll(d, 0o755)
	if modalias != "-" {
		os.WriteFile(filepath.Join(d, "modalias"), []byte(modalias), 0o644)
	}
	l := filepath.Join(sys, "bus", bus, "devices")
	if c, ok := strings.CutPrefix(bus, "class:"); ok {
		l = filepath.Join(sys, "class", c)
	}
	os.MkdirAll(l, 0o755)
	os.Symlink(d, filepath.Join(l, filepath.Base(dev)))
}

func TestColdplug(t *testing.T) {
	ix := testIndex(t)
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "bus/empty"), 0o755) // a bus without devices dir
	addDevice(sys, "pci", "pci0000:00/0000:00:02.0", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00")
	addDevice(sys, "pci", "pci0000:00/0000:00:03.0", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01")
	addDevice(sys, "acpi", "LNXSYSTM:00/LNXPWRBN:00", "acpi:LNXPWRBN:")
	addDevice(sys, "class:tty", "platform/serial8250/tty/tty0", "")
	addDevice(sys, "class:tty", "virtual/tty/tty1", "-")
	addDevice(sys, "class:input", "LNXSYSTM:00/LNXPWRBN:00/input/input0", "input:b0019v0000p0001e0000-e0,1,k74,ramlsfw")
	cl := &coldplugLoader{fakeLoader: fakeLoader{ix: ix, loaded: map[string]int{}}, sys: sys}
	s := NewSet(ix, cl)
	st, err := s.Coldplug(context.Background(), sys)
	// button and evdev are in modules.alias but not in modules.dep:
	// reported, not fatal.
	if err == nil || !strings.Contains(err.Error(), "button") || !strings.Contains(err.Error(), "evdev") {
		t.Fatalf("err = %v", err)
	}
	got := append([]string(nil), st.Modules...)
	sort.Strings(got)
	if want := []string{"button", "evdev", "virtio_blk", "virtio_pci"}; !reflect.DeepEqual(got, want) || st.Rounds != 3 {
		t.Fatalf("coldplug: %+v", st)
	}
	if cl.loaded["virtio_blk"] != 1 || cl.depErr != nil {
		t.Fatalf("loaded %v %v", cl.loaded, cl.depErr)
	}
}

func FuzzIndex(f *testing.F) {
	f.Add(depFile, aliasFile, softdepFile, "virtio:d00000002v00001AF4")
	f.Fuzz(func(t *testing.T, dep, alias, soft, modalias string) {
		ix := newIndex("/x")
		if ix.parseDep(strings.NewReader(dep)) != nil {
			return
		}
		_ = ix.parseAlias(strings.NewReader(alias))
		_ = ix.parseSoftdep(strings.NewReader(soft))
		for _, p := range ix.paths {
			if strings.HasPrefix(p, "..") || strings.HasPrefix(p, "/") {
				t.Fatalf("escaping path %q", p)
			}
		}
		for _, m := range ix.Match(modalias) {
			ix.Deps(m)
		}
		ix.Resolve(modalias)
	})
}

// Asking for something built-in code provides, by name or by alias, is not
// an error and loads nothing.
func TestSetLoadBuiltin(t *testing.T) {
	ix := testIndex(t)
	f := &fakeLoader{ix: ix, loaded: map[string]int{}}
	for _, name := range []string{"ext4", "fs-ext4", "crc-itu"} {
		if _, err := NewSet(ix, f).Load(context.Background(), []string{name}); err != nil {
			t.Errorf("Load(%q): %v", name, err)
		}
	}
	if _, err := NewSet(ix, f).Load(context.Background(), []string{"nosuch"}); err == nil {
		t.Error("Load(nosuch) succeeded")
	}
	if len(f.order) != 0 {
		t.Errorf("loaded %v for built-ins", f.order)
	}
}
