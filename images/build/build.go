// Package build turns a validated OS file into a bootable A/B disk image:
// it fetches the kernel and systemd-boot (buildroot), assembles the
// initramfs, the erofs root with its dm-verity tree, one UKI per root slot,
// the ESP and the GPT disk, and writes a manifest of every artifact.
//
// The build needs no privileges (no loop devices, no mounts) and is
// reproducible: the same inputs and SourceDateEpoch give byte-identical
// output.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"cairn.dev/cairn/buildroot"
	"cairn.dev/cairn/buildroot/kmod"
	"cairn.dev/cairn/images/bake"
	"cairn.dev/cairn/images/disk"
	"cairn.dev/cairn/images/esp"
	"cairn.dev/cairn/images/manifest"
	"cairn.dev/cairn/images/rootfs"
	"cairn.dev/cairn/images/uki"
	"cairn.dev/cairn/os/schema"
)

// Options configure a build.
type Options struct {
	// OutDir receives <name>.img, <name>.manifest.json, the root image and
	// the UKIs. It is created if missing.
	OutDir string
	// InitBinary is the static PID 1 build of cairn-init, /sbin/init in the
	// root.
	InitBinary string
	// EarlyBinary is the early-stage build of cairn-init, /init in the
	// initramfs. Empty uses InitBinary.
	EarlyBinary string
	// ToolsBinary is the full build of cairn-init (the runtime's
	// command-line tools), installed as /usr/bin/cairn-init with
	// /usr/bin/cairn-runtime linked to it. Empty leaves it out.
	ToolsBinary string
	// CacheDir and LockFile are passed to buildroot.Fetch; empty means its
	// defaults.
	CacheDir string
	LockFile string
	// SourceDateEpoch stamps every timestamp in the image.
	SourceDateEpoch int64
	// Log receives progress and warnings.
	Log func(format string, args ...any)
}

// Result is what a build wrote.
type Result struct {
	Image    string
	Manifest *manifest.Manifest
	Path     string // manifest path
}

// Build builds o into opts.OutDir.
func Build(ctx context.Context, o *schema.OS, opts Options) (*Result, error) {
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	mtime := time.Unix(opts.SourceDateEpoch, 0).UTC()
	var warnings []string
	art, err := buildroot.Fetch(ctx, buildroot.Options{
		CacheDir: opts.CacheDir, LockFile: opts.LockFile, Flavour: o.Kernel.Flavour,
		Log: func(format string, args ...any) {
			msg := strings.TrimPrefix(fmt.Sprintf(format, args...), "warning: ")
			warnings = append(warnings, msg)
			logf("warning: %s", msg)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("fetch base artifacts: %w", err)
	}
	initBin, err := os.ReadFile(opts.InitBinary)
	if err != nil {
		return nil, fmt.Errorf("read init binary: %w", err)
	}
	earlyBin := initBin
	if opts.EarlyBinary != "" {
		if earlyBin, err = os.ReadFile(opts.EarlyBinary); err != nil {
			return nil, fmt.Errorf("read early-stage binary: %w", err)
		}
	}
	var toolsBin []byte
	if opts.ToolsBinary != "" {
		if toolsBin, err = os.ReadFile(opts.ToolsBinary); err != nil {
			return nil, fmt.Errorf("read tools binary: %w", err)
		}
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	tmp, err := os.MkdirTemp(opts.OutDir, ".build-")
	if err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	// Kernel modules: a small boot-critical closure for the initramfs, and
	// the system set plus the OS file's modules for the root.
	bootMods, err := closure(art.ModulesDir, bootModules, optionalBootModules)
	if err != nil {
		return nil, fmt.Errorf("initramfs modules: %w", err)
	}
	declared := append(append([]string{}, runtimeLoad...), o.Kernel.Modules...)
	rootMods, err := closure(art.ModulesDir, append(append(append([]string{}, bootModules...), declared...), systemModules...), optionalBootModules)
	if err != nil {
		return nil, fmt.Errorf("root modules: %w", err)
	}

	// Root file system with its verity tree.
	rootTree, err := rootTree(o, art, rootMods, declared, initBin, toolsBin)
	if err != nil {
		return nil, err
	}
	// Container images named in the OS file, as an OCI layout with
	// flattened trees (images/bake).
	baked, err := bake.Bake(ctx, o, bake.Options{WorkDir: tmp, CacheDir: opts.CacheDir, SourceDateEpoch: opts.SourceDateEpoch, Log: logf})
	if err != nil {
		return nil, fmt.Errorf("baked images: %w", err)
	}
	if baked != nil {
		rootTree = bake.Mount(rootTree, bake.RootPath, baked.FS())
	}
	rootPath := filepath.Join(tmp, o.Name+".root.erofs")
	v, err := rootfs.Build(ctx, rootTree, rootPath, rootfs.Options{BuildTime: mtime, Salt: veritySalt(o)})
	if err != nil {
		return nil, fmt.Errorf("root file system: %w", err)
	}
	if st, err := os.Stat(rootPath); err != nil {
		return nil, fmt.Errorf("root file system: %w", err)
	} else if st.Size() > disk.RootSize {
		return nil, fmt.Errorf("root file system is %d bytes, larger than its %d-byte slot", st.Size(), int64(disk.RootSize))
	}

	// Initramfs, then one UKI per slot.
	initrd, err := buildInitramfs(ctx, art, bootMods, bootLoad, earlyBin, mtime)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	stub, err := os.ReadFile(art.Stub)
	if err != nil {
		return nil, fmt.Errorf("read UKI stub: %w", err)
	}
	linux, err := os.ReadFile(art.Vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("read kernel: %w", err)
	}
	layout := disk.NewLayout(o.Name)
	m := &manifest.Manifest{
		Name: o.Name, Version: o.Version, SourceDateEpoch: opts.SourceDateEpoch,
		Kernel:   art.KernelRelease,
		Modules:  manifest.Modules{Initramfs: names(bootMods), Root: names(rootMods)},
		Verity:   manifest.Verity{RootHash: v.RootHash, Salt: v.Salt, DataBlocks: v.DataBlocks, HashOffset: v.HashOffset, BlockSize: rootfs.BlockSize, Algorithm: "sha256"},
		Warnings: warnings,
		Images:   baked.Manifest(),
	}
	for _, p := range art.Packages {
		m.Packages = append(m.Packages, manifest.Package{Name: p.Name, Version: p.Version, SHA256: p.SHA256, Fallback: p.Fallback, Pinned: p.Pinned})
	}
	for _, p := range layout.Partitions {
		m.Partitions = append(m.Partitions, manifest.Partition{Number: p.Number, Label: p.Label, TypeGUID: p.Type, PartUUID: p.PartUUID, Offset: p.Offset, Size: p.Size})
	}
	ukis := map[string][]byte{}
	for _, slot := range []string{"A", "B"} {
		part, _ := layout.Partition("ROOT-" + slot)
		cmdline := Cmdline(o, slot, part.PartUUID, v)
		img, err := uki.Assemble(stub, uki.Sections{
			OSRel:   []byte(OSRelease(o)),
			Cmdline: []byte(cmdline),
			Uname:   []byte(art.KernelRelease),
			Linux:   linux,
			Initrd:  initrd,
		})
		if err != nil {
			return nil, fmt.Errorf("UKI for slot %s: %w", slot, err)
		}
		name := fmt.Sprintf("%s.%s.efi", o.Name, slot)
		if err := os.WriteFile(filepath.Join(tmp, name), img, 0o644); err != nil {
			return nil, fmt.Errorf("write UKI: %w", err)
		}
		ukis[slot] = img
		m.Slots = append(m.Slots, manifest.Slot{Slot: slot, PartUUID: part.PartUUID, UKI: name, Cmdline: cmdline})
	}

	// ESP and disk. Slot A boots first, with three tries.
	sdboot, err := os.ReadFile(art.SystemdBoot)
	if err != nil {
		return nil, fmt.Errorf("read systemd-boot: %w", err)
	}
	imgName := o.Name + ".img"
	imgPath := filepath.Join(tmp, imgName)
	if _, err := disk.Build(ctx, imgPath, disk.Options{
		OSName: o.Name,
		ESPFiles: []esp.File{
			{Path: "EFI/BOOT/BOOTX64.EFI", Data: sdboot},
			{Path: "EFI/Linux/" + UKIName(o.Version, 3), Data: ukis["A"]},
			{Path: "loader/loader.conf", Data: []byte(loaderConf)},
		},
		RootA: rootPath,
		MTime: mtime,
	}); err != nil {
		return nil, fmt.Errorf("disk image: %w", err)
	}

	// Hash, then move everything into place; the manifest goes last so that
	// its presence means a complete build.
	outputs := []struct{ name, kind string }{
		{imgName, "disk"}, {o.Name + ".root.erofs", "root"}, {o.Name + ".A.efi", "uki"}, {o.Name + ".B.efi", "uki"},
	}
	for _, out := range outputs {
		p := filepath.Join(tmp, out.name)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("stat %s: %w", out.name, err)
		}
		sum, err := disk.SHA256File(p)
		if err != nil {
			return nil, fmt.Errorf("hash %s: %w", out.name, err)
		}
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: out.name, Kind: out.kind, Size: st.Size(), SHA256: hex.EncodeToString(sum[:])})
	}
	manifestPath := filepath.Join(opts.OutDir, o.Name+".manifest.json")
	_ = os.Remove(manifestPath)
	for _, out := range outputs {
		if err := os.Rename(filepath.Join(tmp, out.name), filepath.Join(opts.OutDir, out.name)); err != nil {
			return nil, fmt.Errorf("move %s into place: %w", out.name, err)
		}
	}
	if err := m.Write(manifestPath); err != nil {
		return nil, err
	}
	return &Result{Image: filepath.Join(opts.OutDir, imgName), Manifest: m, Path: manifestPath}, nil
}

// UKIName is the ESP file name of a version's UKI, with tries boot-counting
// attempts left (0: no counter).
func UKIName(version string, tries int) string {
	if tries > 0 {
		return fmt.Sprintf("cairn-%s+%d.efi", version, tries)
	}
	return "cairn-" + version + ".efi"
}

const loaderConf = "timeout 0\neditor no\nconsole-mode keep\n"

// Cmdline is the kernel command line of the UKI for slot.
func Cmdline(o *schema.OS, slot, partUUID string, v rootfs.Verity) string {
	args := []string{
		"console=ttyS0", "panic=1", "quiet",
		// Page-sized per-CPU units instead of the 2 MiB ones of the
		// default "embed" allocator: each per-CPU chunk after the
		// first then carries a ~0.4 MiB memory-cgroup array instead
		// of a 4 MiB one (one vCPU, 512 MiB: 3.8 MiB less memory in
		// use once a container runs; no boot time change measured).
		"percpu_alloc=page",
		"cairn.slot=" + slot,
		"cairn.version=" + o.Version,
		"cairn.root=PARTUUID=" + partUUID,
		"cairn.verity.roothash=" + v.RootHash,
		"cairn.verity.salt=" + v.Salt,
		fmt.Sprintf("cairn.verity.blocks=%d", v.DataBlocks),
	}
	return strings.Join(append(args, o.Kernel.Cmdline...), " ")
}

// OSRelease is the os-release(5) text of the image, in the root and in the
// UKI's .osrel section (systemd-boot orders entries by VERSION_ID).
func OSRelease(o *schema.OS) string {
	return fmt.Sprintf("NAME=Cairn\nID=cairn\nPRETTY_NAME=\"Cairn %s (%s)\"\nVERSION_ID=%s\nIMAGE_ID=%s\nIMAGE_VERSION=%s\n",
		o.Version, o.Name, o.Version, o.Name, o.Version)
}

// veritySalt derives the dm-verity salt from the OS name and version, so the
// build stays reproducible while no two versions share a salt.
func veritySalt(o *schema.OS) []byte {
	s := sha256.Sum256([]byte("cairn verity salt\x00" + o.Name + "\x00" + o.Version))
	return s[:]
}

func names(mods []kmod.Module) []string {
	out := make([]string, len(mods))
	for i, m := range mods {
		out[i] = m.Name
	}
	return out
}

// closure resolves want (all required) and optional (skipped when the
// kernel lacks them) into one dependency-ordered module list.
func closure(dir string, want, optional []string) ([]kmod.Module, error) {
	all := append([]string{}, want...)
	for _, name := range optional {
		if _, err := kmod.Closure(dir, []string{name}); err == nil {
			all = append(all, name)
		}
	}
	mods, err := kmod.Closure(dir, all)
	if err != nil {
		return nil, err
	}
	return mods, nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
