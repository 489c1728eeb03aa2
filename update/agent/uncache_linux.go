//go:build linux

package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

func uncache(f *os.File, off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}
