//go:build cairn_early

package main

import (
	"cairn.dev/cairn/init/early"
)

// pid1 in the early build runs the early stage, which ends by executing the
// root's /sbin/init (the PID 1 build) or by rebooting.
func pid1() { early.Main() }
