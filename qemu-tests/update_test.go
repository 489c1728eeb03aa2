package qemutests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/qemu-tests/harness"
	"cairn.dev/cairn/update/repo"
	"cairn.dev/cairn/update/server"
)

// updateEnv is a signed repository served by an in-process `cairn serve`
// on 127.0.0.1 (the guest reaches it as 10.0.2.2), and the OS files of the
// versions to publish.
type updateEnv struct {
	t                    *testing.T
	dir, keys, repo, url string
	srv                  *server.Server
	hostURL              string
	front                front
}

func newUpdateEnv(t *testing.T, leaseLimit int) *updateEnv {
	t.Helper()
	dir := t.TempDir()
	e := &updateEnv{t: t, dir: dir, keys: filepath.Join(dir, "keys"), repo: filepath.Join(dir, "repo")}
	if err := repo.InitKeys(e.keys); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := repo.Init(ctx, e.repo, e.keys, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(e.repo, "metadata", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "root.json"), root, 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := server.NewFileStore(filepath.Join(dir, "serve.json"))
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = server.New(server.Config{Repo: e.repo, Store: store, LeaseLimit: leaseLimit, LeaseTTL: 5 * time.Minute, PauseThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.handler()}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close(); e.srv.Close() })
	e.url = fmt.Sprintf("http://10.0.2.2:%d", l.Addr().(*net.TCPAddr).Port)
	t.Logf("update server on %s (guest: %s)", l.Addr(), e.url)
	e.hostURL = "http://" + l.Addr().String()
	return e
}

// osFile writes the OS file of version v; extra is appended to its
// update section (indented by four spaces), cmdline to kernel.cmdline.
func (e *updateEnv) osFile(v, server, extraUpdate string, cmdline ...string) string {
	e.t.Helper()
	if server == "" {
		server = e.url
	}
	q := make([]string, len(cmdline))
	for i, c := range cmdline {
		q[i] = fmt.Sprintf("%q", c)
	}
	y := fmt.Sprintf(`name: hello
version: %s
hostname: hello
kernel:
  flavour: cloud-amd64
  cmdline: [%s]
update:
  server: %s
  root: root.json
  channel: stable
  interval: 1m
  jitter: 1s
  trial:
    healthy_for: 2s
    timeout: 20s
%s`, v, strings.Join(q, ", "), server, extraUpdate)
	p := filepath.Join(e.dir, "hello-"+v+".yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// build builds an OS file and returns its disk image and manifest.
func (e *updateEnv) build(osFile string) (img, manifest string) {
	e.t.Helper()
	img = images.Build(e.t, osFile)
	ms, err := filepath.Glob(filepath.Join(filepath.Dir(img), "*.manifest.json"))
	if err != nil || len(ms) != 1 {
		e.t.Fatalf("manifest next to %s: %v %v", img, ms, err)
	}
	return img, ms[0]
}

func (e *updateEnv) publish(manifest string) time.Time {
	e.t.Helper()
	if _, err := repo.Publish(context.Background(), e.repo, e.keys, manifest, repo.PublishOptions{Channel: "stable"}); err != nil {
		e.t.Fatalf("publish %s: %v", manifest, err)
	}
	return time.Now()
}

// paused returns the versions whose rollout the server paused.
func (e *updateEnv) paused() []string {
	e.t.Helper()
	resp, err := http.Get(e.hostURL + "/v1/rollout?channel=stable")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Paused []string `json:"paused"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		e.t.Fatal(err)
	}
	return v.Paused
}

// reports returns the server's reports, newest first.
func (e *updateEnv) reports() []map[string]any {
	e.t.Helper()
	resp, err := http.Get(e.hostURL + "/v1/reports?channel=stable")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

const updateTimeout = 4 * time.Minute

// TestUpdateLifecycle runs scenarios 1-3 of issue 6 in one VM lifetime,
// under OVMF. v1, v2 and v3 run a web service with an HTTP health check
// (hello-web). v1 updates to v2 (commit after a trial in which the service
// stays healthy); v3's service never becomes healthy (HEALTHY=false: its
// /healthz answers 503), so its trial fails at the health stage, it marks
// itself bad and rolls back to v2 by itself, the report (stage health)
// reaches the server and the server pauses v3; v4,
// whose kernel never starts the early stage (rdinit= points nowhere, the
// kernel panics), is dropped by systemd-boot's boot counting without any
// help from PID 1, and v2 reports the failed boot.
func TestUpdateLifecycle(t *testing.T) {
	harness.RequireQEMU(t)
	e := newUpdateEnv(t, 1)
	img1, _ := e.build(e.withWebService(e.osFile("1.0.0", "", ""), true))
	_, m2 := e.build(e.withWebService(e.osFile("2.0.0", "", ""), true))
	_, m3 := e.build(e.withWebService(e.osFile("3.0.0", "", ""), false))
	_, m4 := e.build(e.osFile("4.0.0", "", "", "rdinit=/no/such/init"))

	// The agent checks right after it starts and then every minute (the
	// shortest interval allowed), so each version is published while the
	// machine is on its way to the check that should find it.
	published := e.publish(m2)
	vm := harness.Boot(t, harness.Options{Image: img1})
	m := vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "1.0.0" || m[2] != "A" {
		t.Fatalf("first boot %q, want 1.0.0 on A", m[0])
	}
	ready1 := time.Now()
	vm.Expect(t, "cairn: update: agent on hello 1.0.0 slot A", bootTimeout)

	// (1) v2: update, reboot, trial, commit.
	vm.Expect(t, "cairn: update: downloading 2.0.0", updateTimeout)
	vm.Expect(t, "cairn: update: rebooting 2.0.0", updateTimeout)
	m = vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "2.0.0" || m[2] != "B" {
		t.Fatalf("after the update %q, want 2.0.0 on B", m[0])
	}
	vm.Expect(t, "cairn: update: on trial 2.0.0", updateTimeout)
	published3 := e.publish(m3)
	vm.Expect(t, "cairn: update: blessed cairn-2.0.0+2-1.efi -> cairn-2.0.0.efi", updateTimeout)
	vm.Expect(t, "cairn: update: committed 2.0.0", updateTimeout)
	t.Logf("v2: published -> committed %s (v1 READY -> committed %s)", time.Since(published).Round(100*time.Millisecond), time.Since(ready1).Round(100*time.Millisecond))

	// (2) v3's service never becomes healthy: its trial fails at the
	// health stage and it rolls back to v2 by itself.
	vm.Expect(t, "cairn: update: rebooting 3.0.0", updateTimeout)
	m = vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "3.0.0" || m[2] != "A" {
		t.Fatalf("v3 boot %q, want 3.0.0 on A", m[0])
	}
	vm.Expect(t, "cairn: update: on trial 3.0.0", updateTimeout)
	rb := vm.ExpectRegexp(t, regexp.MustCompile(`cairn: update: rolled back from 3\.0\.0 because of health: service web is unhealthy[^\r\n]*`), updateTimeout)
	t.Logf("v3: %s", rb[0])
	vm.ExpectRegexp(t, regexp.MustCompile(`cairn: update: \S*cairn-3\.0\.0\+\S* marked bad \(\S*cairn-3\.0\.0\+0-\d+\.efi\), rebooting into 2\.0\.0`), updateTimeout)
	published4 := e.publish(m4)
	m = vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "2.0.0" || m[2] != "B" {
		t.Fatalf("after the v3 rollback %q, want 2.0.0 on B", m[0])
	}
	waitFor(t, updateTimeout, "server pauses 3.0.0", func() bool {
		for _, v := range e.paused() {
			if v == "3.0.0" {
				return true
			}
		}
		return false
	})
	t.Logf("v3: published -> rolled back, reported and paused %s", time.Since(published3).Round(100*time.Millisecond))
	found := false
	for _, r := range e.reports() {
		if r["to_version"] == "3.0.0" && r["outcome"] == "rolled_back" && r["stage"] == "health" {
			found = true
		}
	}
	if !found {
		t.Errorf("no rolled_back report for 3.0.0 at stage health: %v", e.reports())
	}

	// (3) v4's early stage never runs: boot counting falls back.
	vm.Expect(t, "cairn: update: rebooting 4.0.0", updateTimeout)
	for i := 0; i < 3; i++ {
		vm.Expect(t, "Kernel panic", bootTimeout)
	}
	m = vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "2.0.0" || m[2] != "B" {
		t.Fatalf("after v4 %q, want 2.0.0 on B", m[0])
	}
	vm.Expect(t, "cairn: update: rolled back from 4.0.0 because of boot", updateTimeout)
	t.Logf("v4: published -> fallen back to v2 %s", time.Since(published4).Round(100*time.Millisecond))
	vm.Expect(t, "cairn: update: skipping 4.0.0: this machine rolled back from it", updateTimeout)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestUpdateFleetLock is scenario 6 of issue 6: two machines follow one
// server with a lease limit of 1 and the fleetlock reboot strategy. Both
// write v2; the second may reboot only after the first has committed v2
// and released its lease, so their reboots never overlap.
func TestUpdateFleetLock(t *testing.T) {
	harness.RequireQEMU(t)
	e := newUpdateEnv(t, 1)
	fl := "  reboot:\n    strategy: fleetlock\n    group: web\n"
	img1, _ := e.build(e.osFile("1.0.0", "", fl))
	_, m2 := e.build(e.osFile("2.0.0", "", fl))
	e.publish(m2)
	vms := []*harness.VM{harness.Boot(t, harness.Options{Image: img1}), harness.Boot(t, harness.Options{Image: img1})}
	type span struct{ rebooting, committed time.Time }
	spans := make([]span, len(vms))
	errs := make(chan error, len(vms))
	for i, vm := range vms {
		go func() {
			errs <- func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 2*updateTimeout)
				defer cancel()
				q := vm.QEMU()
				if _, err := q.WaitFor(ctx, regexp.MustCompile(`cairn: update: rebooting 2\.0\.0`), 2*updateTimeout); err != nil {
					return fmt.Errorf("vm %d: %w", i, err)
				}
				spans[i].rebooting = time.Now()
				if _, err := q.WaitFor(ctx, regexp.MustCompile(`cairn: update: committed 2\.0\.0`), 2*updateTimeout); err != nil {
					return fmt.Errorf("vm %d: %w", i, err)
				}
				spans[i].committed = time.Now()
				return nil
			}()
		}()
	}
	for range vms {
		if err := <-errs; err != nil {
			for i, vm := range vms {
				t.Logf("vm %d console tail:\n%s", i, strings.Join(vm.Console().Tail(40), "\n"))
			}
			t.Fatal(err)
		}
	}
	first, second := spans[0], spans[1]
	if second.rebooting.Before(first.rebooting) {
		first, second = second, first
	}
	if second.rebooting.Before(first.committed) {
		t.Errorf("reboots overlap: one machine rebooted at %s, before the other committed at %s", second.rebooting.Format(time.StampMilli), first.committed.Format(time.StampMilli))
	}
	found := false
	for i, vm := range vms {
		if strings.Contains(vm.Console().Log(), "waiting for lease") {
			found = true
			t.Logf("vm %d waited for the lease", i)
		}
	}
	if !found {
		t.Error("neither machine waited for the lease")
	}
	t.Logf("first committed %s before the second rebooted", second.rebooting.Sub(first.committed).Round(100*time.Millisecond))
}

// TestUpdatePowerCut is scenario 4 of issue 6: the power is cut (QEMU
// killed with SIGKILL) at six points of one slot write of v2, and after
// each cut the machine boots again, under OVMF and systemd-boot, on a good
// version with STATE intact. v2 is published without a chunk index, so the
// agent streams the whole root image into slot B, and the test's server
// holds that download at a byte offset until the VM is killed: before the
// first root byte (after the stale-UKI removal), at 10 %, 40 % and 70 %.
// Then it lets the download finish and cuts the power when the agent
// prints that the slot is written and verified (while the UKI is copied
// to its temporary name) and right after the UKI's rename. Every boot but
// the last must be 1.0.0 on A (unless the rename beat the kill); the last
// is 2.0.0 on B, which passes its trial and commits. After a clean
// power-off the disk is checked (sgdisk -v, e2fsck -fn, and fsck.fat -n,
// which may only report what a power cut with the ESP mounted always
// leaves: see checkDiskAfterPowerCuts) and the machine id on STATE is the
// one the first boot created.
func TestUpdatePowerCut(t *testing.T) {
	harness.RequireQEMU(t)
	e := newUpdateEnv(t, 1)
	img1, _ := e.build(e.osFile("1.0.0", "", ""))
	_, m2 := e.build(e.osFile("2.0.0", "", ""))
	e.publishTo(e.repo, m2, repo.PublishOptions{NoChunkIndex: true})
	fi, err := os.Stat(repoTarget(t, e.repo, ".root.erofs"))
	if err != nil {
		t.Fatal(err)
	}
	rootLen := fi.Size()
	start := time.Now()

	cuts := []struct {
		name string
		at   int64
	}{
		{"after the stale-UKI removal, before the root write", 0},
		{"10% of the root written", rootLen / 10},
		{"40% of the root written", rootLen * 4 / 10},
		{"70% of the root written", rootLen * 7 / 10},
	}
	reached := e.holdRoot(cuts[0].at)
	vm := harness.Boot(t, harness.Options{Image: img1})
	m := vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "1.0.0" || m[2] != "A" {
		t.Fatalf("first boot %q, want 1.0.0 on A", m[0])
	}
	id := vm.ExpectRegexp(t, machineIDRe, bootTimeout)[1]
	noNewID := func() {
		t.Helper()
		if m := machineIDRe.FindStringSubmatch(vm.Console().Log()); m != nil {
			t.Errorf("STATE lost the machine id: this boot created %s (first boot: %s)", m[1], id)
		}
	}
	cut := func(what string) string {
		t.Helper()
		vm.QEMU().Kill()
		_ = vm.QEMU().Wait()
		log := vm.Console().Log()
		vm.Restart(t)
		t.Logf("power cut %s (%s)", what, time.Since(start).Round(100*time.Millisecond))
		return log
	}
	for i, c := range cuts {
		select {
		case <-reached:
		case <-time.After(updateTimeout):
			t.Fatalf("the root download never reached %d bytes (%s)\n%s", c.at, c.name, strings.Join(vm.Console().Tail(40), "\n"))
		}
		if i > 0 {
			noNewID()
		}
		next := int64(-1)
		if i+1 < len(cuts) {
			next = cuts[i+1].at
		}
		reached = e.holdRoot(next)
		cut(fmt.Sprintf("%s (%d of %d bytes sent)", c.name, c.at, rootLen))
		m = vm.ExpectRegexp(t, readyRe, bootTimeout)
		if m[1] != "1.0.0" || m[2] != "A" {
			t.Fatalf("after the cut %s: %q, want 1.0.0 on A", c.name, m[0])
		}
	}

	// The whole root image now: cut while the UKI goes to its temporary
	// name, then right after its rename.
	vm.Expect(t, "cairn: update: slot B: root image written and verified", updateTimeout)
	noNewID()
	log := cut("after the root write and verify, before the UKI rename")
	renamed := strings.Contains(log, "update: wrote EFI/Linux/cairn-2.0.0+3.efi")
	m = vm.ExpectRegexp(t, readyRe, bootTimeout)
	switch {
	case renamed && (m[1] != "2.0.0" || m[2] != "B"):
		t.Fatalf("the UKI was renamed before the cut, booted %q, want 2.0.0 on B", m[0])
	case !renamed && (m[1] != "1.0.0" || m[2] != "A"):
		t.Fatalf("after the cut before the UKI rename: %q, want 1.0.0 on A", m[0])
	case renamed:
		t.Log("the rename beat the power cut: skipping the last cut")
	default:
		vm.Expect(t, "cairn: update: wrote EFI/Linux/cairn-2.0.0+3.efi", updateTimeout)
		noNewID()
		cut("right after the UKI rename")
		m = vm.ExpectRegexp(t, readyRe, bootTimeout)
		if m[1] != "2.0.0" || m[2] != "B" {
			t.Fatalf("after the cut after the rename: %q, want 2.0.0 on B", m[0])
		}
	}
	vm.Expect(t, "cairn: update: committed 2.0.0", updateTimeout)
	noNewID()
	t.Logf("v2 committed after the power cuts (%s)", time.Since(start).Round(100*time.Millisecond))
	vm.PowerOff(t, shutdownTimeout)
	checkDiskAfterPowerCuts(t, vm.Disk())
	if got := strings.TrimSpace(stateFile(t, vm.Disk(), "/lib/cairn/machine-id")); got != id {
		t.Errorf("machine id on STATE %q, first boot created %q", got, id)
	}
}

// TestUpdateHostileRepository is scenario 5 of issue 6 in the guest: one
// machine on 1.0.0 checks every 3 s (cairn_test.update_interval=3s on its
// kernel command line; an OS file allows no less than 1m) while the test
// serves it hostile copies of a repository that offers 2.0.0: a tampered
// UKI (one byte changed), a truncated UKI, timestamp metadata with a bad
// signature, expired timestamp metadata, and metadata older than what the
// machine has already seen (a rollback). Each is rejected with an error on
// the console, and after a clean power-off slot B's first MiB and the
// ESP's UKIs are what they were before: nothing was written.
func TestUpdateHostileRepository(t *testing.T) {
	harness.RequireQEMU(t)
	e := newUpdateEnv(t, 1)
	img1, _ := e.build(e.osFile("1.0.0", "", "", "cairn_test.update_interval=3s"))
	_, m2 := e.build(e.osFile("2.0.0", "", ""))
	slotB := partBytes(t, img1, disk.LabelRootB, 1<<20)
	ukis := espUKIs(t, img1)

	good := copyRepo(t, e.repo)
	e.publishTo(good, m2, repo.PublishOptions{})
	tampered := copyRepo(t, good)
	uki := repoTarget(t, tampered, ".uki-B.efi")
	data, err := os.ReadFile(uki)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(uki, data, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := copyRepo(t, good)
	if err := os.Truncate(repoTarget(t, truncated, ".uki-B.efi"), int64(len(data)/2)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	badSig := copyRepo(t, good)
	if err := repo.Resign(ctx, badSig, e.keys, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	corruptSignature(t, filepath.Join(badSig, "metadata", "timestamp.json"))
	expired := copyRepo(t, good)
	if err := repo.Resign(ctx, expired, e.keys, repo.Options{
		Expiry: repo.Expiry{Timestamp: time.Minute},
		Now:    func() time.Time { return time.Now().Add(-time.Hour) },
	}); err != nil {
		t.Fatal(err)
	}
	old := copyRepo(t, e.repo) // before 2.0.0: older timestamp, snapshot and targets

	vm := harness.Boot(t, harness.Options{Image: img1})
	m := vm.ExpectRegexp(t, readyRe, bootTimeout)
	if m[1] != "1.0.0" || m[2] != "A" {
		t.Fatalf("boot %q, want 1.0.0 on A", m[0])
	}
	vm.Expect(t, "cairn: update: check interval 3s", bootTimeout)
	vm.Expect(t, "cairn: update: agent on hello 1.0.0 slot A", bootTimeout)
	for _, c := range []struct {
		name, dir string
		want      *regexp.Regexp
	}{
		{"tampered UKI", tampered, regexp.MustCompile(`cairn: update: install 2\.0\.0: check: .*(hash|sha256|length)`)},
		{"truncated UKI", truncated, regexp.MustCompile(`cairn: update: install 2\.0\.0: check: .*(length|EOF|hash|sha256|short)`)},
		{"bad timestamp signature", badSig, regexp.MustCompile(`cairn: update: .*(unsigned metadata|signature)`)},
		{"expired timestamp", expired, regexp.MustCompile(`cairn: update: .*timestamp\.json is expired`)},
		{"metadata rollback", old, regexp.MustCompile(`cairn: update: .*new timestamp version 1 must be >=`)},
	} {
		e.serveFrom(c.dir)
		l := vm.ExpectRegexp(t, c.want, updateTimeout)
		t.Logf("%s: %s", c.name, l[0])
	}
	log := vm.Console().Log()
	for _, bad := range []string{"update: downloading 2.0.0 5%", "root image written", "update: wrote EFI/Linux", "rebooting 2.0.0"} {
		if strings.Contains(log, bad) {
			t.Errorf("a hostile repository got as far as %q", bad)
		}
	}
	vm.PowerOff(t, shutdownTimeout)
	if got := partBytes(t, vm.Disk(), disk.LabelRootB, 1<<20); !sameBytes(got, slotB) {
		t.Error("slot B's first MiB changed")
	}
	// The first boot's entry is blessed (cairn-1.0.0+3.efi becomes
	// cairn-1.0.0.efi); nothing else may change.
	if got := espUKIs(t, vm.Disk()); len(got) != len(ukis) || strings.Contains(strings.Join(got, " "), "2.0.0") {
		t.Errorf("ESP UKIs %v, were %v", got, ukis)
	}
	checkDisk(t, vm.Disk())
}
