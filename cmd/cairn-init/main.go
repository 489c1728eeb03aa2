// Command cairn-init is Cairn's guest binary: /init in the initramfs (early
// stage) and /sbin/init in the root (system stage). Invoked as
// "cairn-runtime" (a link to it) it is an OCI runtime with runc's command
// line; invoked as cairn-init with a command (not as PID 1) it offers
// "images" and "ctr".
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"cairn.dev/cairn/init/early"
	"cairn.dev/cairn/init/system"
	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/ctr"
	"cairn.dev/cairn/runtime/ociruntime"
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
	case filepath.Base(os.Args[0]) == "cairn-runtime":
		os.Exit(ociruntime.Main(os.Args[1:]))
	case len(os.Args) > 1 && os.Args[1] == "images":
		os.Exit(ctr.ImagesMain(os.Args[2:]))
	case len(os.Args) > 1 && os.Args[1] == "ctr":
		os.Exit(ctr.Main(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "cairn-init: must run as PID 1 (/init in the initramfs, /sbin/init in the root),")
		fmt.Fprintln(os.Stderr, "  or with a command: cairn-init images|ctr ...; as cairn-runtime it is an OCI runtime")
		os.Exit(2)
	}
}
