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
func (p *pid1) Bless(ctx context.Context) error {
	logf := p.log.Func("bootcount")
	if _, err := os.Stat("/sys/firmware/efi"); errors.Is(err, os.ErrNotExist) {
		logf("not booted via EFI, nothing to bless")
		return nil
	}
	if err := p.LoadModules(ctx, "efivarfs"); err != nil {
		if errors.Is(err, unix.ENODEV) {
			logf("efivarfs: no EFI runtime, nothing to bless")
			return nil
		}
		return fmt.Errorf("load efivarfs: %w", err)
	}
	if ok, _ := mount.IsMountpoint(Efivars); !ok {
		if err := mount.Mount("efivarfs", Efivars, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			if errors.Is(err, unix.ENODEV) {
				logf("efivarfs unavailable, nothing to bless")
				return nil
			}
			return err
		}
	}
	vars, err := bootcount.ReadVars(Efivars)
	if err != nil {
		return err
	}
	if vars.BootCountPath == "" {
		logf("entry %q is not boot-counted, nothing to bless", vars.EntrySelected)
		return nil
	}
	if p.info.ESP == "" {
		return fmt.Errorf("entry %s is counted but the ESP was not found", vars.BootCountPath)
	}
	if err := p.LoadModules(ctx, "vfat", "nls_cp437", "nls_ascii"); err != nil {
		return fmt.Errorf("load vfat: %w", err)
	}
	if ok, _ := mount.IsMountpoint(ESPMount); !ok {
		if err := mount.Mount(p.info.ESP, ESPMount, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=0077"); err != nil {
			return err
		}
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
