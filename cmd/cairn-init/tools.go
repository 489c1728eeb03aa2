//go:build !cairn_pid1 && !cairn_early

package main

import (
	"path/filepath"

	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/ctr"
	"cairn.dev/cairn/runtime/ociruntime"
)

// maybeStage runs a container stage re-executed by runtime/container.
func maybeStage() { container.MaybeStage() }

// tools runs the command-line tools of the full build: the OCI runtime
// (argv[0] cairn-runtime) and cairn-init images|ctr.
func tools(args []string) (code int, ok bool) {
	switch {
	case filepath.Base(args[0]) == "cairn-runtime":
		return ociruntime.Main(args[1:]), true
	case len(args) > 1 && args[1] == "images":
		return ctr.ImagesMain(args[2:]), true
	case len(args) > 1 && args[1] == "ctr":
		return ctr.Main(args[2:]), true
	case len(args) > 1 && args[1] == "update-agent":
		return updateAgentMain(args[2:]), true
	}
	return 0, false
}
