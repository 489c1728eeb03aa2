//go:build cairn_pid1 || cairn_early

package main

import (
	"fmt"
	"os"
)

// maybeStage does nothing in the boot-path builds: PID 1 does not start
// containers yet, so nothing re-executes it as a container stage. (When it
// does, its stage must come without the runtime's package initialisation
// cost on the boot path.)
func maybeStage() {}

// tools in the boot-path builds points at the full build, which has them.
func tools([]string) (code int, ok bool) {
	fmt.Fprintln(os.Stderr, "cairn-init: this is a boot-path build; the tools (images, ctr, cairn-runtime) are in /usr/bin/cairn-init")
	return 2, true
}
