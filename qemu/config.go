// Package qemu launches Cairn images under QEMU (TCG). It is the one launcher
// shared by `cairn run`, the qemu-tests harness and the boot benchmark.
//
// Two boot paths are supported:
//   - UEFI (default): OVMF pflash firmware with a fresh copy of OVMF_VARS per VM,
//     booting the disk image's ESP (systemd-boot → UKI), exactly like real hardware.
//   - Direct (-kernel/-initrd/-append): the newest UKI on the image's ESP is taken
//     apart and its .linux/.initrd/.cmdline handed to QEMU; SeaBIOS, no EFI, so no
//     efivars in the guest. About 4 s faster under TCG.
package qemu

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// DefaultBinary is the QEMU system emulator used when Config.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// DefaultMem is the guest memory size used when Config.Mem is empty.
const DefaultMem = "512M"

// FwCfgName is the fw_cfg item under which Config.FwCfgFile is exposed to the guest.
const FwCfgName = "opt/dev.cairn/config"

// PortForward forwards a TCP port on the host's loopback to a port in the guest.
type PortForward struct {
	Host  uint16 // host port, bound to 127.0.0.1
	Guest uint16 // guest port
}

// String returns the HOST:GUEST form accepted by ParsePortForward.
func (p PortForward) String() string { return fmt.Sprintf("%d:%d", p.Host, p.Guest) }

// ParsePortForward parses "HOSTPORT:GUESTPORT" (both 1..65535, decimal).
func ParsePortForward(s string) (PortForward, error) {
	h, g, ok := strings.Cut(s, ":")
	if !ok {
		return PortForward{}, fmt.Errorf("port forward %q: want HOSTPORT:GUESTPORT, e.g. 8080:80", s)
	}
	hp, err := parsePort(h)
	if err != nil {
		return PortForward{}, fmt.Errorf("port forward %q: host port: %w", s, err)
	}
	gp, err := parsePort(g)
	if err != nil {
		return PortForward{}, fmt.Errorf("port forward %q: guest port: %w", s, err)
	}
	return PortForward{Host: hp, Guest: gp}, nil
}

func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not in 1..65535", s)
	}
	return uint16(n), nil
}

// Config describes one VM.
type Config struct {
	// Image is the raw disk image (attached as virtio-blk). Required unless Kernel is set.
	Image string
	// ImageFormat is the QEMU format of Image: "raw" (default) or "qcow2".
	// Direct mode needs a raw image (it reads the ESP on the host).
	ImageFormat string
	// Direct boots the newest UKI found on the image's ESP with -kernel/-initrd/-append.
	Direct bool
	// Kernel, Initrd and Append boot an explicit kernel directly (no UKI lookup);
	// Image is then optional. Used by smoke tests.
	Kernel, Initrd, Append string
	// KernelViaFirmware, with Kernel, loads OVMF too: QEMU hands the kernel
	// to the firmware, which starts it through its EFI stub, so the guest
	// sees a UEFI boot's memory map (bench/side's kernel floor).
	KernelViaFirmware bool
	// ExtraAppend is appended to the kernel command line in direct mode.
	ExtraAppend string
	// Mem is the guest memory (-m), default "512M".
	Mem string
	// Ports are TCP forwards from 127.0.0.1:Host to the guest.
	Ports []PortForward
	// FwCfgFile, if set, is exposed as fw_cfg item opt/dev.cairn/config.
	FwCfgFile string
	// QMPSocket, if set, is the path of a QMP unix socket QEMU listens on.
	QMPSocket string
	// NoReboot makes QEMU exit instead of resetting when the guest reboots.
	NoReboot bool
	// Snapshot discards disk writes (QEMU snapshot=on).
	Snapshot bool
	// ExtraArgs are appended verbatim to the QEMU command line.
	ExtraArgs []string
	// Console receives the raw serial console output (may be nil).
	Console io.Writer
	// Stderr receives QEMU's own stderr (may be nil; it is kept for error reports anyway).
	Stderr io.Writer

	// Binary is the QEMU executable, default "qemu-system-x86_64".
	Binary string
	// Firmware overrides OVMF detection (UEFI mode only).
	Firmware *Firmware
	// VarsFile, if set, is the OVMF variable store used for this VM. If it does
	// not exist it is created from the firmware's template; it is never deleted,
	// so the caller can keep NVRAM across several QEMU runs of one machine.
	// If empty, a fresh copy is made in a per-VM temp dir and removed after exit.
	VarsFile string
	// TempDir is the parent for per-VM temp files (default os.TempDir()).
	TempDir string
}

func (c *Config) mem() string {
	if c.Mem == "" {
		return DefaultMem
	}
	return c.Mem
}

func (c *Config) binary() string {
	if c.Binary == "" {
		return DefaultBinary
	}
	return c.Binary
}

func (c *Config) format() string {
	if c.ImageFormat == "" {
		return "raw"
	}
	return c.ImageFormat
}

// directBoot reports whether the VM boots with -kernel.
func (c *Config) directBoot() bool { return c.Direct || c.Kernel != "" }

// firmware reports whether the VM runs OVMF: a UEFI boot, or a kernel
// started through it (KernelViaFirmware).
func (c *Config) firmware() bool { return !c.directBoot() || (c.Kernel != "" && c.KernelViaFirmware) }

// BootFiles are the resolved inputs of one boot: either the OVMF pair (UEFI)
// or a kernel/initrd/cmdline (direct).
type BootFiles struct {
	OVMFCode, OVMFVars     string
	Kernel, Initrd, Append string
}

// Validate checks the configuration without touching the file system.
func (c *Config) Validate() error {
	if c.Image == "" && c.Kernel == "" {
		return errors.New("qemu: no image given")
	}
	if c.Direct && c.Kernel == "" && c.format() != "raw" {
		return fmt.Errorf("qemu: direct boot needs a raw image, got format %q", c.format())
	}
	switch c.format() {
	case "raw", "qcow2":
	default:
		return fmt.Errorf("qemu: unsupported image format %q", c.ImageFormat)
	}
	seen := map[uint16]bool{}
	for _, p := range c.Ports {
		if p.Host == 0 || p.Guest == 0 {
			return fmt.Errorf("qemu: invalid port forward %s", p)
		}
		if seen[p.Host] {
			return fmt.Errorf("qemu: host port %d forwarded twice", p.Host)
		}
		seen[p.Host] = true
	}
	return nil
}

// Args builds the QEMU argument list (without the binary) for c and the
// resolved boot files b. It is pure: it does not look at the file system.
func (c *Config) Args(b BootFiles) ([]string, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	a := []string{
		"-machine", "q35", "-accel", "tcg",
		"-m", c.mem(), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio",
	}
	if c.directBoot() {
		if b.Kernel == "" {
			return nil, errors.New("qemu: direct boot without a kernel")
		}
		a = append(a, "-kernel", b.Kernel)
		if b.Initrd != "" {
			a = append(a, "-initrd", b.Initrd)
		}
		if b.Append != "" {
			a = append(a, "-append", b.Append)
		}
	}
	if c.firmware() {
		if b.OVMFCode == "" || b.OVMFVars == "" {
			return nil, errors.New("qemu: UEFI boot without OVMF code/vars")
		}
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,file="+optEscape(b.OVMFCode)+",readonly=on",
			"-drive", "if=pflash,format=raw,unit=1,file="+optEscape(b.OVMFVars),
		)
	}
	if c.Image != "" {
		d := "if=none,id=d0,file=" + optEscape(c.Image) + ",format=" + c.format()
		if c.Snapshot {
			d += ",snapshot=on"
		}
		dev := "virtio-blk-pci,drive=d0"
		if !c.directBoot() {
			// With -kernel, QEMU gives the linuxboot option ROM boot index 0; the disk needs none.
			dev += ",bootindex=1"
		}
		a = append(a, "-drive", d, "-device", dev)
	}
	nd := "user,id=n0"
	for _, p := range c.Ports {
		nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", p.Host, p.Guest)
	}
	a = append(a, "-netdev", nd, "-device", "virtio-net-pci,netdev=n0,romfile=",
		// An entropy source, so that the guest's random pool is ready at once.
		"-device", "virtio-rng-pci")
	if c.FwCfgFile != "" {
		a = append(a, "-fw_cfg", "name="+FwCfgName+",file="+optEscape(c.FwCfgFile))
	}
	if c.QMPSocket != "" {
		a = append(a, "-qmp", "unix:"+optEscape(c.QMPSocket)+",server=on,wait=off")
	}
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	a = append(a, c.ExtraArgs...)
	return a, nil
}

// optEscape escapes a value inside a QEMU option string (key=value,...):
// commas are doubled, so a path cannot inject options. -kernel/-initrd/-append
// take their argument verbatim and need no escaping.
func optEscape(v string) string { return strings.ReplaceAll(v, ",", ",,") }
