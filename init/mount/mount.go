//go:build linux

// Package mount wraps mount(2) for PID 1 and implements switch_root.
package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Mount creates target (0755) and mounts source on it.
func Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", target, err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (%s): %w", source, target, fstype, err)
	}
	return nil
}

// IsMountpoint reports whether dir is on a different device than its parent
// (or is "/").
func IsMountpoint(dir string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Lstat(dir, &a); err != nil {
		return false, fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := unix.Lstat(filepath.Join(dir, ".."), &b); err != nil {
		return false, fmt.Errorf("stat %s/..: %w", dir, err)
	}
	return a.Dev != b.Dev || a.Ino == b.Ino, nil
}

// Early mounts the API filesystems PID 1 needs: /proc, /sys, /dev
// (devtmpfs) and /run (tmpfs). Already-mounted ones are left alone.
func Early() error {
	for _, m := range []struct {
		src, dst, typ string
		flags         uintptr
		data          string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if ok, err := IsMountpoint(m.dst); err == nil && ok {
			continue
		}
		if err := Mount(m.src, m.dst, m.typ, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	return nil
}

// WaitFile polls for path to exist.
func WaitFile(ctx context.Context, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// SwitchRoot moves /dev, /proc, /sys and /run into newRoot, deletes the
// initramfs contents (without crossing into other filesystems), makes newRoot
// the root and execs init with argv and env. It only returns on failure.
func SwitchRoot(newRoot, init string, argv, env []string) error {
	for _, d := range []string{"/dev", "/proc", "/sys", "/run"} {
		dst := filepath.Join(newRoot, d)
		if err := os.MkdirAll(dst, 0o755); err != nil && !errors.Is(err, unix.EROFS) {
			return fmt.Errorf("switch_root: %w", err)
		}
		if err := unix.Mount(d, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch_root: move %s: %w", d, err)
		}
	}
	var rootSt unix.Stat_t
	if err := unix.Stat("/", &rootSt); err != nil {
		return fmt.Errorf("switch_root: %w", err)
	}
	var newSt unix.Stat_t
	if err := unix.Stat(newRoot, &newSt); err != nil {
		return fmt.Errorf("switch_root: %w", err)
	}
	if newSt.Dev == rootSt.Dev {
		return fmt.Errorf("switch_root: %s is not a mount point", newRoot)
	}
	// Free the initramfs RAM. Errors are not fatal.
	_ = RemoveSameDev("/", rootSt.Dev, newRoot)
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch_root: chdir: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch_root: move root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch_root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch_root: chdir /: %w", err)
	}
	if err := unix.Exec(init, argv, env); err != nil {
		return fmt.Errorf("switch_root: exec %s: %w", init, err)
	}
	return nil
}

// RemoveSameDev removes the contents of dir that live on device dev, never
// descending into other filesystems or into skip. dir itself is kept.
func RemoveSameDev(dir string, dev uint64, skip string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if p == skip {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := RemoveSameDev(p, dev, skip); err != nil {
				errs = append(errs, err)
			}
			if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
