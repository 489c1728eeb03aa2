package qemutests

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cairn.dev/cairn/qemu"
	"cairn.dev/cairn/qemu-tests/harness"
)

// servicesOS is the services scenario (webOS, os/examples/web.yaml, is
// declared in bake_test.go).
const servicesOS = "testdata/services.yaml"

// TestWebExample boots os/examples/web.yaml and fetches its page from the
// host through the forwarded port, as `cairn run --port 8080:8080` would.
func TestWebExample(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, webOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, Mem: "512M",
		Ports: []qemu.PortForward{{Host: 18090, Guest: 8080}}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", vm.Console().Log())
		}
	})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	if body := getPage(t, vm, "http://127.0.0.1:18090/"); body != "hi from web\n" {
		t.Errorf("page = %q, want %q", body, "hi from web\n")
	}
	waitConsole(t, vm, "cairn: service web: healthy", bootTimeout)
	vm.Powerdown(t)
	vm.Expect(t, "cairn: service web: stopped (exited with code 0)", shutdownTimeout)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
}

// getPage GETs url until it answers 200 (the guest is still starting).
func getPage(t *testing.T, vm *harness.VM, url string) string {
	t.Helper()
	deadline := time.Now().Add(bootTimeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			err = &httpStatusError{resp.StatusCode}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s through the forwarded port: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestServices boots testdata/services.yaml once and checks the supervisor
// in PID 1: the web service answers through a published port (host ->
// QEMU forward -> guest DNAT -> container) and turns healthy; a
// crash-looping service is restarted with growing backoff while the others
// keep running; a failing health check shows as unhealthy and its
// service_healthy dependant keeps waiting; a container reaches a server on
// the host's loopback through the bridge, NAT and QEMU's gateway; the memory
// limit OOM-kills a service and the console says so; the pids limit
// contains a fork bomb; sd_notify READY=1 makes a service healthy; at
// power-off the services are stopped (SIGTERM, recorded by the trap
// service's exit code) before the unmount.
func TestServices(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	// The fetch service's target: a server on the host's loopback, which
	// the guest sees as 10.0.2.2.
	ln, err := net.Listen("tcp", "127.0.0.1:28417")
	if err != nil {
		t.Fatalf("listen on the port that testdata/services.yaml names: %v", err)
	}
	var hits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "hello from the host")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	img := images.Build(t, servicesOS)
	const hostPort, victimPort, apiPort = 18080, 18095, 18096
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true, Mem: "512M", ExtraAppend: os.Getenv("CAIRN_TEST_APPEND"),
		Ports: []qemu.PortForward{{Host: hostPort, Guest: 8080}, {Host: victimPort, Guest: 9090}, {Host: apiPort, Guest: 9091}}})
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CAIRN_TEST_CONSOLE") != "" {
			t.Logf("console:\n%s", vm.Console().Log())
		}
	})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	waitConsole(t, vm, "cairn: service web: running (pid ", bootTimeout)

	// The page, through the published port.
	body := getPage(t, vm, "http://127.0.0.1:18080/")
	if body != "hi from web\n" {
		t.Errorf("page = %q, want %q", body, "hi from web\n")
	}
	waitConsole(t, vm, "cairn: service web: healthy", bootTimeout)

	// The crash loop backs off: 200ms, 400ms, 800ms...
	for _, d := range []string{"200ms (restart 1)", "400ms (restart 2)", "800ms (restart 3)"} {
		waitConsole(t, vm, "cairn: service crashloop: exited with code 1, restarting in "+d, bootTimeout)
	}
	// Killing a service's process with SIGKILL: PID 1 restarts it with
	// the first backoff step, and it answers again.
	waitConsole(t, vm, "cairn: service victim: running (pid ", bootTimeout)
	if body := getPage(t, vm, "http://127.0.0.1:18095/"); body != "victim" {
		t.Errorf("victim page = %q", body)
	}
	waitConsole(t, vm, "cairn: service apikill: running (pid ", bootTimeout)
	killed := false
	for deadline := time.Now().Add(bootTimeout); !killed && time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := http.Post("http://127.0.0.1:18096/kill/victim", "text/plain", nil)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("kill through the API: %s: %s", resp.Status, b)
		}
		killed = true
	}
	waitConsole(t, vm, "cairn: service victim: exited with code 137 (signal killed), restarting in 200ms (restart 1)", bootTimeout)
	if body := getPage(t, vm, "http://127.0.0.1:18095/"); body != "victim" {
		t.Errorf("victim page after the restart = %q", body)
	}
	// The unhealthy service and its waiting dependant.
	waitConsole(t, vm, "cairn: service sick: unhealthy (http check: ", bootTimeout)
	if strings.Contains(vm.Console().Log(), "cairn: service dependant: running") {
		t.Error("dependant started although its service_healthy dependency is unhealthy")
	}
	// The web service still answers while the other one crash-loops.
	if resp, err := http.Get("http://127.0.0.1:18080/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz during the crash loop: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Outbound through the bridge and NAT to the host's loopback.
	waitConsole(t, vm, "cairn: service fetch: exited with code 0", bootTimeout)
	if hits.Load() == 0 {
		t.Error("the fetch service exited 0 but the host server saw no request")
	}
	// The memory limit: OOM kill detected and reported.
	waitConsole(t, vm, "cairn: service oom: failed with code 137 (signal killed) (out of memory: killed by the cgroup memory limit)", bootTimeout)
	// The pids limit contains a fork bomb.
	waitConsole(t, vm, "cairn: service forkbomb: exited with code 0", bootTimeout)
	waitConsole(t, vm, "cairn: service trap: running", bootTimeout)
	// Readiness through the notify socket.
	waitConsole(t, vm, "cairn: service notified: ready (sd_notify)", bootTimeout)
	waitConsole(t, vm, "cairn: service notified: healthy", bootTimeout)
	logStartTimes(t, vm.Console().Log())

	vm.Powerdown(t)
	// The trap service got SIGTERM (it exits 42 on it), before the unmount.
	vm.Expect(t, "cairn: service trap: stopped (exited with code 42)", shutdownTimeout)
	waitConsole(t, vm, "cairn: service web: stopped", shutdownTimeout)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Fatalf("QEMU after power-off: %v", err)
	}
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return http.StatusText(e.code) }

var readyMsRe = regexp.MustCompile(`CAIRN-READY .*boot_ms=(\d+)`)

// logStartTimes logs READY and the first service start, for the record.
func logStartTimes(t *testing.T, log string) {
	if m := readyMsRe.FindStringSubmatch(log); m != nil {
		t.Logf("READY at %s ms", m[1])
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "services t=") || strings.Contains(l, "first service running t=") {
			t.Logf("console: %s", strings.TrimSpace(l))
		}
	}
}
