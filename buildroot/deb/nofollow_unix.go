//go:build unix

package deb

import "syscall"

// noFollow makes file creation fail on a symlink in the final component.
const noFollow = syscall.O_NOFOLLOW
