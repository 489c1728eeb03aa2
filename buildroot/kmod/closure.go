package kmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Module is one entry of a closure.
type Module struct {
	Name string   // canonical module name ("-" → "_"), e.g. "dm_verity"
	Path string   // path relative to the modules directory, e.g. "kernel/drivers/md/dm-verity.ko"
	Deps []string // names of all modules it needs (transitively, modules.dep order)
}

// index is the parsed form of a modules directory's index files.
type index struct {
	dep      map[string]depEntry // by module name
	aliases  []aliasEntry        // modules.alias, in file order
	softdeps map[string][]string // module name → softdep values
	builtin  map[string]bool     // built-in module names
	bAliases []aliasEntry        // aliases of built-in modules
	bSoft    map[string][]string // softdeps of built-in modules
}

type depEntry struct {
	path string
	deps []string // module paths
}

type aliasEntry struct{ pattern, module string }

// Closure returns the modules needed to load the named modules, in load
// order (every module after everything it needs). It reads modules.dep (as
// written by Depmod or kmod's depmod), modules.alias, modules.softdep,
// modules.builtin and modules.builtin.modinfo from modulesDir.
//
// A name is resolved, in this order, as a module name ("-" and "_"
// equivalent), as a built-in module (satisfied, nothing to load), as an
// alias of a built-in module (likewise), or as a modules.alias glob
// ("fs-erofs", "crypto-crc32c"); if several modules match an alias and some
// end in "_generic", only those are used (TCG's default CPU lacks the
// instructions the accelerated crypto modules need), otherwise all match.
// softdep "pre:" modules are loaded before the module that names them;
// unresolvable softdeps are ignored, unknown requested names are an error.
func Closure(modulesDir string, names []string) ([]Module, error) {
	ix, err := loadIndex(modulesDir)
	if err != nil {
		return nil, err
	}
	c := &closer{ix: ix, state: map[string]int{}}
	for _, n := range names {
		mods, builtin, err := ix.resolve(n)
		if err != nil {
			return nil, err
		}
		for _, b := range builtin {
			c.builtinSoftdeps(b)
		}
		for _, m := range mods {
			c.visit(m)
		}
	}
	return c.out, nil
}

const (
	visiting = 1
	done     = 2
)

type closer struct {
	ix    *index
	state map[string]int
	out   []Module
}

func (c *closer) softdeps(values []string) {
	for _, s := range ParseSoftdep(values...).Pre {
		mods, builtin, err := c.ix.resolve(s)
		if err != nil {
			continue // soft dependencies are optional
		}
		for _, b := range builtin {
			c.builtinSoftdeps(b)
		}
		for _, m := range mods {
			c.visit(m)
		}
	}
}

func (c *closer) builtinSoftdeps(name string) {
	key := "builtin:" + name
	if c.state[key] != 0 {
		return
	}
	c.state[key] = done
	c.softdeps(c.ix.bSoft[name])
}

// visit appends name after its softdeps and dependencies (DFS post-order).
func (c *closer) visit(name string) {
	if c.state[name] != 0 {
		return // done, or a softdep cycle: keep the first position
	}
	c.state[name] = visiting
	e := c.ix.dep[name]
	c.softdeps(c.ix.softdeps[name])
	deps := make([]string, 0, len(e.deps))
	for _, p := range e.deps {
		d := moduleName(p)
		deps = append(deps, d)
		c.visit(d)
	}
	c.state[name] = done
	c.out = append(c.out, Module{Name: name, Path: e.path, Deps: deps})
}

// resolve maps a requested name to modules to load and built-ins that
// satisfy it.
func (ix *index) resolve(req string) (mods, builtin []string, err error) {
	n := Normalize(req)
	if _, ok := ix.dep[n]; ok {
		return []string{n}, nil, nil
	}
	if ix.builtin[n] {
		return nil, []string{n}, nil
	}
	if b := matchAliases(ix.bAliases, req); len(b) > 0 {
		return nil, b, nil
	}
	cands := matchAliases(ix.aliases, req)
	var generic []string
	for _, m := range cands {
		if _, ok := ix.dep[m]; !ok {
			return nil, nil, fmt.Errorf("kmod: alias %q names module %q, which is not in modules.dep", req, m)
		}
		if strings.HasSuffix(m, "_generic") {
			generic = append(generic, m)
		}
	}
	if len(generic) > 0 {
		return generic, nil, nil
	}
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("kmod: module %q not found (no module, built-in or alias matches)", req)
	}
	return cands, nil, nil
}

// matchAliases returns the sorted, distinct modules whose alias glob matches
// name. Both sides are also compared with "-" normalised to "_".
func matchAliases(aliases []aliasEntry, name string) []string {
	norm := Normalize(name)
	seen := map[string]bool{}
	var out []string
	for _, a := range aliases {
		if seen[a.module] {
			continue
		}
		ok, _ := path.Match(a.pattern, name)
		if !ok {
			ok, _ = path.Match(Normalize(a.pattern), norm)
		}
		if ok {
			seen[a.module] = true
			out = append(out, a.module)
		}
	}
	sort.Strings(out)
	return out
}

func loadIndex(dir string) (*index, error) {
	ix := &index{
		dep:      map[string]depEntry{},
		softdeps: map[string][]string{},
		builtin:  map[string]bool{},
		bSoft:    map[string][]string{},
	}
	read := func(name string, required bool) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) && !required {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("kmod: reading index: %w", err)
		}
		return b, nil
	}
	b, err := read("modules.dep", true)
	if err != nil {
		return nil, err
	}
	if err := ix.parseDep(b); err != nil {
		return nil, err
	}
	if b, err = read("modules.alias", false); err != nil {
		return nil, err
	}
	err = eachLine(b, "modules.alias", func(f []string) error {
		if len(f) != 3 || f[0] != "alias" {
			return errors.New("want \"alias <pattern> <module>\"")
		}
		ix.aliases = append(ix.aliases, aliasEntry{f[1], Normalize(f[2])})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if b, err = read("modules.softdep", false); err != nil {
		return nil, err
	}
	err = eachLine(b, "modules.softdep", func(f []string) error {
		if len(f) < 3 || f[0] != "softdep" {
			return errors.New("want \"softdep <module> <deps>\"")
		}
		n := Normalize(f[1])
		ix.softdeps[n] = append(ix.softdeps[n], strings.Join(f[2:], " "))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if b, err = read("modules.builtin", false); err != nil {
		return nil, err
	}
	err = eachLine(b, "modules.builtin", func(f []string) error {
		if len(f) != 1 || moduleName(f[0]) == "" {
			return errors.New("want a module path")
		}
		ix.builtin[moduleName(f[0])] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if b, err = read("modules.builtin.modinfo", false); err != nil {
		return nil, err
	}
	return ix, ix.parseBuiltinModinfo(b)
}

func (ix *index) parseDep(b []byte) error {
	return eachLine(b, "modules.dep", func(f []string) error {
		p, ok := strings.CutSuffix(f[0], ":")
		name := moduleName(p)
		if !ok || name == "" {
			return fmt.Errorf("want \"<module path>: <deps>\", got %q", f[0])
		}
		for _, d := range f[1:] {
			if moduleName(d) == "" {
				return fmt.Errorf("bad dependency path %q", d)
			}
		}
		if _, dup := ix.dep[name]; !dup {
			ix.dep[name] = depEntry{path: p, deps: f[1:]}
		}
		return nil
	})
}

// parseBuiltinModinfo reads "module.key=value" NUL-separated records.
func (ix *index) parseBuiltinModinfo(b []byte) error {
	for _, rec := range bytes.Split(b, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		mod, kv, ok := strings.Cut(string(rec), ".")
		if !ok {
			continue // tolerate odd records, as kmod does
		}
		key, val, _ := strings.Cut(kv, "=")
		mod = Normalize(mod)
		switch key {
		case "alias":
			ix.bAliases = append(ix.bAliases, aliasEntry{val, mod})
		case "softdep":
			ix.bSoft[mod] = append(ix.bSoft[mod], val)
		}
	}
	return nil
}

// eachLine calls fn with the fields of each non-empty, non-comment line.
func eachLine(b []byte, file string, fn func([]string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(strings.Fields(line)); err != nil {
			return fmt.Errorf("kmod: %s line %d: %w", file, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("kmod: reading %s: %w", file, err)
	}
	return nil
}
