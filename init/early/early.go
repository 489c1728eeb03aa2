//go:build linux

// Package early is the initramfs stage of PID 1: mount the API file systems,
// load the boot modules, find the root slot by PARTUUID, activate dm-verity,
// mount the erofs root and the STATE partition (growing it to the disk's end
// on first boot) and switch_root to /sbin/init. Every failure is fatal:
// "cairn: early: FATAL <reason>", sync, reboot, so that systemd-boot's boot
// counting can fall back to the other slot.
package early

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/bootinfo"
	"cairn.dev/cairn/init/cmdline"
	"cairn.dev/cairn/init/gpt"
	"cairn.dev/cairn/init/kmod"
	"cairn.dev/cairn/init/logring"
	"cairn.dev/cairn/init/mount"
	"cairn.dev/cairn/init/resize"
	"cairn.dev/cairn/init/verity"
)

// StateType is the GPT type of the STATE partition (Discoverable Partitions
// "/var").
const StateType = "4d21b016-b534-45c2-a9fb-5c16e091fd2d"

// ESPType is the GPT type of the EFI system partition.
const ESPType = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

// Paths used by the early stage.
const (
	SysRoot     = "/sysroot"
	NextInit    = "/sbin/init"
	EarlyLog    = "/run/cairn/early.log"
	rootTimeout = 5 * time.Second
)

// Main runs the early stage. It never returns: it execs the root's init or
// reboots.
func Main() {
	start := bootinfo.Now()
	ring := logring.NewRing(256 << 10)
	log := logring.NewLogger(os.Stdout, ring, bootinfo.Now)
	logf := log.Func("early")
	logf("start t=%.3f", start.Seconds())
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		return run(context.Background(), logf, ring, start)
	}()
	fatal(logf, err)
}

func fatal(logf func(string, ...any), err error) {
	if err == nil {
		err = errors.New("switch_root returned")
	}
	logf("FATAL %v", strings.ReplaceAll(err.Error(), "\n", " | "))
	unix.Sync()
	time.Sleep(300 * time.Millisecond) // let the UART drain
	for {
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		time.Sleep(time.Second)
	}
}

func run(ctx context.Context, logf func(string, ...any), ring *logring.Ring, start time.Duration) error {
	if err := mount.Early(); err != nil {
		return err
	}
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fmt.Errorf("read cmdline: %w", err)
	}
	p, err := cmdline.Parse(string(raw))
	if err != nil {
		return err
	}
	if err := p.ValidateRoot(); err != nil {
		return err
	}
	info := bootinfo.Info{Slot: p.Slot, Version: p.Version, EarlyStartMs: bootinfo.Ms(start)}

	// Modules: cairn.load (the known disk path, dm-verity, erofs) at once;
	// coldplug only if the root has not shown up once they are in.
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	modDir := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	_, verbose := p.Args["cairn.debug"]
	debugf := func(format string, args ...any) {
		if verbose {
			logf("debug t=%.3f "+format, append([]any{bootinfo.Now().Seconds()}, args...)...)
		}
	}
	debugf("api mounts and command line done")
	ix, err := kmod.LoadIndex(modDir)
	if err != nil {
		return err
	}
	set := kmod.NewSet(ix, kmod.FinitLoader{})
	set.SetClock(bootinfo.Now)
	debugf("module index read")
	mods, err := startModules(ctx, set, filepath.Join(modDir, "cairn.load"))
	if err != nil {
		return err
	}

	uuid, err := gpt.ParseGUID(p.RootPARTUUID)
	if err != nil {
		return err
	}
	disk, rootPart, err := findPartUUID(ctx, "/sys/block", "/dev", uuid, rootTimeout, mods.loaded, mods.coldplug, logf)
	if err != nil {
		return errors.Join(err, mods.finish(logf, verbose))
	}
	rootName, err := partitionNode("/sys/block", disk.Name, rootPart.Index)
	if err != nil {
		return err
	}
	rootDev := "/dev/" + rootName
	if err := mount.WaitFile(ctx, rootDev, rootTimeout); err != nil {
		return err
	}
	info.Disk, info.Root = "/dev/"+disk.Name, rootDev
	debugf("root partition %s found", rootDev)

	// Look the ESP up before the STATE goroutine may grow (and so rewrite)
	// the partition table.
	if esp, ok := disk.Table.ByType(mustGUID(ESPType)); ok {
		if n, err := partitionNode("/sys/block", disk.Name, esp.Index); err == nil {
			info.ESP = "/dev/" + n
		}
	}

	// STATE needs only the disk (ext4 is built in): mount it now, beside the
	// remaining module loads and the root, and move it under the root later.
	stateDone := make(chan stateResult, 1)
	go func() {
		var r stateResult
		defer func() {
			if x := recover(); x != nil {
				r.err = fmt.Errorf("panic: %v\n%s", x, debug.Stack())
			}
			stateDone <- r
		}()
		r = mountState(ctx, disk, stateStage, logf)
		debugf("STATE mounted")
	}()

	if err := mods.finish(logf, verbose); err != nil {
		return err
	}
	now := bootinfo.Now()
	info.ModulesDoneMs = bootinfo.Ms(now)
	info.ModulesLoaded = set.Count()
	logf("modules done t=%.3f n=%d took=%dms; root %s (%s)", now.Seconds(), info.ModulesLoaded, (now - start).Milliseconds(), rootDev, p.RootPARTUUID)

	dm, err := verity.Activate(ctx, "cairn-root", verity.Params{
		Device: rootDev, DataBlocks: p.VerityBlocks, RootHash: p.VerityRootHash, Salt: p.VeritySalt,
	})
	if err != nil {
		return err
	}
	info.Verity = dm
	if err := mount.Mount(dm, SysRoot, "erofs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		return err
	}
	now = bootinfo.Now()
	info.RootMountedMs = bootinfo.Ms(now)
	logf("root mounted t=%.3f %s on %s (erofs, verity)", now.Seconds(), dm, SysRoot)

	// exec would fault the new init in through dm-verity in small reads;
	// one sequential read now is several times faster (and overlaps the
	// wait for STATE). A read error here is dm-verity refusing a block:
	// fail now rather than with SIGBUS in the new PID 1.
	prefetched := make(chan error, 1)
	go func() {
		t0 := bootinfo.Now()
		n, err := prefetch(filepath.Join(SysRoot, NextInit))
		debugf("prefetched %s: %d bytes in %dms", NextInit, n, (bootinfo.Now() - t0).Milliseconds())
		prefetched <- err
	}()

	st := <-stateDone
	if st.err != nil {
		return st.err
	}
	info.State, info.StateGrownFrom = st.dev, st.grownFrom
	if err := unix.Mount(stateStage, filepath.Join(SysRoot, "var"), "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move STATE to %s/var: %w", SysRoot, err)
	}

	if err := <-prefetched; err != nil {
		return fmt.Errorf("read %s%s: %w", SysRoot, NextInit, err)
	}
	now = bootinfo.Now()
	info.SwitchRootMs = bootinfo.Ms(now)
	logf("switch_root t=%.3f", now.Seconds())
	if err := bootinfo.Write(bootinfo.Path, info); err != nil {
		return err
	}
	lines, _, _ := ring.Since(0)
	_ = os.WriteFile(EarlyLog, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CAIRN_EARLY_START_MS=" + fmt.Sprintf("%.1f", info.EarlyStartMs)}
	return mount.SwitchRoot(SysRoot, NextInit, []string{NextInit}, env)
}

// prefetch reads file into the page cache.
func prefetch(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// stateStage is where STATE is mounted in the initramfs before it is moved
// to /sysroot/var.
const stateStage = "/state"

type stateResult struct {
	dev       string
	grownFrom uint64
	err       error
}

// bootModules loads the listed boot modules at once; coldplug (another disk
// controller than the listed ones) runs only when the root finder asks for
// it, that is when the root is still missing once the listed modules are in.
type bootModules struct {
	set     *kmod.Set
	list    string
	loadErr error
	loaded  chan struct{} // closed when the listed modules are in

	cpCtx    context.Context
	cpCancel context.CancelFunc
	cpDone   chan struct{}
	cpRan    bool
	cpStats  kmod.ColdplugStats
	cpErr    error
}

func startModules(ctx context.Context, set *kmod.Set, list string) (*bootModules, error) {
	names, err := kmod.ReadList(list)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	cpCtx, cancel := context.WithCancel(ctx)
	m := &bootModules{set: set, list: list, loaded: make(chan struct{}), cpCtx: cpCtx, cpCancel: cancel, cpDone: make(chan struct{})}
	go func() {
		defer close(m.loaded)
		_, m.loadErr = set.Load(ctx, names)
	}()
	return m, nil
}

// coldplug starts coldplug in the background; finish stops it.
func (m *bootModules) coldplug() {
	m.cpRan = true
	go func() {
		defer close(m.cpDone)
		m.cpStats, m.cpErr = m.set.Coldplug(m.cpCtx, "/sys")
	}()
}

// finish stops a coldplug still running (the root has been found) and waits
// for the listed modules. A failing listed module is an error.
func (m *bootModules) finish(logf func(string, ...any), verbose bool) error {
	m.cpCancel()
	<-m.loaded
	if m.cpRan {
		<-m.cpDone
	}
	if verbose {
		for _, r := range m.set.Results() {
			logf("module %s: %s-%s took %dms err=%v", r.Module, fmtT(r.Start), fmtT(r.Start+r.Took), r.Took.Milliseconds(), r.Err)
		}
		if m.cpRan {
			logf("coldplug rounds %d, round times %v, sysfs scan times %v", m.cpStats.Rounds, m.cpStats.RoundTimes, m.cpStats.ScanTimes)
		}
	}
	if m.cpErr != nil && !errors.Is(m.cpErr, context.Canceled) {
		logf("coldplug (%d rounds): %v", m.cpStats.Rounds, strings.ReplaceAll(m.cpErr.Error(), "\n", "; "))
	}
	if m.loadErr != nil {
		return fmt.Errorf("load %s: %w", m.list, m.loadErr)
	}
	return nil
}

func fmtT(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

func mustGUID(s string) gpt.GUID {
	g, err := gpt.ParseGUID(s)
	if err != nil {
		panic(err) // constants only
	}
	return g
}

// mountState finds STATE on the root's disk, grows it to the disk's end if
// needed, mounts it at target and grows ext4 online. Growth failures are
// logged, not fatal: the file system is still usable at its old size.
func mountState(ctx context.Context, disk *diskTable, target string, logf func(string, ...any)) (r stateResult) {
	st, ok := disk.Table.ByType(mustGUID(StateType))
	if !ok {
		r.err = fmt.Errorf("no STATE partition (type %s) on %s", StateType, disk.Name)
		return r
	}
	name, err := partitionNode("/sys/block", disk.Name, st.Index)
	if err != nil {
		r.err = err
		return r
	}
	dev := "/dev/" + name
	r.dev = dev
	if err := mount.WaitFile(ctx, dev, rootTimeout); err != nil {
		r.err = err
		return r
	}
	grown, err := growState(disk, st, logf)
	if err != nil {
		logf("grow STATE: %v (continuing at the old size)", err)
	}
	if grown.Grown {
		r.grownFrom = grown.OldLastLBA
	}
	if err := mount.Mount(dev, target, "ext4", unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		r.err = err
		return r
	}
	ss := uint64(disk.Table.SectorSize)
	last := st.LastLBA
	if grown.Grown {
		last = grown.NewLastLBA
	}
	size := int64((last - st.FirstLBA + 1) * ss)
	oldB, newB, err := resize.Ext4(target, size)
	switch {
	case err != nil:
		logf("grow ext4 on %s: %v", dev, err)
	case grown.Grown:
		logf("STATE %s grown: partition LBA %d -> %d (%d MiB), ext4 %d -> %d blocks", dev, grown.OldLastLBA, grown.NewLastLBA, size>>20, oldB, newB)
	}
	return r
}

func growState(disk *diskTable, st gpt.Partition, logf func(string, ...any)) (gpt.GrowResult, error) {
	f, err := os.OpenFile("/dev/"+disk.Name, os.O_RDWR|unix.O_SYNC, 0)
	if err != nil {
		return gpt.GrowResult{}, fmt.Errorf("open %s: %w", disk.Name, err)
	}
	defer f.Close()
	res, err := gpt.Grow(f, disk.Table, disk.Size, st.Index)
	if err != nil || !res.Grown {
		return res, err
	}
	ss := int64(disk.Table.SectorSize)
	start := int64(st.FirstLBA) * ss
	length := int64(res.NewLastLBA-st.FirstLBA+1) * ss
	if err := resize.KernelPartition(f, st.Index, start, length); err != nil {
		return res, err
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("sync %s: %w", disk.Name, err)
	}
	return res, nil
}
