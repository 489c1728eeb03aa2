//go:build !cairn_early

package main

import (
	"os"

	"cairn.dev/cairn/init/early"
	"cairn.dev/cairn/init/system"
)

// pid1 runs the early stage as /init in the initramfs, else the system stage.
func pid1() {
	if os.Args[0] == "/init" {
		early.Main()
	}
	system.Main()
}
