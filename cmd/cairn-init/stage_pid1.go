//go:build cairn_pid1

package main

import "cairn.dev/cairn/runtime/container"

// maybeStage runs a container stage: PID 1's supervisor starts containers
// by re-executing /sbin/init (this build) as the stage.
func maybeStage() { container.MaybeStage() }
