// Package peer builds the benchmark's peer: a minimal Debian 12 with systemd
// and podman, booted like Cairn (OVMF → systemd-boot → the same Debian cloud
// kernel), running the same web example container as a systemd service.
//
// The image is built with debootstrap (minbase) from the host's own apt
// mirror, the web image is preloaded into podman's storage inside the chroot,
// the disk is assembled with mkfs.ext4 -d, mkfs.vfat/mtools and sgdisk, and
// then booted once ("warm-up": podman's first-run work, machine set-up) and
// powered off cleanly. The result is cached under the Cairn cache directory,
// keyed by a hash of all inputs. Building needs root.
package peer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"cairn.dev/cairn/qemu"
)

// Recipe constants. Changing any of them (or the unit texts) changes the
// cache key.
const (
	recipeVersion = "peer-v2" // v2: no meminfo probe container (the web example serves /meminfo)
	Suite         = "bookworm"
	diskMiB       = 2560 // like Cairn's default disk
	espMiB        = 256
	rootMiB       = diskMiB - espMiB - 2 // 1 MiB head, ≥1 MiB for the backup GPT
	espPartUUID   = "7a3c6b0e-5d1f-4b6e-9a11-6b0b1c2d3e01"
	rootPartUUID  = "7a3c6b0e-5d1f-4b6e-9a11-6b0b1c2d3e02"
	rootFSUUID    = "7a3c6b0e-5d1f-4b6e-9a11-6b0b1c2d3e03"
	// Cmdline is the peer's kernel command line: Cairn's (console=ttyS0
	// panic=1 quiet) plus the root file system.
	Cmdline   = "root=PARTUUID=" + rootPartUUID + " rw console=ttyS0 panic=1 quiet"
	warmStamp = "/etc/cairn-peer-warmup"
)

// Packages installed on top of debootstrap's minbase, without recommends,
// besides the kernel: what a minimal systemd + podman container host needs
// (udev loads the drivers, dbus is podman's way to systemd, netavark and
// iptables publish the port, zstd is Debian's initramfs compression).
var Packages = []string{"systemd", "systemd-sysv", "udev", "dbus", "systemd-boot", "podman", "netavark", "iptables", "zstd"}

const loaderConf = "timeout 0\neditor no\nconsole-mode keep\n" // Cairn's

const networkUnit = `[Match]
Name=en* eth*

[Network]
DHCP=ipv4
IPv6AcceptRA=no
`

// Container is one service container of the peer, run as
// <Name>.service the way `podman generate systemd --new` writes units
// (podman 4.3 has no Quadlet yet).
type Container struct {
	Name  string   // unit, container and image name (localhost/<Name>:latest)
	Pkg   string   // Go package of its one static binary
	Args  []string // entrypoint; Args[0] is /<binary>
	Port  uint16   // published on the same port
	Flags []string // extra `podman run` flags
}

// Containers are the peer's services: the web example with the settings of
// os/examples/web.yaml (environment, memory and pids limits; podman has no
// HTTP health check without a client in the image, so that is left out). It
// also serves GET /meminfo, from which bench/side reads memory in use on
// both systems.
var Containers = []Container{
	{Name: "web", Pkg: "./os/examples/hello-web", Args: []string{"/hello-web", "-listen", ":8080"}, Port: 8080,
		Flags: []string{"-e", "GREETING=hi", "--memory", "64m", "--pids-limit", "64"}},
}

// Tag is the container's image name in podman's storage.
func (c Container) Tag() string { return "localhost/" + c.Name + ":latest" }

// Unit is the container's systemd unit.
func (c Container) Unit() string {
	run := append([]string{"/usr/bin/podman", "run", "--cidfile=%t/%n.ctr-id", "--cgroups=no-conmon", "--rm", "--sdnotify=conmon",
		"-d", "--replace", "--pull=never", "--name", c.Name, "-p", fmt.Sprintf("%d:%d", c.Port, c.Port)}, c.Flags...)
	run = append(run, c.Tag())
	return `[Unit]
Description=` + c.Name + ` container
Wants=network-online.target
After=network-online.target
RequiresMountsFor=%t/containers

[Service]
Environment=PODMAN_SYSTEMD_UNIT=%n
Restart=on-failure
TimeoutStopSec=20
ExecStartPre=/bin/rm -f %t/%n.ctr-id
ExecStart=` + strings.Join(run, " ") + `
ExecStop=/usr/bin/podman stop --ignore -t 10 --cidfile=%t/%n.ctr-id
ExecStopPost=/usr/bin/podman rm -f --ignore -t 10 --cidfile=%t/%n.ctr-id
Type=notify
NotifyAccess=all

[Install]
WantedBy=multi-user.target
`
}

// warmUnit powers the machine off after its first boot (the build's
// warm-up); on every later boot its condition is false and it is skipped.
const warmUnit = `[Unit]
Description=Cairn benchmark peer: power off after the warm-up boot
ConditionPathExists=` + warmStamp + `
Requires=web.service
After=web.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sleep 20; rm -f ` + warmStamp + `; sync; systemctl --no-block poweroff'

[Install]
WantedBy=multi-user.target
`

// earlyHook prints the first-user-space-process marker of the kernel's
// share, in the format and clock (CLOCK_BOOTTIME via /proc/uptime) of
// Cairn's "cairn: early: start t=" line. It runs in the initramfs's init-top,
// a few shell steps after the kernel executed /init.
const earlyHook = `#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
read -r up _ < /proc/uptime
echo "peer: early: start t=$up" > /dev/console
`

// Options configures Build.
type Options struct {
	CacheDir   string    // default: $XDG_CACHE_HOME/cairn (Cairn's), the image goes to CacheDir/peer/<key>/
	Go         string    // go binary, default "go"
	LockFile   string    // Cairn's Debian pins, default buildroot/debian.lock
	SourcesDir string    // root of the apt configuration to read, default "/"
	Log        io.Writer // progress, default io.Discard
}

// Result describes a built (or cached) peer image.
type Result struct {
	Image         string            `json:"image"`
	Key           string            `json:"key"`
	Kernel        string            `json:"kernel"`
	RootFSBytes   int64             `json:"root_fs_allocated_bytes"` // ext4 image before the warm-up boot, allocated bytes
	RootFSUsed    int64             `json:"root_fs_used_bytes"`      // ext4 blocks in use (dumpe2fs), same moment
	RootTreeBytes int64             `json:"root_tree_bytes"`         // apparent size of the files
	Images        map[string]string `json:"image_digests"`
	Mirror        string            `json:"mirror"`
	BuildSeconds  float64           `json:"build_seconds"`
	Cached        bool              `json:"cached"`
}

// KernelPin is the kernel package and version Cairn uses.
type KernelPin struct{ Name, Version, SHA256 string }

// ReadKernelPin returns the linux-image line of Cairn's debian.lock.
func ReadKernelPin(lockFile string) (KernelPin, error) {
	f, err := os.Open(lockFile)
	if err != nil {
		return KernelPin{}, fmt.Errorf("kernel pin: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fl := strings.Fields(sc.Text())
		if len(fl) == 0 || strings.HasPrefix(fl[0], "#") || !strings.HasPrefix(fl[0], "linux-image-") {
			continue
		}
		if len(fl) != 3 {
			return KernelPin{}, fmt.Errorf("%s:%d: want \"name version sha256\"", lockFile, n)
		}
		return KernelPin{Name: fl[0], Version: fl[1], SHA256: fl[2]}, nil
	}
	if err := sc.Err(); err != nil {
		return KernelPin{}, fmt.Errorf("%s: %w", lockFile, err)
	}
	return KernelPin{}, fmt.Errorf("%s: no linux-image- line", lockFile)
}

// KernelRelease is the kernel's uname -r, from its package name.
func (k KernelPin) KernelRelease() string { return strings.TrimPrefix(k.Name, "linux-image-") }

func (o *Options) defaults() error {
	if o.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("peer: no cache directory: %w", err)
		}
		o.CacheDir = filepath.Join(d, "cairn")
	}
	if o.Go == "" {
		o.Go = "go"
	}
	if o.LockFile == "" {
		o.LockFile = "buildroot/debian.lock"
	}
	if o.SourcesDir == "" {
		o.SourcesDir = "/"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return nil
}

// Build returns the cached peer image for the current inputs, building it
// first if needed.
func Build(ctx context.Context, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	srcs, err := ReadHostSources(o.SourcesDir)
	if err != nil {
		return nil, err
	}
	mir, err := PickMirrors(srcs, Suite)
	if err != nil {
		return nil, err
	}
	pin, err := ReadKernelPin(o.LockFile)
	if err != nil {
		return nil, err
	}
	peerDir := filepath.Join(o.CacheDir, "peer")
	if err := os.MkdirAll(peerDir, 0o755); err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	work, err := os.MkdirTemp(peerDir, "build-")
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	defer removeUnlessMounted(work, o.Log)

	// The images come first: their digests are part of the key.
	digests := map[string]string{}
	var tars []string
	for _, c := range Containers {
		bin := filepath.Join(work, c.Name+".bin")
		if err := BuildBinary(ctx, o.Go, c.Pkg, bin); err != nil {
			return nil, err
		}
		tar := filepath.Join(work, c.Name+".tar")
		d, err := WriteImage(bin, c, tar)
		if err != nil {
			return nil, err
		}
		digests[c.Name] = d.String()
		tars = append(tars, tar)
	}
	key := cacheKey(mir, pin, digests)
	dir := filepath.Join(peerDir, key)
	img := filepath.Join(dir, "peer.img")
	meta := filepath.Join(dir, "peer.json")
	if b, err := os.ReadFile(meta); err == nil {
		var r Result
		if err := json.Unmarshal(b, &r); err == nil {
			if _, err := os.Stat(img); err == nil {
				r.Image, r.Cached = img, true
				fmt.Fprintf(o.Log, "peer: cached image %s\n", img)
				return &r, nil
			}
		}
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("peer: building %s needs root (debootstrap, chroot, mount); run `make bench-peer` as root or with sudo", img)
	}
	fmt.Fprintf(o.Log, "peer: building %s (key %s) from %s\n", img, key, mir.Main)
	start := time.Now()
	r := &Result{Key: key, Kernel: pin.Name + " " + pin.Version, Images: digests, Mirror: mir.Main}
	b := &builder{o: o, work: work, mir: mir, pin: pin, log: o.Log}
	disk := filepath.Join(work, "peer.img")
	if err := b.build(ctx, tars, disk, r); err != nil {
		return nil, err
	}
	if err := WarmUp(ctx, disk, o.Log); err != nil {
		return nil, err
	}
	r.BuildSeconds = time.Since(start).Seconds()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	if err := os.Rename(disk, img); err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	r.Image = img
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	if err := os.WriteFile(meta, append(js, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	return r, nil
}

func cacheKey(m Mirrors, pin KernelPin, digests map[string]string) string {
	h := sha256.New()
	parts := []string{recipeVersion, Suite, pin.Name, pin.Version, pin.SHA256,
		strings.Join(Packages, " "), loaderConf, Cmdline, fmt.Sprint(diskMiB, espMiB, rootMiB)}
	files := rootFiles(m) // everything the recipe writes into the root, units included
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		parts = append(parts, p, files[p])
	}
	for _, c := range Containers {
		parts = append(parts, c.Name, digests[c.Name])
	}
	for _, s := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

type builder struct {
	o    Options
	work string
	mir  Mirrors
	pin  KernelPin
	log  io.Writer
}

func (b *builder) run(ctx context.Context, name string, args ...string) error {
	fmt.Fprintf(b.log, "peer: $ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var tail tailWriter
	cmd.Stdout, cmd.Stderr = io.MultiWriter(b.log, &tail), io.MultiWriter(b.log, &tail)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", name, err, tail.String())
	}
	return nil
}

func (b *builder) build(ctx context.Context, tars []string, disk string, r *Result) (err error) {
	root := filepath.Join(b.work, "root")
	if err := b.run(ctx, "debootstrap", "--variant=minbase", "--components=main", Suite, root, b.mir.Main); err != nil {
		return err
	}
	var mounts []string
	defer func() {
		for i := len(mounts) - 1; i >= 0; i-- {
			if uerr := exec.Command("umount", mounts[i]).Run(); uerr != nil {
				_ = exec.Command("umount", "-l", mounts[i]).Run()
			}
		}
	}()
	mount := func(args ...string) error {
		if err := b.run(ctx, "mount", args...); err != nil {
			return err
		}
		mounts = append(mounts, args[len(args)-1])
		return nil
	}
	// The self bind mount makes the root a mount point: podman's layer
	// unpacker remounts / inside its chroot.
	if err := mount("--bind", root, root); err != nil {
		return err
	}
	for _, m := range [][]string{
		{"-t", "proc", "proc", filepath.Join(root, "proc")},
		{"-t", "sysfs", "sysfs", filepath.Join(root, "sys")},
		{"--bind", "/dev", filepath.Join(root, "dev")},
	} {
		if err := mount(m...); err != nil {
			return err
		}
	}
	files := rootFiles(b.mir)
	// The host's resolver during the build (debootstrap copied it); emptied
	// at the end.
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(c, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			return fmt.Errorf("peer: %w", err)
		}
	}
	// The kernel: Cairn's cached .deb when its sha256 matches the pin,
	// else the pinned version from the mirror.
	kernelArg := b.pin.Name + "=" + b.pin.Version
	if deb, ok := cachedDeb(b.o.CacheDir, b.pin); ok {
		if err := copyFile(deb, filepath.Join(root, "tmp", filepath.Base(deb))); err != nil {
			return err
		}
		kernelArg = "/tmp/" + filepath.Base(deb)
	}
	for _, t := range tars {
		if err := copyFile(t, filepath.Join(root, "tmp", filepath.Base(t))); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"apt-get", "update", "-qq"},
		append(append([]string{"apt-get", "install", "-y", "-q", "--no-install-recommends"}, Packages...), kernelArg),
		{"systemctl", "enable", "systemd-networkd.service", "cairn-peer-warmup.service"},
	}
	for i, c := range Containers {
		steps = append(steps, []string{"systemctl", "enable", c.Name + ".service"},
			[]string{"podman", "load", "-q", "-i", "/tmp/" + filepath.Base(tars[i])})
	}
	steps = append(steps, []string{"apt-get", "clean"})
	for _, s := range steps {
		if err := b.run(ctx, "chroot", append([]string{root}, s...)...); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/resolv.conf"), nil, 0o644); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	// A golden image carries no package lists, temp files or host leftovers.
	for _, g := range []string{"var/lib/apt/lists/*", "tmp/*", "var/tmp/*", "usr/sbin/policy-rc.d", "var/log/*.log", "var/cache/debconf/*-old"} {
		ms, _ := filepath.Glob(filepath.Join(root, g))
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("peer: clean: %w", err)
			}
		}
	}
	// Boot files for the ESP, taken before the chroot is unmounted.
	rel := b.pin.KernelRelease()
	vmlinuz := filepath.Join(b.work, "vmlinuz")
	initrd := filepath.Join(b.work, "initrd.img")
	sdboot := filepath.Join(b.work, "systemd-bootx64.efi")
	for src, dst := range map[string]string{
		"boot/vmlinuz-" + rel:                          vmlinuz,
		"boot/initrd.img-" + rel:                       initrd,
		"usr/lib/systemd/boot/efi/systemd-bootx64.efi": sdboot,
	} {
		if err := copyFile(filepath.Join(root, src), dst); err != nil {
			return err
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := b.run(ctx, "umount", mounts[i]); err != nil {
			return err
		}
	}
	mounts = nil
	if r.RootTreeBytes, err = treeBytes(root); err != nil {
		return err
	}
	rootImg := filepath.Join(b.work, "root.ext4")
	if err := b.run(ctx, "mkfs.ext4", "-q", "-F", "-L", "root", "-U", rootFSUUID, "-d", root, rootImg, fmt.Sprintf("%dM", rootMiB)); err != nil {
		return err
	}
	if r.RootFSBytes, err = allocatedBytes(rootImg); err != nil {
		return err
	}
	if r.RootFSUsed, err = ext4Used(ctx, rootImg); err != nil {
		return err
	}
	espImg := filepath.Join(b.work, "esp.vfat")
	if err := b.buildESP(ctx, espImg, vmlinuz, initrd, sdboot, rel); err != nil {
		return err
	}
	return b.assemble(ctx, disk, espImg, rootImg)
}

func (b *builder) buildESP(ctx context.Context, esp, vmlinuz, initrd, sdboot, rel string) error {
	if err := os.WriteFile(esp, nil, 0o644); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if err := os.Truncate(esp, espMiB<<20); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if err := b.run(ctx, "mkfs.vfat", "-F", "32", "-n", "ESP", esp); err != nil {
		return err
	}
	entry := filepath.Join(b.work, "debian.conf")
	ent := fmt.Sprintf("title Debian 12 (benchmark peer)\nversion %s\nsort-key debian\nlinux /vmlinuz-%s\ninitrd /initrd.img-%s\noptions %s\n", rel, rel, rel, Cmdline)
	loader := filepath.Join(b.work, "loader.conf")
	if err := os.WriteFile(entry, []byte(ent), 0o644); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if err := os.WriteFile(loader, []byte(loaderConf), 0o644); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if err := b.run(ctx, "mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		sdboot:  "::/EFI/BOOT/BOOTX64.EFI",
		vmlinuz: "::/vmlinuz-" + rel,
		initrd:  "::/initrd.img-" + rel,
		entry:   "::/loader/entries/debian.conf",
		loader:  "::/loader/loader.conf",
	} {
		if err := b.run(ctx, "mcopy", "-i", esp, src, dst); err != nil {
			return err
		}
	}
	return nil
}

// assemble writes the GPT disk: ESP at 1 MiB, root right after it.
func (b *builder) assemble(ctx context.Context, disk, esp, root string) error {
	f, err := os.Create(disk)
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if err := f.Truncate(diskMiB << 20); err != nil {
		f.Close()
		return fmt.Errorf("peer: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	espStart := int64(2048)
	rootStart := espStart + espMiB*2048
	if err := b.run(ctx, "sgdisk", "-o",
		fmt.Sprintf("-n1:%d:+%dM", espStart, espMiB), "-t1:ef00", "-c1:ESP", "-u1:"+espPartUUID,
		fmt.Sprintf("-n2:%d:+%dM", rootStart, rootMiB), "-t2:8304", "-c2:root", "-u2:"+rootPartUUID,
		disk); err != nil {
		return err
	}
	for _, p := range []struct {
		src   string
		seekM int64
	}{{esp, espStart / 2048}, {root, rootStart / 2048}} {
		if err := b.run(ctx, "dd", "if="+p.src, "of="+disk, "bs=1M", fmt.Sprintf("seek=%d", p.seekM), "conv=notrunc,sparse", "status=none"); err != nil {
			return err
		}
	}
	return nil
}

// WarmUp boots the fresh image once, checks that the web service answers
// through a forwarded port and waits for the warm-up unit's clean power-off.
func WarmUp(ctx context.Context, disk string, log io.Writer) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	fmt.Fprintf(log, "peer: warm-up boot (host port %d)\n", port)
	vm, err := qemu.Start(ctx, qemu.Config{Image: disk, NoReboot: true, Ports: []qemu.PortForward{{Host: port, Guest: 8080}}})
	if err != nil {
		return fmt.Errorf("peer warm-up: %w", err)
	}
	defer func() {
		vm.Kill()
		_ = vm.Wait()
	}()
	pctx, pcancel := context.WithCancel(ctx)
	go func() { <-vm.Done(); pcancel() }()
	_, err = PollHTTP(pctx, fmt.Sprintf("http://127.0.0.1:%d/", port))
	pcancel()
	if err != nil {
		return fmt.Errorf("peer warm-up: web service never answered: %w\n%s", err, strings.Join(vm.Console().Tail(40), "\n"))
	}
	fmt.Fprintln(log, "peer: web service answers; waiting for the power-off")
	select {
	case <-vm.Done():
	case <-ctx.Done():
		return fmt.Errorf("peer warm-up: no power-off: %w\n%s", ctx.Err(), strings.Join(vm.Console().Tail(40), "\n"))
	}
	if err := vm.Wait(); err != nil && !errors.Is(err, qemu.ErrKilled) {
		return fmt.Errorf("peer warm-up: %w", err)
	}
	return nil
}

func cachedDeb(cacheDir string, pin KernelPin) (string, bool) {
	p := filepath.Join(cacheDir, "debs", pin.Name+"_"+pin.Version+"_amd64.deb")
	f, err := os.Open(p)
	if err != nil {
		return "", false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", false
	}
	return p, hex.EncodeToString(h.Sum(nil)) == pin.SHA256
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("peer: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	return nil
}

func treeBytes(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("peer: size of %s: %w", root, err)
	}
	return n, nil
}

// ext4Used returns the bytes of the blocks in use in an ext4 image.
func ext4Used(ctx context.Context, img string) (int64, error) {
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", img).Output()
	if err != nil {
		return 0, fmt.Errorf("peer: dumpe2fs %s: %w", img, err)
	}
	var count, free, bs int64
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch strings.TrimSpace(k) {
		case "Block count":
			dst = &count
		case "Free blocks":
			dst = &free
		case "Block size":
			dst = &bs
		default:
			continue
		}
		if _, err := fmt.Sscan(strings.TrimSpace(v), dst); err != nil {
			return 0, fmt.Errorf("peer: dumpe2fs %s: field %q: %w", img, k, err)
		}
	}
	if count == 0 || bs == 0 {
		return 0, fmt.Errorf("peer: dumpe2fs %s: no block count", img)
	}
	return (count - free) * bs, nil
}

type tailWriter struct{ b []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.b) }

// removeUnlessMounted removes the build directory, unless something is still
// mounted below it (a failed unmount must never lead to deleting /dev).
func removeUnlessMounted(dir string, log io.Writer) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		fmt.Fprintf(log, "peer: keeping %s: %v\n", dir, err)
		return
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			fmt.Fprintf(log, "peer: keeping %s: %s is still mounted\n", dir, f[4])
			return
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(log, "peer: %v\n", err)
	}
}

// rootFiles are the files the recipe writes into the peer's root (paths
// relative to it); a content starting with "#!" is made executable.
func rootFiles(m Mirrors) map[string]string {
	files := map[string]string{
		"etc/apt/sources.list":                 m.SourcesList(Suite),
		"usr/sbin/policy-rc.d":                 "#!/bin/sh\nexit 101\n",
		"etc/hostname":                         "peer\n",
		"etc/hosts":                            "127.0.0.1 localhost\n127.0.1.1 peer\n",
		"etc/fstab":                            "PARTUUID=" + rootPartUUID + " / ext4 rw,relatime,errors=remount-ro 0 1\n",
		"etc/systemd/network/20-wired.network": networkUnit,
		"etc/systemd/system/cairn-peer-warmup.service":        warmUnit,
		"etc/containers/containers.conf.d/50-net.conf":        "[network]\nnetwork_backend = \"netavark\"\n",
		strings.TrimPrefix(warmStamp, "/"):                    "",
		"etc/initramfs-tools/scripts/init-top/00-cairn-bench": earlyHook,
	}
	for _, c := range Containers {
		files["etc/systemd/system/"+c.Name+".service"] = c.Unit()
	}
	return files
}
