package qemutests

import (
	"strings"
	"testing"

	"cairn.dev/cairn/qemu"
	"cairn.dev/cairn/qemu-tests/harness"
)

// TestProvisionFwCfg boots the web image with a machine config in fw_cfg:
// PID 1 accepts it, stores it on STATE, changes the host name and hands a
// second service to the supervisor, which runs it on this first boot.
// After a clean power-off, the next boot uses the stored config (and sees
// that fw_cfg still holds the same one) and runs the service again.
func TestProvisionFwCfg(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, webOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, FwCfgFile: "testdata/provision/machine.yaml",
		Ports: []qemu.PortForward{{Host: 18091, Guest: 8081}}})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	vm.Expect(t, "cairn: config: accepted the config from fw_cfg opt/dev.cairn/config (sha256 ", bootTimeout)
	vm.Expect(t, "cairn: config: hostname is now prov-test", bootTimeout)
	vm.Expect(t, "cairn: config: 1 service(s) from the config: web2", bootTimeout)
	// The supervisor takes the config's service on the first boot too.
	waitConsole(t, vm, "cairn: services: starting 2 services", bootTimeout)
	waitConsole(t, vm, "cairn: service web2: running (pid ", bootTimeout)
	// Its command is the arguments of the image's entrypoint: it listens
	// where -listen says, and its published port reaches it.
	if body := getPage(t, vm, "http://127.0.0.1:18091/"); body != "hello from web2\n" {
		t.Errorf("web2 page = %q, want %q", body, "hello from web2\n")
	}
	// Power off once web is up too (its SIGTERM handler installed).
	waitConsole(t, vm, "cairn: service web: healthy", bootTimeout)
	vm.Powerdown(t)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Fatalf("QEMU after power-off: %v", err)
	}

	vm.Restart(t)
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	// The stored config is merged before READY: its service is among those
	// the supervisor starts.
	waitConsole(t, vm, "cairn: services: starting 2 services", bootTimeout)
	waitConsole(t, vm, "cairn: config: using the stored config (from fw_cfg opt/dev.cairn/config, sha256 ", bootTimeout)
	waitConsole(t, vm, "cairn: config: fw_cfg opt/dev.cairn/config matches the stored config", bootTimeout)
	waitConsole(t, vm, "cairn: service web2: running (pid ", bootTimeout)
}

// TestProvisionInvalid passes a machine config whose service uses an image
// the OS image does not carry: PID 1 refuses it as a whole, naming the
// source, line and field, and boots with the image's config (its host name
// and its own service).
func TestProvisionInvalid(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, webOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, FwCfgFile: "testdata/provision/invalid.yaml"})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	line := vm.Expect(t, "cairn: config: fw_cfg opt/dev.cairn/config:4:12: services.web3.image: ", bootTimeout)
	if !strings.Contains(line, "refused, booting with the image's config") {
		t.Fatalf("refusal line: %q", line)
	}
	vm.Expect(t, "cairn: services: starting 1 services", bootTimeout)
	if log := vm.Console().Log(); strings.Contains(log, "cairn: config: hostname is now") {
		t.Fatalf("something of the refused config was applied:\n%s", log)
	}
}
