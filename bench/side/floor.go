package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"cairn.dev/cairn/bench/peer"
	"cairn.dev/cairn/images/initramfs"
	"cairn.dev/cairn/qemu"
)

// The measured kernel floors: the kernel alone, booted with each system's
// kernel arguments (the systems' own, on their command lines, left out).
const (
	floorCairnName = "kernel alone, Cairn's arguments"
	floorPeerName  = "kernel alone, peer's arguments"
)

// floorPkg is the floor's /init (a static Go program).
const floorPkg = "cairn.dev/cairn/bench/side/floorinit"

// The console lines of floorinit (keep in sync with floorinit/main.go).
const (
	floorStart = "floor: early: start t="
	floorBegin = "floor: meminfo begin t="
	floorEnd   = "floor: meminfo end"
)

// Floor is the kernel alone: the kernel of Cairn's UKI under the same QEMU
// settings and OVMF, booted through its EFI stub with an initramfs that
// holds only a static Go /init (bench/side/floorinit), which reads
// /proc/meminfo a fixed time after its start and powers off. Its memory in
// use is what no system on this kernel and machine, booted with the same
// kernel arguments (Cmdline), can go below. Two floors are measured, one
// with each system's kernel arguments (ArgsOf); they differ in nothing else.
type Floor struct {
	Name           string   `json:"name"`
	ArgsOf         string   `json:"kernel_args_of"` // "cairn" or "peer"
	Kernel         string   `json:"kernel"`
	Cmdline        string   `json:"cmdline"`
	OwnArgs        []string `json:"args_not_in_other_floor,omitempty"` // of Cmdline, those the other floor's lacks
	InitBytes      int64    `json:"init_bytes"`
	InitramfsBytes int64    `json:"initramfs_bytes"`
	MemUsedKiB     Stat     `json:"mem_used_kib"`
	MemTotalKiB    Stat     `json:"mem_total_kib"`
	AnonPagesKiB   Stat     `json:"anon_pages_kib"`     // the Go /init's own anonymous memory
	KernelShare    Stat     `json:"kernel_to_init_ms"`  // guest CLOCK_BOOTTIME when /init starts
	ReadAt         Stat     `json:"meminfo_read_at_ms"` // guest CLOCK_BOOTTIME when /proc/meminfo is read
	Failed         int      `json:"failed_boots"`
	PeerFraction   float64  `json:"fraction_of_peer_mem_used,omitempty"`
}

// floorKit is what the floor boots share, prepared once: the kernel, the
// initramfs and the firmware.
type floorKit struct {
	dir            string
	kernel, initrd string
	fw             qemu.Firmware
}

// floorCmdline keeps the arguments of Cairn's UKI command line that are not
// Cairn's own (cairn.*): the console arguments both other systems share
// (console=ttyS0 panic=1 quiet) and the kernel arguments of the image
// (percpu_alloc=page) and of the OS file.
func floorCmdline(uki string) string {
	var keep []string
	for _, f := range strings.Fields(uki) {
		if !strings.HasPrefix(f, "cairn.") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// peerFloorCmdline keeps the arguments of the peer's command line
// (peer.Cmdline) that do not concern its root file system or disk: without
// rw/ro, root= and the other root and resume keys, the console arguments
// and the kernel's defaults are left.
func peerFloorCmdline(cmdline string) string {
	var keep []string
	for _, f := range strings.Fields(cmdline) {
		key, _, _ := strings.Cut(f, "=")
		switch key {
		case "rw", "ro", "root", "rootfstype", "rootflags", "rootwait", "rootdelay", "resume", "resume_offset", "noresume":
			continue
		}
		keep = append(keep, f)
	}
	return strings.Join(keep, " ")
}

// argsDiff returns the arguments of a that b lacks and those of b that a
// lacks, each in its command line's order.
func argsDiff(a, b string) (onlyA, onlyB []string) {
	fa, fb := strings.Fields(a), strings.Fields(b)
	for _, x := range fa {
		if !slices.Contains(fb, x) {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range fb {
		if !slices.Contains(fa, x) {
			onlyB = append(onlyB, x)
		}
	}
	return onlyA, onlyB
}

// newFloors describes the two floors: the kernel with Cairn's arguments
// (from its UKI's command line) and with the peer's (from peerCmdline).
func newFloors(ukiCmdline, peerCmdline string) []*Floor {
	c := &Floor{Name: floorCairnName, ArgsOf: "cairn", Cmdline: floorCmdline(ukiCmdline)}
	p := &Floor{Name: floorPeerName, ArgsOf: "peer", Cmdline: peerFloorCmdline(peerCmdline)}
	c.OwnArgs, p.OwnArgs = argsDiff(c.Cmdline, p.Cmdline)
	return []*Floor{c, p}
}

// prepareFloors takes the kernel out of the Cairn image's UKI (the same
// kernel package the peer installs), builds floorinit with goBin and packs
// it as the only file of a zstd newc initramfs (the format of Cairn's), all
// in dir, and describes the two floors booted with them.
func prepareFloors(ctx context.Context, cairnImage, goBin, dir string) (*floorKit, []*Floor, error) {
	fw, err := qemu.FindFirmware()
	if err != nil {
		return nil, nil, err
	}
	u, err := qemu.ReadUKI(cairnImage)
	if err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	if len(u.Linux) == 0 {
		return nil, nil, fmt.Errorf("floor: UKI %s has no kernel", u.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	k := &floorKit{dir: dir, kernel: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd"), fw: fw}
	if err := os.WriteFile(k.kernel, u.Linux, 0o644); err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	bin := filepath.Join(dir, "init")
	if err := peer.BuildBinary(ctx, goBin, floorPkg, bin); err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	initBin, err := os.ReadFile(bin)
	if err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	out, err := os.Create(k.initrd)
	if err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	err = initramfs.Write(ctx, out, []initramfs.Entry{
		{Path: "init", Kind: initramfs.File, Mode: 0o755, Data: initBin},
		{Path: "proc", Kind: initramfs.Dir},
		initramfs.Console, initramfs.Null,
	}, time.Unix(0, 0))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	st, err := os.Stat(k.initrd)
	if err != nil {
		return nil, nil, fmt.Errorf("floor: %w", err)
	}
	floors := newFloors(u.Cmdline, peer.Cmdline)
	for _, f := range floors {
		f.InitBytes, f.InitramfsBytes = int64(len(initBin)), st.Size()
		f.Kernel = fmt.Sprintf("the .linux section of %s in %s (%.1f MiB)", u.Name, filepath.Base(cairnImage), mib(int64(len(u.Linux))))
	}
	return k, floors, nil
}

// bootFloor boots the kernel alone once with f's command line: OVMF with
// fresh variables loads it from QEMU's -kernel/-initrd/-append (through its
// EFI stub, as systemd-boot loads the others), Cairn's disk image attached
// (snapshot) so that the machine's devices are the same.
func bootFloor(ctx context.Context, b *floorKit, f *Floor, img, mem string, timeout time.Duration) (Sample, error) {
	s := Sample{System: f.Name}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Config{Kernel: b.kernel, Initrd: b.initrd, Append: f.Cmdline, KernelViaFirmware: true,
		Firmware: &b.fw, Image: img, Mem: mem, Snapshot: true, NoReboot: true, TempDir: b.dir})
	if err != nil {
		return s, err
	}
	defer func() {
		vm.Kill()
		_ = vm.Wait()
	}()
	con := vm.Console()
	if _, err := con.WaitForLine(ctx, qemu.Substr(floorEnd), timeout); err != nil {
		return s, fmt.Errorf("floor: no meminfo: %w\n%s", err, strings.Join(con.Tail(25), "\n"))
	}
	var lines []string
	for _, l := range con.Lines() {
		lines = append(lines, l.Text)
	}
	fc, err := parseFloorConsole(lines)
	if err != nil {
		return s, err
	}
	s.KernelShare, s.ReadAt = fc.start*1000, fc.readAt*1000
	s.Meminfo = map[string]float64{}
	total, avail, err := ParseMeminfo(strings.NewReader(fc.meminfo), s.Meminfo)
	if err != nil {
		return s, fmt.Errorf("floor: %w", err)
	}
	s.MemTotalKiB, s.MemUsedKiB = total, total-avail
	_ = vm.WaitTimeout(10 * time.Second) // the init powers off; killed after that anyway
	return s, nil
}

// floorConsole is what floorinit printed.
type floorConsole struct {
	start, readAt float64 // guest CLOCK_BOOTTIME, s
	meminfo       string
}

// parseFloorConsole finds floorinit's lines in the console: the start line
// and /proc/meminfo between the begin and end markers. Kernel messages may
// precede the start line.
func parseFloorConsole(lines []string) (floorConsole, error) {
	var fc floorConsole
	seconds := func(l, prefix string) (float64, error) {
		_, v, _ := strings.Cut(l, prefix)
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || x < 0 || x > 1e6 {
			return 0, fmt.Errorf("floor: bad console line %q", l)
		}
		return x, nil
	}
	var err error
	started, begun := false, false
	var mi []string
	for _, l := range lines {
		switch {
		case strings.Contains(l, floorStart):
			if fc.start, err = seconds(l, floorStart); err != nil {
				return fc, err
			}
			started = true
		case strings.Contains(l, floorBegin):
			if fc.readAt, err = seconds(l, floorBegin); err != nil {
				return fc, err
			}
			begun, mi = true, nil
		case strings.Contains(l, floorEnd) && begun:
			if !started {
				return fc, errors.New("floor: no start line before the meminfo")
			}
			fc.meminfo = strings.Join(mi, "\n") + "\n"
			return fc, nil
		case begun:
			mi = append(mi, l)
		}
	}
	return fc, errors.New("floor: no complete meminfo between the markers")
}

// summariseFloor fills f's figures from its samples and the peer's median
// memory in use (0: no peer measured).
func summariseFloor(f *Floor, samples []Sample, peerUsedKiB float64) {
	var used, total, anon, kern, read []float64
	f.Failed = 0
	for _, s := range samples {
		if s.System != f.Name {
			continue
		}
		if s.Error != "" {
			f.Failed++
			continue
		}
		used, total, kern, read = append(used, s.MemUsedKiB), append(total, s.MemTotalKiB), append(kern, s.KernelShare), append(read, s.ReadAt)
		if v, ok := s.Meminfo["AnonPages"]; ok {
			anon = append(anon, v)
		}
	}
	f.MemUsedKiB, f.MemTotalKiB, f.AnonPagesKiB, f.KernelShare, f.ReadAt = stat(used), stat(total), stat(anon), stat(kern), stat(read)
	f.PeerFraction = 0
	if peerUsedKiB > 0 && f.MemUsedKiB.N > 0 {
		f.PeerFraction = f.MemUsedKiB.Median / peerUsedKiB
	}
}

// floorOf returns the floor booted with the kernel arguments of system
// ("cairn" or "peer"), or nil.
func floorOf(floors []*Floor, system string) *Floor {
	for _, f := range floors {
		if f.ArgsOf == system {
			return f
		}
	}
	return nil
}

// floorKiB is the median memory in use of the floor with system's kernel
// arguments, or 0 (none measured).
func floorKiB(floors []*Floor, system string) float64 {
	if f := floorOf(floors, system); f != nil && f.MemUsedKiB.N > 0 {
		return f.MemUsedKiB.Median
	}
	return 0
}

// floorNote states the floor with the peer's arguments as a fraction of the
// peer's memory in use, the floor with Cairn's arguments, and what the
// memory target leaves above the latter for Cairn (MiB throughout).
func floorNote(cairnFloor, peerFloor, peerUsed, target float64) string {
	if cairnFloor <= 0 || peerFloor <= 0 || peerUsed <= 0 {
		return ""
	}
	s := fmt.Sprintf("The kernel alone (the same kernel, QEMU settings and OVMF, an initramfs with only a static Go /init) has %.1f MiB in use with the peer's kernel arguments: %.2f × the peer's %.1f MiB; with Cairn's arguments %.1f MiB; ",
		peerFloor, peerFloor/peerUsed, peerUsed, cairnFloor)
	room := target*peerUsed - cairnFloor
	if room >= 0 {
		return s + fmt.Sprintf("the %.2f target (%.1f MiB) leaves %.1f MiB above the kernel for Cairn.", target, target*peerUsed, room)
	}
	return s + fmt.Sprintf("the %.2f target (%.1f MiB) is %.1f MiB below the kernel's own floor with Cairn's arguments, so Cairn cannot meet it.", target, target*peerUsed, -room)
}

// floorsDiffNote says that the two floors differ only in their kernel
// arguments, names those arguments (from the two command lines) and gives
// the difference in memory in use (MiB).
func floorsDiffNote(c, p *Floor) string {
	if c == nil || p == nil {
		return ""
	}
	onlyC, onlyP := argsDiff(c.Cmdline, p.Cmdline)
	if len(onlyC) == 0 && len(onlyP) == 0 {
		return fmt.Sprintf("Both floors boot with the same kernel arguments (`%s`).", c.Cmdline)
	}
	quote := func(args []string) string {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = "`" + a + "`"
		}
		return strings.Join(q, " ")
	}
	var parts []string
	if len(onlyC) > 0 {
		parts = append(parts, "only Cairn's have "+quote(onlyC))
	}
	if len(onlyP) > 0 {
		parts = append(parts, "only the peer's have "+quote(onlyP))
	}
	s := fmt.Sprintf("The two floors differ only in the kernel arguments (%s)", strings.Join(parts, "; "))
	if c.MemUsedKiB.N == 0 || p.MemUsedKiB.N == 0 {
		return s + "."
	}
	d := (p.MemUsedKiB.Median - c.MemUsedKiB.Median) / 1024
	switch {
	case d > 0:
		return s + fmt.Sprintf(": with Cairn's the kernel alone has %.1f MiB less in use.", d)
	case d < 0:
		return s + fmt.Sprintf(": with Cairn's the kernel alone has %.1f MiB more in use.", -d)
	}
	return s + ": the same memory in use."
}
