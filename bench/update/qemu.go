package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"cairn.dev/cairn/qemu"
	"cairn.dev/cairn/update/repo"
	"cairn.dev/cairn/update/server"
)

// QEMUResult is one update of a VM (OVMF, systemd-boot, TCG) from v1 to
// v2, timed from the publish.
type QEMUResult struct {
	CheckInterval      string `json:"check_interval"`
	PublishToDownload  int64  `json:"publish_to_downloading_ms"`
	PublishToRebooting int64  `json:"publish_to_rebooting_ms"`
	PublishToReady     int64  `json:"publish_to_v2_ready_ms"`
	PublishToCommitted int64  `json:"publish_to_committed_ms"`
	Delta              string `json:"delta,omitempty"` // the agent's delta line
}

const qemuOS = `name: hello
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
    timeout: 1m
`

// measureQEMU builds v1 and v2 of a small OS with an update section,
// boots v1 under QEMU (checking every 2 s through the test-only
// cairn_test.update_interval knob, so that the time measured is the
// update's and not the wait for the next check), publishes v2 once v1's
// agent runs, and times the console lines up to "committed 2.0.0".
func measureQEMU(ctx context.Context, cairn, dir string) (*QEMUResult, error) {
	keys, repoDir := filepath.Join(dir, "keys"), filepath.Join(dir, "repo")
	if err := repo.InitKeys(keys); err != nil {
		return nil, err
	}
	if err := repo.Init(ctx, repoDir, keys, repo.Options{}); err != nil {
		return nil, err
	}
	root, err := os.ReadFile(filepath.Join(repoDir, "metadata", "root.json"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "root.json"), root, 0o644); err != nil {
		return nil, err
	}
	store, err := server.NewFileStore(filepath.Join(dir, "serve.json"))
	if err != nil {
		return nil, err
	}
	srv, err := server.New(server.Config{Repo: repoDir, Store: store, LeaseLimit: 1, LeaseTTL: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(l)
	defer hs.Close()
	url := fmt.Sprintf("http://10.0.2.2:%d", l.Addr().(*net.TCPAddr).Port)

	var imgs, manifests [2]string
	for i, v := range []string{"1.0.0", "2.0.0"} {
		cmdline := ""
		if i == 0 {
			cmdline = `"cairn_test.update_interval=2s"`
		}
		osFile := filepath.Join(dir, "hello-"+v+".yaml")
		if err := os.WriteFile(osFile, fmt.Appendf(nil, qemuOS, v, cmdline, url), 0o644); err != nil {
			return nil, err
		}
		out := filepath.Join(dir, "v"+v)
		cmd := exec.CommandContext(ctx, cairn, "build", "-o", out, osFile)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("build %s: %w", osFile, err)
		}
		imgs[i], manifests[i] = filepath.Join(out, "hello.img"), filepath.Join(out, "hello.manifest.json")
	}
	vm, err := qemu.Start(ctx, qemu.Config{Image: imgs[0], ImageFormat: "raw", VarsFile: filepath.Join(dir, "OVMF_VARS.fd"), TempDir: dir})
	if err != nil {
		return nil, err
	}
	defer func() { vm.Kill(); _ = vm.Wait() }()
	wait := func(re string) error {
		if _, err := vm.WaitFor(ctx, regexp.MustCompile(re), 5*time.Minute); err != nil {
			return fmt.Errorf("%w\n%s", err, strings.Join(vm.Console().Tail(30), "\n"))
		}
		return nil
	}
	if err := wait(`cairn: update: agent on hello 1\.0\.0`); err != nil {
		return nil, err
	}
	published := time.Now()
	if _, err := repo.Publish(ctx, repoDir, keys, manifests[1], repo.PublishOptions{Channel: "stable"}); err != nil {
		return nil, err
	}
	res := &QEMUResult{CheckInterval: "2s"}
	for _, s := range []struct {
		re  string
		out *int64
	}{
		{`cairn: update: downloading 2\.0\.0`, &res.PublishToDownload},
		{`cairn: update: rebooting 2\.0\.0`, &res.PublishToRebooting},
		{`CAIRN-READY version=2\.0\.0`, &res.PublishToReady},
		{`cairn: update: committed 2\.0\.0`, &res.PublishToCommitted},
	} {
		if err := wait(s.re); err != nil {
			return nil, err
		}
		*s.out = time.Since(published).Milliseconds()
	}
	for _, l := range vm.Console().Lines() {
		if m := regexp.MustCompile(`update: (delta: wrote .*)`).FindStringSubmatch(l.Text); m != nil {
			res.Delta = m[1]
		}
	}
	return res, nil
}
