//go:build !linux

package agent

import "os"

func uncache(*os.File, int64, int64) error { return nil }
