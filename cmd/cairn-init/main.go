// Command cairn-init is Cairn's guest binary: /init in the initramfs (early
// stage) and /sbin/init in the root (system stage). Invoked as
// "cairn-runtime" (a link to it) it is an OCI runtime with runc's command
// line; invoked as cairn-init with a command (not as PID 1) it offers
// "images" and "ctr".
//
// It is built twice from this source. The full build has everything. The
// PID 1 build (-tags cairn_pid1) leaves out the command-line tools and the
// registry client, because the early stage reads the system stage's binary
// through dm-verity before READY and its size is boot time; it is about half
// the size of the full build. The image puts the PID 1 build at /init and
// /sbin/init, and the full build at /usr/bin/cairn-init (with
// /usr/bin/cairn-runtime linked to it).
package main

import (
	"fmt"
	"os"

	"cairn.dev/cairn/init/early"
	"cairn.dev/cairn/init/system"
	"cairn.dev/cairn/runtime/container"
)

func main() {
	// A container stage (re-executed by runtime/container) never returns
	// from here; for everything else it is one environment lookup.
	container.MaybeStage()
	switch {
	case os.Getpid() == 1 && os.Args[0] == "/init":
		early.Main()
	case os.Getpid() == 1:
		system.Main()
	}
	if code, ok := tools(os.Args); ok {
		os.Exit(code)
	}
	fmt.Fprintln(os.Stderr, "cairn-init: must run as PID 1 (/init in the initramfs, /sbin/init in the root),")
	fmt.Fprintln(os.Stderr, "  or with a command: cairn-init images|ctr ...; as cairn-runtime it is an OCI runtime")
	os.Exit(2)
}
