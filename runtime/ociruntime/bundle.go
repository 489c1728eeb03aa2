package ociruntime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// maxConfigBytes bounds config.json (podman's are ~20 KiB with seccomp).
const maxConfigBytes = 4 << 20

// loadBundle reads and checks DIR/config.json. It returns the spec and the
// absolute bundle directory.
func loadBundle(dir string) (*specs.Spec, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: %w", dir, err)
	}
	f, err := os.Open(filepath.Join(abs, "config.json"))
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: %w", abs, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: read config.json: %w", abs, err)
	}
	spec, err := parseConfig(b, abs)
	if err != nil {
		return nil, "", fmt.Errorf("bundle %s: %w", abs, err)
	}
	return spec, abs, nil
}

// parseConfig decodes and checks a config.json of the bundle bundleDir
// (absolute). A relative root.path must stay inside the bundle; an
// absolute one may be anywhere (podman points it at its storage).
func parseConfig(b []byte, bundleDir string) (*specs.Spec, error) {
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("config.json is larger than %d bytes", maxConfigBytes)
	}
	var spec specs.Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse config.json: trailing data after the JSON object")
	}
	if !strings.HasPrefix(spec.Version, "1.") {
		return nil, fmt.Errorf("config.json: unsupported ociVersion %q (want 1.x)", spec.Version)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, errors.New("config.json: root.path is required")
	}
	if strings.ContainsRune(spec.Root.Path, 0) {
		return nil, errors.New("config.json: root.path contains a NUL byte")
	}
	if !filepath.IsAbs(spec.Root.Path) {
		rel := filepath.Clean(spec.Root.Path)
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, fmt.Errorf("config.json: root.path %q escapes the bundle", spec.Root.Path)
		}
		spec.Root.Path = filepath.Join(bundleDir, rel)
	}
	if spec.Process == nil {
		return nil, errors.New("config.json: process is required (this runtime has no exec of a separate process)")
	}
	if len(spec.Process.Args) == 0 || spec.Process.Args[0] == "" {
		return nil, errors.New("config.json: process.args must not be empty")
	}
	if spec.Process.Cwd != "" && !filepath.IsAbs(spec.Process.Cwd) {
		return nil, fmt.Errorf("config.json: process.cwd %q is not absolute", spec.Process.Cwd)
	}
	if spec.Linux == nil {
		return nil, errors.New("config.json: linux is required")
	}
	for i, m := range spec.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("config.json: mount destination %q is not absolute", m.Destination)
		}
		// runc resolves a relative bind source against the bundle.
		if m.Source != "" && !filepath.IsAbs(m.Source) && isBind(m) {
			spec.Mounts[i].Source = filepath.Join(bundleDir, m.Source)
		}
	}
	return &spec, nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
