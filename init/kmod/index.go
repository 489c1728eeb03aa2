// Package kmod loads kernel modules without modprobe: it parses the
// modules.dep / modules.alias / modules.softdep / modules.builtin indexes,
// loads modules in parallel (each one as soon as its dependencies are in),
// and does coldplug by matching /sys/devices/**/modalias against the alias
// globs.
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Index is the parsed module index of one /lib/modules/<release> directory.
type Index struct {
	Dir     string
	paths   map[string]string   // module -> path relative to Dir
	deps    map[string][]string // module -> modules it depends on
	softPre map[string][]string // module -> softdep pre: names (unresolved)
	builtin map[string]bool
	aliases map[string][]alias // bus prefix ("pci", "" for other) -> aliases
	// builtinAliases are the alias patterns of built-in modules
	// (modules.builtin.modinfo), e.g. "crc32c" for crc32c_generic.
	builtinAliases []string
}

type alias struct {
	pattern string
	module  string
}

// maxLine bounds index lines (modules.alias lines are < 300 bytes).
const maxLine = 64 << 10

// Name normalizes a module name or file name: base name, no .ko[.xz|.zst|.gz],
// '-' as '_'.
func Name(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// LoadIndex reads the index files of dir. modules.dep is required; the
// others are optional.
func LoadIndex(dir string) (*Index, error) {
	ix := newIndex(dir)
	files := []struct {
		name     string
		required bool
		parse    func(io.Reader) error
	}{
		{"modules.dep", true, ix.parseDep},
		{"modules.alias", false, ix.parseAlias},
		{"modules.softdep", false, ix.parseSoftdep},
		{"modules.builtin", false, ix.parseBuiltin},
		{"modules.builtin.modinfo", false, ix.parseBuiltinModinfo},
	}
	for _, f := range files {
		fh, err := os.Open(filepath.Join(dir, f.name))
		if err != nil {
			if !f.required && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("kmod: %w", err)
		}
		err = f.parse(fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("kmod: %s: %w", f.name, err)
		}
	}
	return ix, nil
}

func newIndex(dir string) *Index {
	return &Index{
		Dir:     dir,
		paths:   map[string]string{},
		deps:    map[string][]string{},
		softPre: map[string][]string{},
		builtin: map[string]bool{},
		aliases: map[string][]alias{},
	}
}

func eachLine(r io.Reader, f func(line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := f(line); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// cleanRel rejects absolute paths and paths leaving the modules directory.
func cleanRel(p string) (string, error) {
	if p == "" || path.IsAbs(p) {
		return "", fmt.Errorf("bad module path %q", p)
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") || c == "." {
		return "", fmt.Errorf("module path %q leaves the modules directory", p)
	}
	if !strings.Contains(path.Base(c), ".ko") {
		return "", fmt.Errorf("module path %q is not a .ko", p)
	}
	return c, nil
}

func (ix *Index) parseDep(r io.Reader) error {
	return eachLine(r, func(line string) error {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New("missing ':'")
		}
		p, err := cleanRel(strings.TrimSpace(mod))
		if err != nil {
			return err
		}
		name := Name(p)
		ix.paths[name] = p
		var deps []string
		for _, d := range strings.Fields(rest) {
			dp, err := cleanRel(d)
			if err != nil {
				return err
			}
			deps = append(deps, Name(dp))
		}
		ix.deps[name] = deps
		return nil
	})
}

// busOf returns the text before the first ':' when it has no glob
// characters, the bucket key for aliases and modaliases alike.
func busOf(s string) string {
	b, _, ok := strings.Cut(s, ":")
	if !ok || strings.ContainsAny(b, "*?[\\") {
		return ""
	}
	return b
}

func (ix *Index) parseAlias(r io.Reader) error {
	return eachLine(r, func(line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("bad alias line %q", line)
		}
		if _, err := path.Match(f[1], ""); err != nil {
			return fmt.Errorf("alias %q: %w", f[1], err)
		}
		b := busOf(f[1])
		ix.aliases[b] = append(ix.aliases[b], alias{pattern: f[1], module: Name(f[2])})
		return nil
	})
}

func (ix *Index) parseSoftdep(r io.Reader) error {
	return eachLine(r, func(line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return fmt.Errorf("bad softdep line %q", line)
		}
		mod := Name(f[1])
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					ix.softPre[mod] = append(ix.softPre[mod], w)
				}
			}
		}
		return nil
	})
}

func (ix *Index) parseBuiltin(r io.Reader) error {
	return eachLine(r, func(line string) error {
		ix.builtin[Name(line)] = true
		return nil
	})
}

// parseBuiltinModinfo reads the NUL-separated "module.key=value" records of
// modules.builtin.modinfo and keeps the aliases.
func (ix *Index) parseBuiltinModinfo(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	for _, rec := range strings.Split(string(b), "\x00") {
		mod, kv, ok := strings.Cut(rec, ".")
		if !ok || mod == "" {
			continue
		}
		if a, ok := strings.CutPrefix(kv, "alias="); ok && a != "" {
			if _, err := path.Match(a, ""); err == nil {
				ix.builtinAliases = append(ix.builtinAliases, a)
			}
		}
	}
	return nil
}

// Builtin reports whether name is built into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[Name(name)] }

// BuiltinProvides reports whether built-in code provides a module name or an
// alias (such as "crc32c", which the built-in crc32c_generic provides).
func (ix *Index) BuiltinProvides(nameOrAlias string) bool {
	if ix.builtin[Name(nameOrAlias)] {
		return true
	}
	for _, a := range ix.builtinAliases {
		if ok, _ := path.Match(a, nameOrAlias); ok {
			return true
		}
	}
	return false
}

// Has reports whether name is a loadable module of the index.
func (ix *Index) Has(name string) bool { _, ok := ix.paths[Name(name)]; return ok }

// Path returns the absolute path of module name.
func (ix *Index) Path(name string) (string, bool) {
	p, ok := ix.paths[Name(name)]
	if !ok {
		return "", false
	}
	return filepath.Join(ix.Dir, filepath.FromSlash(p)), true
}

// Deps returns the direct hard dependencies of name (modules.dep).
func (ix *Index) Deps(name string) []string {
	return append([]string(nil), ix.deps[Name(name)]...)
}

// SoftDeps returns the resolvable "softdep pre:" modules of name: loaded
// first, but their failure does not stop name.
func (ix *Index) SoftDeps(name string) []string {
	name = Name(name)
	var deps []string
	for _, s := range ix.softPre[name] {
		for _, m := range ix.Resolve(s) {
			if m != name {
				deps = append(deps, m)
			}
		}
	}
	return deps
}

// Resolve maps a module name or alias (e.g. "dm-verity", "fs-erofs") to
// loadable module names. Built-in modules resolve to nothing. Aliases with
// a *_generic candidate prefer it (TCG's CPU lacks the accelerated ones).
func (ix *Index) Resolve(nameOrAlias string) []string {
	if ix.BuiltinProvides(nameOrAlias) {
		return nil
	}
	if n := Name(nameOrAlias); ix.paths[n] != "" {
		return []string{n}
	}
	mods := ix.Match(nameOrAlias)
	for _, m := range mods {
		if strings.HasSuffix(m, "_generic") {
			return []string{m}
		}
	}
	return mods
}

// Match returns the modules whose alias globs match modalias (deduplicated,
// in index order).
func (ix *Index) Match(modalias string) []string {
	var out []string
	seen := map[string]bool{}
	check := func(list []alias) {
		for _, a := range list {
			if seen[a.module] {
				continue
			}
			if ok, _ := path.Match(a.pattern, modalias); ok {
				seen[a.module] = true
				out = append(out, a.module)
			}
		}
	}
	if b := busOf(modalias); b != "" {
		check(ix.aliases[b])
	}
	check(ix.aliases[""])
	return out
}

// ReadList reads a cairn.load style list: one module name per line, '#'
// comments.
func ReadList(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	var names []string
	err = eachLine(f, func(line string) error {
		names = append(names, strings.Fields(line)[0])
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kmod: %s: %w", file, err)
	}
	return names, nil
}
