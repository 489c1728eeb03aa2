package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/container"
)

// bundleOCIVersion is what config.json declares: crun 1.8.1 accepts only
// 1.0.x ("unknown version specified" for 1.3.0).
const bundleOCIVersion = "1.0.2"

// busyboxLinks are the applets linked in the rootfs.
var busyboxLinks = []string{"sh", "true", "echo", "ls", "cat", "sleep", "id"}

// makeBundle writes dir/rootfs (static busybox) and dir/config.json: Cairn's
// default spec (Docker's isolation: mount, pid, network, ipc, uts and cgroup
// namespaces, Docker's capabilities and seccomp profile, masked and
// read-only paths, no_new_privs) running /bin/true, with ociVersion lowered
// for crun. withSeccomp=false drops the seccomp profile (for all runtimes).
func makeBundle(dir, busybox string, withSeccomp bool) (*specs.Spec, error) {
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "dev", "proc", "sys", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
	}
	if err := copyFile(busybox, filepath.Join(rootfs, "bin", "busybox"), 0o755); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	for _, l := range busyboxLinks {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", l)); err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
	}
	spec := container.DefaultSpec("rootfs", "/bin/true")
	spec.Version = bundleOCIVersion
	if !withSeccomp {
		spec.Linux.Seccomp = nil
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return spec, nil
}

// loadSpec reads a bundle's config.json.
func loadSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s/config.json: %w", bundle, err)
	}
	return &s, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
