package build

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing/fstest"
	"time"

	"cairn.dev/cairn/buildroot"
	"cairn.dev/cairn/buildroot/kmod"
	"cairn.dev/cairn/images/initramfs"
	"cairn.dev/cairn/os/schema"
)

// Kernel module sets. The initramfs holds only what finding and opening the
// root needs. bootLoad is loaded at once and in parallel: the virtio disk
// path (the disk of every VM Cairn targets), dm-verity and erofs; coldplug
// runs only when the root has not appeared once they are in (another disk
// controller). The root holds the system set, which the system stage
// loads (systemLoad) or coldplug and later features pick from.
var (
	bootModules         = []string{"virtio_pci", "virtio_blk", "dm-verity", "erofs"}
	optionalBootModules = []string{"virtio_scsi", "sd_mod", "nvme", "ahci"}
	bootLoad            = []string{"virtio_pci", "virtio_blk", "dm-verity", "erofs"}
	systemModules       = []string{
		"efivarfs", "vfat", "nls_cp437", "nls_ascii", // boot counting: loaded on demand
		"virtio_net", "virtio-rng", "qemu_fw_cfg", "button", "evdev",
	}
	// runtimeLoad is what the container runtime needs (overlay roots,
	// bridge networking, nftables NAT and port rules). No modprobe exists
	// to load these on demand, so the system stage loads them after READY
	// with the OS file's modules.
	runtimeLoad = []string{
		"overlay", "veth", "bridge",
		"nf_tables", "nft_chain_nat", "nft_masq", "nft_nat", "nft_ct", "nft_fib_ipv4",
	}
)

// moduleFiles returns the files under lib/modules/<release>/ for mods: the
// .ko files at their usual paths, and index files restricted to them.
func moduleFiles(modulesDir string, mods []kmod.Module, load []string) (map[string][]byte, error) {
	files := map[string][]byte{}
	byName := map[string]kmod.Module{}
	for _, m := range mods {
		byName[kmod.Normalize(m.Name)] = m
		data, err := os.ReadFile(filepath.Join(modulesDir, m.Path))
		if err != nil {
			return nil, fmt.Errorf("read module %s: %w", m.Name, err)
		}
		files[m.Path] = data
	}
	var dep bytes.Buffer
	for _, m := range mods {
		deps := make([]string, 0, len(m.Deps))
		for _, d := range m.Deps {
			dm, ok := byName[kmod.Normalize(d)]
			if !ok {
				return nil, fmt.Errorf("module %s needs %s, which is not in the set", m.Name, d)
			}
			deps = append(deps, dm.Path)
		}
		fmt.Fprintf(&dep, "%s: %s\n", m.Path, strings.Join(deps, " "))
	}
	files["modules.dep"] = bytes.ReplaceAll(dep.Bytes(), []byte(": \n"), []byte(":\n"))

	alias, err := filterLines(filepath.Join(modulesDir, "modules.alias"), func(fields []string) bool {
		_, ok := byName[kmod.Normalize(fields[len(fields)-1])]
		return len(fields) == 3 && fields[0] == "alias" && ok
	})
	if err != nil {
		return nil, err
	}
	files["modules.alias"] = alias
	// The built-in lists let the loader resolve aliases (crypto-crc32c) to
	// built-in code instead of a module the CPU may not support.
	for _, name := range []string{"modules.builtin", "modules.builtin.modinfo"} {
		data, err := os.ReadFile(filepath.Join(modulesDir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		files[name] = data
	}
	var l bytes.Buffer
	for _, name := range load {
		fmt.Fprintln(&l, name)
	}
	files["cairn.load"] = l.Bytes()
	return files, nil
}

func filterLines(p string, keep func(fields []string) bool) ([]byte, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(p), err)
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && keep(f) {
			out.WriteString(sc.Text())
			out.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(p), err)
	}
	return out.Bytes(), nil
}

// rootTree lays out the read-only root (see docs/architecture.md).
func rootTree(o *schema.OS, art *buildroot.Artifacts, mods []kmod.Module, load []string, initBin, toolsBin []byte) (fs.FS, error) {
	t := fstest.MapFS{}
	dir := func(p string) { t[p] = &fstest.MapFile{Mode: fs.ModeDir | 0o755} }
	file := func(p string, data []byte, mode fs.FileMode) error {
		if _, ok := t[p]; ok {
			return fmt.Errorf("root: %s given twice", p)
		}
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := t[d]; !ok {
				dir(d)
			}
		}
		t[p] = &fstest.MapFile{Data: data, Mode: mode}
		return nil
	}
	for _, d := range []string{"etc", "proc", "sys", "dev", "run", "tmp", "var", "efi", "sysroot", "usr/bin", "usr/lib", "sbin", "lib"} {
		dir(d)
	}
	if err := file("sbin/init", initBin, 0o755); err != nil {
		return nil, err
	}
	if toolsBin != nil {
		if err := file("usr/bin/cairn-init", toolsBin, 0o755); err != nil {
			return nil, err
		}
		t["usr/bin/cairn-runtime"] = &fstest.MapFile{Data: []byte("cairn-init"), Mode: fs.ModeSymlink | 0o777}
	}
	if err := file("usr/lib/os-release", []byte(OSRelease(o)), 0o644); err != nil {
		return nil, err
	}
	src, err := os.ReadFile(o.Source)
	if err != nil {
		return nil, fmt.Errorf("read OS file: %w", err)
	}
	if err := file(strings.TrimPrefix(schema.RootFile, "/"), src, 0o644); err != nil {
		return nil, err
	}
	// The same OS, parsed and validated, for PID 1 and the update agent:
	// parsed again from the bytes in the root, under the root's name, so
	// that it is exactly what they would read from os.yaml.
	inRoot, err := schema.Parse(schema.RootFile, src)
	if err != nil {
		return nil, fmt.Errorf("OS file %s in the root: %w", o.Source, err)
	}
	compiled, err := inRoot.MarshalCompiled()
	if err != nil {
		return nil, err
	}
	if err := file(strings.TrimPrefix(schema.RootCompiled, "/"), compiled, 0o644); err != nil {
		return nil, err
	}
	if dst, data, err := updateRoot(o); err != nil {
		return nil, err
	} else if data != nil {
		if err := file(dst, data, 0o644); err != nil {
			return nil, err
		}
	}
	mf, err := moduleFiles(art.ModulesDir, mods, load)
	if err != nil {
		return nil, fmt.Errorf("root modules: %w", err)
	}
	for _, p := range sortedKeys(mf) {
		if err := file(path.Join("lib/modules", art.KernelRelease, p), mf[p], 0o644); err != nil {
			return nil, err
		}
	}
	for i, f := range o.Files {
		data := []byte(f.Content)
		if f.Source != "" {
			p := f.Source
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(o.Source), p)
			}
			if data, err = os.ReadFile(p); err != nil {
				return nil, fmt.Errorf("%s: files[%d].source: %w", o.Source, i, err)
			}
		}
		dst := strings.TrimPrefix(f.Path, "/")
		if rest, ok := strings.CutPrefix(dst, "etc/"); ok {
			dst = path.Join("usr/share/cairn/etc", rest)
		}
		if err := file(dst, data, fs.FileMode(f.FileMode())&fs.ModePerm|modeBits(f.FileMode())); err != nil {
			return nil, fmt.Errorf("%s: files[%d]: %w", o.Source, i, err)
		}
	}
	return t, nil
}

// modeBits maps the setuid, setgid and sticky bits of a Unix mode to fs.FileMode.
func modeBits(m uint32) fs.FileMode {
	var b fs.FileMode
	if m&0o4000 != 0 {
		b |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		b |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		b |= fs.ModeSticky
	}
	return b
}

// initramfs builds the zstd-compressed cpio archive: /init, the console and
// null devices, mount points and the boot-critical modules.
func buildInitramfs(ctx context.Context, art *buildroot.Artifacts, mods []kmod.Module, load []string, initBin []byte, mtime time.Time) ([]byte, error) {
	entries := []initramfs.Entry{
		{Path: "init", Kind: initramfs.File, Mode: 0o755, Data: initBin},
		{Path: "etc/initrd-release", Kind: initramfs.File, Mode: 0o644, Data: []byte("NAME=Cairn\nID=cairn\n")},
		initramfs.Console, initramfs.Null,
	}
	for _, d := range []string{"dev", "etc", "proc", "sys", "run", "sysroot", "lib", "lib/modules"} {
		entries = append(entries, initramfs.Entry{Path: d, Kind: initramfs.Dir, Mode: 0o755})
	}
	mf, err := moduleFiles(art.ModulesDir, mods, load)
	if err != nil {
		return nil, err
	}
	base := path.Join("lib/modules", art.KernelRelease)
	dirs := map[string]bool{"lib": true, "lib/modules": true}
	for _, p := range sortedKeys(mf) {
		full := path.Join(base, p)
		for d := path.Dir(full); !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			entries = append(entries, initramfs.Entry{Path: d, Kind: initramfs.Dir, Mode: 0o755})
		}
		entries = append(entries, initramfs.Entry{Path: full, Kind: initramfs.File, Mode: 0o644, Data: mf[p]})
	}
	var buf bytes.Buffer
	if err := initramfs.Write(ctx, &buf, entries, mtime); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
