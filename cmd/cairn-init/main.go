// Command cairn-init is Cairn's guest binary: /init in the initramfs (early
// stage) and /sbin/init in the root (system stage).
package main

import (
	"fmt"
	"os"

	"cairn.dev/cairn/init/early"
	"cairn.dev/cairn/init/system"
)

func main() {
	switch {
	case os.Getpid() == 1 && os.Args[0] == "/init":
		early.Main()
	case os.Getpid() == 1:
		system.Main()
	default:
		fmt.Fprintln(os.Stderr, "cairn-init: must run as PID 1 (/init in the initramfs, /sbin/init in the root)")
		os.Exit(2)
	}
}
