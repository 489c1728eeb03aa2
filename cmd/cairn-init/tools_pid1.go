//go:build cairn_pid1

package main

import (
	"fmt"
	"os"
)

// tools in the PID 1 build points at the full build, which has them.
func tools(args []string) (code int, ok bool) {
	if len(args) > 1 || len(args) == 1 && args[0] != "" {
		fmt.Fprintln(os.Stderr, "cairn-init: this is the PID 1 build; the tools (images, ctr, cairn-runtime) are in /usr/bin/cairn-init")
	}
	return 2, true
}
