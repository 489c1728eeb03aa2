// Package qemutests holds Cairn's QEMU scenarios: each test builds a real
// image with bin/cairn (once per test binary), boots a private copy of it
// under QEMU (TCG) and asserts on the serial console and on the disk
// afterwards. They share qemu-tests/harness.
package qemutests

import (
	"os"
	"testing"
	"time"

	"cairn.dev/cairn/qemu-tests/harness"
)

// images is created by TestMain and shared by the tests; it is not
// modified after start-up except through its own lock.
var images *harness.Images

func TestMain(m *testing.M) {
	images = harness.NewImages()
	code := m.Run()
	if err := images.Close(); err != nil && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// Timeouts for console lines under TCG on a busy 2-core machine.
const (
	bootTimeout     = 3 * time.Minute
	shutdownTimeout = time.Minute
)

const helloOS = "../os/examples/hello.yaml"
