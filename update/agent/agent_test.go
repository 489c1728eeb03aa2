package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/init/bootcount"
	"cairn.dev/cairn/update/repo"
	"cairn.dev/cairn/update/server"
	"cairn.dev/cairn/update/tuf"
)

// e2e is a published repository served by update/server on 127.0.0.1, and
// a machine: a file-backed disk and an ESP directory.
type e2e struct {
	t                 *testing.T
	repo, keys, state string
	srv               *httptest.Server
	store             server.Store
	disk              *testDisk
	images            map[string]rootImage
	chunkBytes        atomic.Int64 // bytes served below /chunks/
	rootBytes         atomic.Int64 // bytes of root.erofs targets served
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	e := &e2e{t: t, repo: t.TempDir(), keys: filepath.Join(t.TempDir(), "keys"), state: t.TempDir(),
		disk: newTestDisk(t, 4<<20), images: map[string]rootImage{}}
	if err := repo.InitKeys(e.keys); err != nil {
		t.Fatal(err)
	}
	store, err := server.NewFileStore(filepath.Join(t.TempDir(), "store.json"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Repo: e.repo, Store: store, LeaseLimit: 1, PauseThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	e.store = store
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		switch {
		case strings.HasPrefix(r.URL.Path, "/chunks/"):
			e.chunkBytes.Add(cw.n)
		case strings.HasSuffix(r.URL.Path, ".root.erofs"):
			e.rootBytes.Add(cw.n)
		}
	}))
	t.Cleanup(func() { e.srv.Close(); srv.Close(); store.Close() })
	return e
}

// builtFrom10 publishes 1.0 and sets the machine up as built from it: slot
// A and its UKI. It returns the data every version derives from, 1.0's root
// image and its UKI.
func (e *e2e) builtFrom10() (base []byte, v1 rootImage, uki []byte) {
	t := e.t
	t.Helper()
	base = randomData(42, 2<<20)
	v1 = e.publish("1.0", base, 0)
	e.disk.writeSlot(t, "A", v1.data)
	uki = mkUKI(ukiParams{"1.0", "A", uuidA, v1.rootHash, v1.salt, v1.blocks})
	if err := os.WriteFile(filepath.Join(e.disk.ukiDir(), "cairn-1.0.efi"), uki, 0o644); err != nil {
		t.Fatal(err)
	}
	return base, v1, uki
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// publish builds a fake version (a root image whose content derives from
// base with a change at off, and a UKI per slot) and publishes it.
func (e *e2e) publish(version string, base []byte, off int) rootImage {
	t := e.t
	t.Helper()
	data := append([]byte(nil), base...)
	copy(data[off:], randomData(uint64(len(version))*7919+uint64(off), 64<<10))
	salt := sha256.Sum256([]byte("cairn verity salt\x00hello\x00" + version))
	img := mkRoot(t, data, salt[:])
	e.images[version] = img
	dir := t.TempDir()
	m := &manifest.Manifest{Name: "hello", Version: version,
		Verity: manifest.Verity{RootHash: img.rootHash, Salt: img.salt, DataBlocks: img.blocks, HashOffset: img.blocks * verityBlock}}
	add := func(name, kind string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: name, Kind: kind, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	add("hello.root.erofs", "root", img.data)
	for _, s := range []struct{ slot, uuid string }{{"A", uuidA}, {"B", uuidB}} {
		name := "hello." + s.slot + ".efi"
		add(name, "uki", mkUKI(ukiParams{version, s.slot, s.uuid, img.rootHash, img.salt, img.blocks}))
		m.Slots = append(m.Slots, manifest.Slot{Slot: s.slot, PartUUID: s.uuid, UKI: name})
	}
	p := filepath.Join(dir, "hello.manifest.json")
	if err := m.Write(p); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Publish(context.Background(), e.repo, e.keys, p, repo.PublishOptions{Channel: "stable"}); err != nil {
		t.Fatal(err)
	}
	return img
}

// machine is one boot of the test machine.
type machine struct {
	version, slot string
	vars          bootcount.Vars
	health        Health
	// onReboot runs when the agent reboots.
	onReboot func()
	// checks is how many check rounds to let Run do before it is stopped.
	checks int
	// onLog sees every console line.
	onLog func(string)
}

// stopClock is a fake clock that ends Run after a number of check intervals.
type stopClock struct {
	*fakeClock
	interval time.Duration
	left     int
	cancel   context.CancelFunc
}

func (c *stopClock) Sleep(ctx context.Context, d time.Duration) error {
	if d >= c.interval {
		c.left--
		if c.left <= 0 {
			c.cancel()
		}
	}
	return c.fakeClock.Sleep(ctx, d)
}

// boot runs the agent of one boot until it reboots or has done m.checks
// checks; it returns the console lines and whether it rebooted.
func (e *e2e) boot(m machine) ([]string, bool) {
	t := e.t
	t.Helper()
	root, err := os.ReadFile(filepath.Join(e.repo, "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := tuf.New(tuf.Config{MetadataDir: filepath.Join(e.state, "tuf"), TrustedRoot: root, RepoURL: e.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var lines []string
	rebooted := false
	api := &API{URL: e.srv.URL, ID: FleetLockID("machine-1"), Group: "default"}
	clock := &stopClock{fakeClock: &fakeClock{t: time.Now()}, interval: time.Hour, left: max(m.checks, 1), cancel: cancel}
	a, err := New(Config{
		OS: "hello", Channel: "stable", Repo: client, RepoURL: e.srv.URL, API: api,
		MachineID: "machine-1", BootedVersion: m.version, BootedSlot: m.slot,
		BootedSize: int64(len(e.images[m.version].data)),
		Slots:      e.disk.slots, ESP: e.disk.esp,
		StatePath: filepath.Join(e.state, "state.json"), WorkDir: filepath.Join(e.state, "work"),
		Interval: time.Hour, Policy: FleetLock{API: api, Retry: time.Minute},
		Reboot: func(context.Context) error {
			rebooted = true
			if m.onReboot != nil {
				m.onReboot()
			}
			return nil
		},
		Trial:  Trial{Vars: m.vars, HealthyFor: time.Minute, Timeout: 10 * time.Minute, Poll: 10 * time.Second},
		Health: m.health,
		Log: func(s string) {
			mu.Lock()
			lines = append(lines, s)
			mu.Unlock()
			if m.onLog != nil {
				m.onLog(s)
			}
		},
		Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(ctx)
	t.Logf("boot of %s:\n%s", m.version, strings.Join(lines, "\n"))
	if rebooted && err != nil {
		t.Fatalf("Run after reboot: %v", err)
	}
	if !rebooted && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v\n%s", err, strings.Join(lines, "\n"))
	}
	return lines, rebooted
}

// firmware does what systemd-boot does on a boot: pick the entry that sorts
// first (not exhausted, highest version), count a try, and return the
// loader variables and the slot and version of the chosen UKI.
func (e *e2e) firmware() (bootcount.Vars, string, string) {
	t := e.t
	t.Helper()
	ents, _, err := scanESP(e.disk.ukiDir())
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ents, func(a, b espEntry) int {
		_, la, _, ca := bootcount.Counter(a.name)
		_, lb, _, cb := bootcount.Counter(b.name)
		if ea, eb := ca && la == 0, cb && lb == 0; ea != eb {
			if ea {
				return 1
			}
			return -1
		}
		return -tuf.CompareVersions(a.info.VersionID, b.info.VersionID)
	})
	if len(ents) == 0 || ents[0].err != nil {
		t.Fatalf("nothing bootable on the ESP: %+v", ents)
	}
	ent := ents[0]
	c := ent.info.Cmdline
	// dm-verity would refuse a root that does not match the UKI.
	slot := e.disk.slots[c.Slot]
	if err := VerifyVerity(context.Background(), slot.Dev, c.VerityBlocks, mustHex(t, c.VeritySalt), mustHex(t, c.VerityRootHash)); err != nil {
		t.Fatalf("firmware booted %s, whose root is bad: %v", ent.name, err)
	}
	blessed, left, done, counted := bootcount.Counter(ent.name)
	if !counted {
		return bootcount.Vars{EntrySelected: ent.name}, c.Slot, c.Version
	}
	ext := filepath.Ext(blessed)
	next := fmt.Sprintf("%s+%d-%d%s", strings.TrimSuffix(blessed, ext), max(left-1, 0), done+1, ext)
	if err := os.Rename(filepath.Join(e.disk.ukiDir(), ent.name), filepath.Join(e.disk.ukiDir(), next)); err != nil {
		t.Fatal(err)
	}
	return bootcount.Vars{EntrySelected: next, BootCountPath: `\EFI\Linux\` + next}, c.Slot, c.Version
}

func (e *e2e) stateFile() State {
	s, err := LoadState(filepath.Join(e.state, "state.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *e2e) holders() []server.Holder {
	h, err := e.store.Holders(context.Background(), "default", time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *e2e) reports() []server.Report {
	r, err := e.store.Reports(context.Background(), "stable", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// orderedDev checks, on every write to a slot, that no UKI on the ESP
// boots that slot: the stale UKI must be gone before the first write.
type orderedDev struct {
	Device
	t      *testing.T
	esp    string
	slot   *Slot
	writes atomic.Int64
}

func (d *orderedDev) WriteAt(p []byte, off int64) (int, error) {
	if d.writes.Add(1) == 1 || off == 0 {
		ents, _, err := scanESP(d.esp)
		if err != nil {
			d.t.Error(err)
		}
		for _, e := range ents {
			if e.err == nil && bootsSlot(e.info, d.slot) {
				d.t.Errorf("slot %s written while %s boots it", d.slot.Name, e.name)
			}
		}
	}
	return d.Device.WriteAt(p, off)
}

func TestAgentEndToEnd(t *testing.T) {
	e := newE2E(t)
	// The machine was built from 1.0: slot A and its UKI, blessed.
	base, _, _ := e.builtFrom10()
	e.disk.slots["B"].Dev = &orderedDev{Device: e.disk.slots["B"].Dev, t: t, esp: e.disk.ukiDir(), slot: e.disk.slots["B"]}
	e.disk.slots["A"].Dev = &orderedDev{Device: e.disk.slots["A"].Dev, t: t, esp: e.disk.ukiDir(), slot: e.disk.slots["A"]}

	// Boot 1.0: nothing newer, idle.
	vars, slot, version := e.firmware()
	if _, rebooted := e.boot(machine{version: version, slot: slot, vars: vars}); rebooted {
		t.Fatal("rebooted with nothing to install")
	}
	if s := e.stateFile(); s.Phase != PhaseIdle {
		t.Fatalf("state %v", s)
	}

	// Publish 2.0: the machine installs it into slot B, takes the lease
	// and reboots.
	v2 := e.publish("2.0", base, 1<<20)
	lines, rebooted := e.boot(machine{version: "1.0", slot: "A", vars: vars, onReboot: func() {
		if !bytes.Equal(e.disk.slotBytes(t, "B", len(v2.data)), v2.data) {
			t.Error("rebooting before slot B holds 2.0")
		}
		if _, err := os.Stat(filepath.Join(e.disk.ukiDir(), "cairn-2.0+3.efi")); err != nil {
			t.Errorf("rebooting without the new UKI: %v", err)
		}
	}})
	if !rebooted {
		t.Fatalf("did not reboot:\n%s", strings.Join(lines, "\n"))
	}
	if s := e.stateFile(); s.Phase != PhaseRebooting || s.Version != "2.0" || s.FromVersion != "1.0" {
		t.Fatalf("state %+v", s)
	}
	if h := e.holders(); len(h) != 1 || h[0].ID != FleetLockID("machine-1") {
		t.Fatalf("lease holders %+v", h)
	}
	if c, r := e.chunkBytes.Load(), e.rootBytes.Load(); r != 0 || c == 0 || c > int64(len(v2.data))/4 {
		t.Fatalf("downloaded %d bytes of chunks and %d of full images for an image of %d", c, r, len(v2.data))
	}
	for _, want := range []string{"update: downloading 2.0 0%", "update: written 2.0", "update: rebooting 2.0"} {
		if !slices.Contains(lines, want) {
			t.Errorf("console lacks %q:\n%s", want, strings.Join(lines, "\n"))
		}
	}

	// The firmware boots 2.0 on trial; it is healthy and the repository
	// answers: committed, reported, lease released.
	vars, slot, version = e.firmware()
	if version != "2.0" || slot != "B" || vars.BootCountPath == "" {
		t.Fatalf("firmware chose %s on %s (%+v)", version, slot, vars)
	}
	lines, rebooted = e.boot(machine{version: version, slot: slot, vars: vars,
		health: Health{Services: func(context.Context) error { return nil }, Repository: func(context.Context) error { return nil }}})
	if rebooted {
		t.Fatalf("rebooted:\n%s", strings.Join(lines, "\n"))
	}
	if s := e.stateFile(); s.Phase != PhaseCommitted || s.Version != "2.0" || s.Pending != nil {
		t.Fatalf("state %+v", s)
	}
	if files := e.disk.espFiles(t); !slices.Equal(files, []string{"cairn-1.0.efi", "cairn-2.0.efi"}) {
		t.Fatalf("ESP %v", files)
	}
	if h := e.holders(); len(h) != 0 {
		t.Fatalf("lease not released: %+v", h)
	}
	if r := e.reports(); len(r) != 1 || r[0].Outcome != ReportCommitted || r[0].FromVersion != "1.0" || r[0].ToVersion != "2.0" {
		t.Fatalf("reports %+v", r)
	}
	// The next boot stays on 2.0.
	if _, _, version := e.firmware(); version != "2.0" {
		t.Fatalf("next boot on %s", version)
	}

	// Publish 3.0, whose service never becomes healthy: installed into
	// slot A (the stale 1.0 UKI goes first), tried, marked bad, rolled
	// back, reported; the server pauses 3.0.
	v3 := e.publish("3.0", base, 1500<<10)
	if _, rebooted := e.boot(machine{version: "2.0", slot: "B"}); !rebooted {
		t.Fatal("did not install 3.0")
	}
	if !bytes.Equal(e.disk.slotBytes(t, "A", len(v3.data)), v3.data) {
		t.Fatal("slot A does not hold 3.0")
	}
	if files := e.disk.espFiles(t); !slices.Equal(files, []string{"cairn-2.0.efi", "cairn-3.0+3.efi"}) {
		t.Fatalf("ESP %v", files)
	}
	vars, slot, version = e.firmware()
	if version != "3.0" {
		t.Fatalf("firmware chose %s", version)
	}
	unhealthy := errors.New("service web: /healthz answers 500")
	lines, rebooted = e.boot(machine{version: version, slot: slot, vars: vars,
		health: Health{Services: func(context.Context) error { return unhealthy }}})
	if !rebooted {
		t.Fatalf("no rollback:\n%s", strings.Join(lines, "\n"))
	}
	if s := e.stateFile(); s.Phase != PhaseRolledBack || s.Stage != StageHealth || !strings.Contains(s.Reason, "500") || !slices.Contains(s.Bad, "3.0") {
		t.Fatalf("state %+v", s)
	}
	if files := e.disk.espFiles(t); !slices.Equal(files, []string{"cairn-2.0.efi", "cairn-3.0+0-1.efi"}) {
		t.Fatalf("ESP %v", files)
	}
	vars, slot, version = e.firmware()
	if version != "2.0" {
		t.Fatalf("firmware chose %s after the rollback", version)
	}
	e.boot(machine{version: version, slot: slot, vars: vars})
	reps := e.reports()
	if len(reps) != 2 || reps[0].Outcome != ReportRolledBack || reps[0].Stage != StageHealth || reps[0].ToVersion != "3.0" {
		t.Fatalf("reports %+v", reps)
	}
	if p, _ := e.store.Paused(context.Background(), "stable"); !slices.Equal(p, []string{"3.0"}) {
		t.Fatalf("paused %v", p)
	}
	if h := e.holders(); len(h) != 0 {
		t.Fatalf("lease not released after the rollback: %+v", h)
	}
	if s := e.stateFile(); s.Phase != PhaseRolledBack {
		t.Fatalf("state %+v", s)
	}
}

// Hostile repositories: nothing is booted that TUF and dm-verity did not
// accept, the booted version stays, and the failure is reported.
func TestAgentHostileRepository(t *testing.T) {
	tamper := func(t *testing.T, pattern string) {
		t.Helper()
		files, _ := filepath.Glob(pattern)
		if len(files) == 0 {
			t.Fatalf("no %s", pattern)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		name        string
		edit        func(t *testing.T, e *e2e)
		stage       string
		slotWritten bool
	}{
		{"tampered UKI", func(t *testing.T, e *e2e) {
			tamper(t, filepath.Join(e.repo, "targets", "hello", "2.0", "*.uki-B.efi"))
		}, "install:check", false},
		{"tampered chunks and root image", func(t *testing.T, e *e2e) {
			tamper(t, filepath.Join(e.repo, "chunks", "*", "*"))
			tamper(t, filepath.Join(e.repo, "targets", "hello", "2.0", "*.root.erofs"))
		}, "install:write-root", true},
		{"bad signature on targets", func(t *testing.T, e *e2e) {
			tamper(t, filepath.Join(e.repo, "metadata", "*.targets.json"))
		}, "check", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t)
			base, v1, bootedUKI := e.builtFrom10()
			e.publish("2.0", base, 1<<20)
			tt.edit(t, e)
			lines, rebooted := e.boot(machine{version: "1.0", slot: "A"})
			if rebooted {
				t.Fatal("rebooted")
			}
			s := e.stateFile()
			if s.Phase != PhaseFailed || s.Stage != tt.stage {
				t.Fatalf("state %+v\n%s", s, strings.Join(lines, "\n"))
			}
			if files := e.disk.espFiles(t); !slices.Equal(files, []string{"cairn-1.0.efi"}) {
				t.Fatalf("ESP %v", files)
			}
			if got, _ := os.ReadFile(filepath.Join(e.disk.ukiDir(), "cairn-1.0.efi")); !bytes.Equal(got, bootedUKI) {
				t.Fatal("booted UKI changed")
			}
			if !bytes.Equal(e.disk.slotBytes(t, "A", len(v1.data)), v1.data) {
				t.Fatal("booted slot changed")
			}
			if zero := bytes.Count(e.disk.slotBytes(t, "B", 1<<20), []byte{0}) == 1<<20; zero == tt.slotWritten {
				t.Fatalf("slot B written: %v, want %v", !zero, tt.slotWritten)
			}
			reps := e.reports()
			if tt.stage == "check" {
				if len(reps) != 0 {
					t.Fatalf("reports %+v", reps)
				}
				return
			}
			if len(reps) != 1 || reps[0].Outcome != ReportFailed || reps[0].Stage != tt.stage {
				t.Fatalf("reports %+v", reps)
			}
		})
	}
}

// A counted boot is judged even when the state file does not say an
// update was on its way: a power cut between the UKI's rename and the
// state update, or a damaged STATE.
func TestAgentTrialWhateverTheState(t *testing.T) {
	for _, tt := range []struct {
		name  string
		state string // "" removes the file
	}{
		{"downloading", `{"phase":"downloading","version":"2.0","from_version":"1.0","percent":100}`},
		{"corrupt", `{"phase":`},
		{"missing", ""},
		{"another version", `{"phase":"rebooting","version":"1.5","from_version":"1.0"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t)
			base, _, _ := e.builtFrom10()
			e.publish("2.0", base, 1<<20)
			if _, rebooted := e.boot(machine{version: "1.0", slot: "A"}); !rebooted {
				t.Fatal("no update")
			}
			p := filepath.Join(e.state, "state.json")
			if tt.state == "" {
				os.Remove(p)
			} else {
				os.WriteFile(p, []byte(tt.state), 0o644)
			}
			vars, slot, version := e.firmware()
			ok := func(context.Context) error { return nil }
			e.boot(machine{version: version, slot: slot, vars: vars, health: Health{Services: ok, Repository: ok}})
			if files := e.disk.espFiles(t); !slices.Equal(files, []string{"cairn-1.0.efi", "cairn-2.0.efi"}) {
				t.Fatalf("ESP %v", files)
			}
			if s := e.stateFile(); s.Phase != PhaseCommitted || s.Version != "2.0" {
				t.Fatalf("state %+v", s)
			}
			if h := e.holders(); len(h) != 0 {
				t.Fatalf("lease not released: %+v", h)
			}
		})
	}
}

// When the new version never reaches its agent (the early stage fails),
// boot counting brings the old version back, and its agent reports the
// rollback with the stage "boot".
func TestAgentBootCountingFallback(t *testing.T) {
	e := newE2E(t)
	base, _, _ := e.builtFrom10()
	e.publish("2.0", base, 1<<20)
	if _, rebooted := e.boot(machine{version: "1.0", slot: "A"}); !rebooted {
		t.Fatal("no update")
	}
	// Three tries of 2.0 fail before PID 1's system stage.
	for range 3 {
		if _, _, version := e.firmware(); version != "2.0" {
			t.Fatalf("firmware chose %s", version)
		}
	}
	vars, slot, version := e.firmware()
	if version != "1.0" {
		t.Fatalf("firmware chose %s after three failed tries", version)
	}
	e.boot(machine{version: version, slot: slot, vars: vars})
	s := e.stateFile()
	if s.Phase != PhaseRolledBack || s.Stage != StageBoot || !slices.Contains(s.Bad, "2.0") {
		t.Fatalf("state %+v", s)
	}
	if r := e.reports(); len(r) != 1 || r[0].Outcome != ReportRolledBack || r[0].Stage != StageBoot {
		t.Fatalf("reports %+v", r)
	}
	if h := e.holders(); len(h) != 0 {
		t.Fatalf("lease not released: %+v", h)
	}
}

// With the group's only lease held by another machine, the agent waits
// (and says so) until the lease is free.
func TestAgentWaitsForLease(t *testing.T) {
	e := newE2E(t)
	base, _, _ := e.builtFrom10()
	e.publish("2.0", base, 1<<20)
	other := &API{URL: e.srv.URL, ID: "other-machine", Group: "default"}
	ctx := context.Background()
	if err := other.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	waited := false
	lines, rebooted := e.boot(machine{version: "1.0", slot: "A",
		onLog: func(s string) {
			if strings.HasPrefix(s, "update: waiting for lease (") && strings.HasSuffix(s, "to reboot into 2.0") {
				waited = true
				if h := e.holders(); len(h) != 1 || h[0].ID != "other-machine" {
					t.Errorf("holders while waiting: %+v", h)
				}
				if err := other.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}
		},
		onReboot: func() {
			if h := e.holders(); len(h) != 1 || h[0].ID != FleetLockID("machine-1") {
				t.Errorf("rebooting without the lease: %+v", h)
			}
		}})
	if !rebooted || !waited {
		t.Fatalf("rebooted %v, waited %v:\n%s", rebooted, waited, strings.Join(lines, "\n"))
	}
}
