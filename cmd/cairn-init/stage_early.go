//go:build cairn_early

package main

// maybeStage does nothing in the early build: nothing re-executes it as a
// container stage.
func maybeStage() {}
