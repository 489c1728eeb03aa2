//go:build cairn_pid1 || cairn_early

package main

import (
	"fmt"
	"os"
)

// tools in the boot-path builds points at the full build, which has them.
func tools([]string) (code int, ok bool) {
	fmt.Fprintln(os.Stderr, "cairn-init: this is a boot-path build; the tools (images, ctr, cairn-runtime) are in /usr/bin/cairn-init")
	return 2, true
}
