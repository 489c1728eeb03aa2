package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"cairn.dev/cairn/bench/peer"
	"cairn.dev/cairn/images/initramfs"
	"cairn.dev/cairn/qemu"
)

// floorName names the third measured system: the kernel alone.
const floorName = "kernel alone (floor)"

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
// use is what no system on this kernel and machine can go below.
type Floor struct {
	Name           string  `json:"name"`
	Kernel         string  `json:"kernel"`
	Cmdline        string  `json:"cmdline"`
	InitBytes      int64   `json:"init_bytes"`
	InitramfsBytes int64   `json:"initramfs_bytes"`
	MemUsedKiB     Stat    `json:"mem_used_kib"`
	MemTotalKiB    Stat    `json:"mem_total_kib"`
	AnonPagesKiB   Stat    `json:"anon_pages_kib"`     // the Go /init's own anonymous memory
	KernelShare    Stat    `json:"kernel_to_init_ms"`  // guest CLOCK_BOOTTIME when /init starts
	ReadAt         Stat    `json:"meminfo_read_at_ms"` // guest CLOCK_BOOTTIME when /proc/meminfo is read
	Failed         int     `json:"failed_boots"`
	PeerFraction   float64 `json:"fraction_of_peer_mem_used,omitempty"`
}

// floorBoot is what each floor boot needs, prepared once.
type floorBoot struct {
	dir                    string
	kernel, initrd, append string
	fw                     qemu.Firmware
}

// floorCmdline keeps the arguments of Cairn's UKI command line that are not
// Cairn's own (cairn.*): the console arguments both other systems share
// (console=ttyS0 panic=1 quiet) and any kernel arguments of the OS file.
func floorCmdline(uki string) string {
	var keep []string
	for _, f := range strings.Fields(uki) {
		if !strings.HasPrefix(f, "cairn.") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// prepareFloor takes the kernel out of the Cairn image's UKI (the same
// kernel package the peer installs), builds floorinit with goBin and packs
// it as the only file of a zstd newc initramfs (the format of Cairn's), all
// in dir.
func prepareFloor(ctx context.Context, cairnImage, goBin, dir string, f *Floor) (*floorBoot, error) {
	fw, err := qemu.FindFirmware()
	if err != nil {
		return nil, err
	}
	u, err := qemu.ReadUKI(cairnImage)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if len(u.Linux) == 0 {
		return nil, fmt.Errorf("floor: UKI %s has no kernel", u.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	b := &floorBoot{dir: dir, kernel: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd"),
		append: floorCmdline(u.Cmdline), fw: fw}
	if err := os.WriteFile(b.kernel, u.Linux, 0o644); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	bin := filepath.Join(dir, "init")
	if err := peer.BuildBinary(ctx, goBin, floorPkg, bin); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	initBin, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	out, err := os.Create(b.initrd)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
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
		return nil, fmt.Errorf("floor: %w", err)
	}
	st, err := os.Stat(b.initrd)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	f.Name, f.Cmdline, f.InitBytes, f.InitramfsBytes = floorName, b.append, int64(len(initBin)), st.Size()
	f.Kernel = fmt.Sprintf("the .linux section of %s in %s (%.1f MiB)", u.Name, filepath.Base(cairnImage), mib(int64(len(u.Linux))))
	return b, nil
}

// bootFloor boots the kernel alone once: OVMF with fresh variables loads
// it from QEMU's -kernel/-initrd/-append (through its EFI stub, as
// systemd-boot loads the others), Cairn's disk image attached (snapshot)
// so that the machine's devices are the same.
func bootFloor(ctx context.Context, b *floorBoot, img, mem string, timeout time.Duration) (Sample, error) {
	s := Sample{System: floorName}
	tmp, err := os.MkdirTemp(b.dir, "vm-")
	if err != nil {
		return s, fmt.Errorf("floor: %w", err)
	}
	defer os.RemoveAll(tmp)
	vars := filepath.Join(tmp, "OVMF_VARS.fd")
	if err := b.fw.NewVars(vars); err != nil {
		return s, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vm, err := qemu.Start(ctx, qemu.Config{Kernel: b.kernel, Initrd: b.initrd, Append: b.append,
		Image: img, Mem: mem, Snapshot: true, NoReboot: true, TempDir: tmp,
		ExtraArgs: []string{
			"-drive", "if=pflash,format=raw,unit=0,file=" + optEscape(b.fw.Code) + ",readonly=on",
			"-drive", "if=pflash,format=raw,unit=1,file=" + optEscape(vars),
		}})
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

// optEscape doubles commas in a QEMU option value (as package qemu does).
func optEscape(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// summariseFloor fills f's figures from the floor samples and the peer's
// median memory in use (0: no peer measured).
func summariseFloor(f *Floor, samples []Sample, peerUsedKiB float64) {
	var used, total, anon, kern, read []float64
	f.Failed = 0
	for _, s := range samples {
		if s.System != floorName {
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

// floorNote states the floor as a fraction of the peer's memory in use and
// what the memory target leaves above the kernel.
func floorNote(floorMiB, peerMiB, target float64) string {
	if floorMiB <= 0 || peerMiB <= 0 {
		return ""
	}
	frac := floorMiB / peerMiB
	s := fmt.Sprintf("The kernel alone (the same kernel, QEMU settings and OVMF, an initramfs with only a static Go /init) has %.1f MiB in use: %.2f × the peer's %.1f MiB; ",
		floorMiB, frac, peerMiB)
	room := target*peerMiB - floorMiB
	if room >= 0 {
		return s + fmt.Sprintf("the %.2f target (%.1f MiB) leaves %.1f MiB for everything above the kernel.", target, target*peerMiB, room)
	}
	return s + fmt.Sprintf("the %.2f target (%.1f MiB) is %.1f MiB below the kernel's own floor, so no system on this kernel can meet it.", target, target*peerMiB, -room)
}
