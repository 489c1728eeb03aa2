package bake

import (
	"fmt"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Kind is where an image comes from.
type Kind int

// The image sources an OS file may name.
const (
	KindGo            Kind = iota + 1 // go://PKG
	KindOCILayout                     // oci-layout:DIR
	KindDockerArchive                 // docker-archive:FILE
	KindRegistry                      // a registry reference by tag or digest
)

func (k Kind) String() string {
	switch k {
	case KindGo:
		return "go"
	case KindOCILayout:
		return "oci-layout"
	case KindDockerArchive:
		return "docker-archive"
	case KindRegistry:
		return "registry"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Ref is a parsed image string.
type Ref struct {
	Raw  string // exactly as written in the OS file
	Kind Kind
	// Path is the Go package (KindGo) or the file system path as written
	// (KindOCILayout, KindDockerArchive).
	Path string
	// Name is the registry reference (KindRegistry).
	Name name.Reference
}

// ParseRef parses an image string of an OS file.
func ParseRef(s string) (Ref, error) {
	r := Ref{Raw: s}
	if s == "" {
		return r, fmt.Errorf("empty image")
	}
	if strings.ContainsAny(s, " \t\r\n\x00") {
		return r, fmt.Errorf("image %q contains white space or NUL", s)
	}
	switch {
	case strings.HasPrefix(s, "go://"):
		pkg := strings.TrimPrefix(s, "go://")
		if err := checkGoPackage(pkg); err != nil {
			return r, fmt.Errorf("image %q: %w", s, err)
		}
		r.Kind, r.Path = KindGo, pkg
	case strings.HasPrefix(s, "oci-layout:"):
		r.Kind, r.Path = KindOCILayout, strings.TrimPrefix(s, "oci-layout:")
		if r.Path == "" {
			return r, fmt.Errorf("image %q: oci-layout: needs a directory", s)
		}
	case strings.HasPrefix(s, "docker-archive:"):
		r.Kind, r.Path = KindDockerArchive, strings.TrimPrefix(s, "docker-archive:")
		if r.Path == "" {
			return r, fmt.Errorf("image %q: docker-archive: needs a file", s)
		}
	default:
		if strings.Contains(s, "://") {
			return r, fmt.Errorf("image %q: unknown scheme (want go://, oci-layout:, docker-archive: or a registry reference)", s)
		}
		n, err := name.ParseReference(s)
		if err != nil {
			return r, fmt.Errorf("image %q: %w", s, err)
		}
		r.Kind, r.Name = KindRegistry, n
	}
	return r, nil
}

// checkGoPackage accepts "./rel/dir" (relative to the module root) and
// import paths; it refuses what go build would read as a flag, ".."
// components and patterns.
func checkGoPackage(pkg string) error {
	switch {
	case pkg == "":
		return fmt.Errorf("go:// needs a package")
	case strings.HasPrefix(pkg, "-"):
		return fmt.Errorf("package may not start with '-'")
	case strings.Contains(pkg, "..."):
		return fmt.Errorf("package patterns (...) are not allowed: name one main package")
	case strings.HasPrefix(pkg, "/") || strings.Contains(pkg, `\`):
		return fmt.Errorf("package must be ./dir relative to the module root or an import path")
	}
	for _, c := range strings.Split(pkg, "/") {
		if c == ".." {
			return fmt.Errorf("package may not contain '..'")
		}
	}
	if n := binaryName(pkg); n == "" || n == "." {
		return fmt.Errorf("package %q has no last path element to name the binary", pkg)
	}
	return nil
}

// binaryName is the name of the binary built from pkg: its last path
// element, as go build names it (a major-version suffix vN is skipped).
func binaryName(pkg string) string {
	p := path.Clean(strings.TrimSuffix(pkg, "/"))
	base := path.Base(p)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" && path.Dir(p) != "." {
		base = path.Base(path.Dir(p))
	}
	if base == "." || base == "/" {
		return ""
	}
	return base
}
