//go:build linux

package system

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/bootcount"
	"cairn.dev/cairn/init/mount"
)

// Bless marks the running boot entry as good if systemd-boot is counting
// it: efivarfs -> LoaderBootCountPath -> mount the ESP at /efi -> rename.
// Not booted via EFI, or no counter: nothing to do (logged).
//
// PID 1 blesses right away only when the OS file has no update section;
// with one, the update agent judges the boot (see update.go).
func (p *pid1) Bless(ctx context.Context) error {
	logf := p.log.Func("bootcount")
	vars, ok, err := p.mountBootEnv(ctx, true)
	if err != nil || !ok {
		return err
	}
	if vars.BootCountPath == "" {
		logf("entry %q is not boot-counted, nothing to bless", vars.EntrySelected)
		return nil
	}
	oldName, newName, err := bootcount.Bless(ESPMount, vars.BootCountPath)
	if err != nil {
		return err
	}
	if oldName == newName {
		logf("%s already blessed", newName)
		return nil
	}
	logf("blessed %s -> %s", oldName, newName)
	return nil
}

// mountBootEnv loads and mounts efivarfs, reads the loader variables and,
// when the boot is counted or always is set, mounts the ESP on /efi. ok is
// false when there is no EFI (direct boot): nothing to judge or bless.
func (p *pid1) mountBootEnv(ctx context.Context, onlyCounted bool) (vars bootcount.Vars, ok bool, err error) {
	logf := p.log.Func("bootcount")
	if _, err := os.Stat("/sys/firmware/efi"); errors.Is(err, os.ErrNotExist) {
		logf("not booted via EFI, nothing to bless")
		return vars, false, nil
	}
	if err := p.LoadModules(ctx, "efivarfs"); err != nil {
		if errors.Is(err, unix.ENODEV) {
			logf("efivarfs: no EFI runtime, nothing to bless")
			return vars, false, nil
		}
		return vars, false, fmt.Errorf("load efivarfs: %w", err)
	}
	if ok, _ := mount.IsMountpoint(Efivars); !ok {
		if err := mount.Mount("efivarfs", Efivars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			if errors.Is(err, unix.ENODEV) {
				logf("efivarfs unavailable, nothing to bless")
				return vars, false, nil
			}
			return vars, false, err
		}
	}
	if vars, err = bootcount.ReadVars(Efivars); err != nil {
		return vars, false, err
	}
	if vars.BootCountPath == "" && onlyCounted {
		return vars, true, nil
	}
	if p.info.ESP == "" {
		return vars, false, fmt.Errorf("entry %s: the ESP was not found", vars.EntrySelected)
	}
	if err := p.LoadModules(ctx, "vfat", "nls_cp437", "nls_ascii"); err != nil {
		return vars, false, fmt.Errorf("load vfat: %w", err)
	}
	if ok, _ := mount.IsMountpoint(ESPMount); !ok {
		if err := mount.Mount(p.info.ESP, ESPMount, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=0077"); err != nil {
			return vars, false, err
		}
	}
	return vars, true, nil
}
