package qemutests

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"cairn.dev/cairn/qemu-tests/harness"
)

// leaseRe is PID 1's console line for the DHCP lease from QEMU user
// networking (slirp: 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3).
var leaseRe = regexp.MustCompile(`cairn: network: (\S+) 10\.0\.2\.15/24 via 10\.0\.2\.2 dns 10\.0\.2\.3\b.*\(lease (\S+)\)`)

// TestNetworkDHCP boots the hello image directly: after READY, PID 1 takes
// the first ethernet interface up with DHCP from QEMU's user networking and
// reports the lease; at power-off it releases it.
func TestNetworkDHCP(t *testing.T) {
	t.Parallel()
	harness.RequireQEMU(t)
	img := images.Build(t, helloOS)
	vm := harness.Boot(t, harness.Options{Image: img, Direct: true})
	vm.ExpectRegexp(t, readyRe, bootTimeout)
	m := vm.ExpectRegexp(t, leaseRe, bootTimeout)
	t.Logf("lease line: %s", m[0])
	// The power key watcher may have started before or after the lease.
	waitConsole(t, vm, "(Power Button) for the power key", bootTimeout)
	vm.Powerdown(t)
	vm.Expect(t, "cairn: network: "+m[1]+": released 10.0.2.15/24", shutdownTimeout)
	vm.Expect(t, "cairn: shutdown complete", shutdownTimeout)
	if err := vm.WaitExit(t, shutdownTimeout); err != nil {
		t.Fatalf("QEMU after power-off: %v", err)
	}
}

// waitConsole waits until the whole console log so far contains substr,
// wherever it is (vm.Expect only looks after its previous match).
func waitConsole(t *testing.T, vm *harness.VM, substr string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !strings.Contains(vm.Console().Log(), substr); {
		if time.Now().After(deadline) {
			t.Fatalf("no console line with %q after %v", substr, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
