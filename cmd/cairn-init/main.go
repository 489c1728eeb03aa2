// Command cairn-init is Cairn's guest binary: /init in the initramfs (early
// stage) and /sbin/init in the root (system stage). Invoked as
// "cairn-runtime" (a link to it) it is an OCI runtime with runc's command
// line; invoked as cairn-init with a command (not as PID 1) it offers
// "images" and "ctr".
//
// It is built three times from this source, because on the boot path a
// binary's size and its packages' initialisation are boot time: the kernel
// unpacks /init from the initramfs, and the early stage reads the system
// stage's binary through dm-verity before READY.
//
//   - the full build (no tags) has everything: both stages, the container
//     runtime and its tools; the image installs it as /usr/bin/cairn-init,
//     with /usr/bin/cairn-runtime linked to it;
//   - the PID 1 build (-tags cairn_pid1) has both stages and nothing else;
//     it is /sbin/init;
//   - the early build (-tags cairn_early) has only the early stage; it is
//     /init in the initramfs.
package main

import (
	"fmt"
	"os"
)

func main() {
	// A container stage (re-executed by runtime/container) never returns
	// from here; for everything else it is one environment lookup.
	maybeStage()
	if os.Getpid() == 1 {
		pid1() // never returns
	}
	if code, ok := tools(os.Args); ok {
		os.Exit(code)
	}
	fmt.Fprintln(os.Stderr, "cairn-init: must run as PID 1 (/init in the initramfs, /sbin/init in the root),")
	fmt.Fprintln(os.Stderr, "  or with a command: cairn-init images|ctr ...; as cairn-runtime it is an OCI runtime")
	os.Exit(2)
}
