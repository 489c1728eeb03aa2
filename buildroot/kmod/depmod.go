package kmod

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"cairn.dev/cairn/internal/atomicfile"
)

// maxModuleSize bounds a decompressed .ko.xz/.ko.zst module.
const maxModuleSize = 256 << 20

// moduleSuffixes are the module file name endings that Depmod indexes.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst"}

type depmodModule struct {
	name  string // normalised module name
	path  string // slash path relative to the modules directory
	info  Info
	order int // position in modules.order, or after all listed ones
	deps  []*depmodModule
	users int
	idx   int // position after sorting
	sort  int // topological sort index (users before their dependencies)
}

// Depmod scans modulesDir (lib/modules/<release>) for kernel modules, reads
// their .modinfo sections and writes modules.dep, modules.alias and
// modules.softdep into modulesDir in kmod's text formats. Modules are listed
// in modules.order order (unlisted ones after, by path); each module's
// dependencies are listed transitively, users before the modules they use,
// as kmod's depmod does.
func Depmod(ctx context.Context, modulesDir string) error {
	mods, err := scanModules(ctx, modulesDir)
	if err != nil {
		return err
	}
	if err := linkDeps(mods); err != nil {
		return err
	}
	if err := topoSort(mods); err != nil {
		return err
	}
	files := []struct {
		name string
		gen  func(*bufio.Writer, []*depmodModule)
	}{
		{"modules.dep", writeDep},
		{"modules.alias", writeAlias},
		{"modules.softdep", writeSoftdep},
	}
	for _, f := range files {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		f.gen(w, mods)
		if err := w.Flush(); err != nil {
			return fmt.Errorf("depmod: generating %s: %w", f.name, err)
		}
		if err := atomicfile.WriteFile(filepath.Join(modulesDir, f.name), buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("depmod: %w", err)
		}
	}
	return nil
}

// moduleName derives the module name from a module file name.
func moduleName(p string) string {
	base := path.Base(p)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(base, s) {
			return Normalize(strings.TrimSuffix(base, s))
		}
	}
	return ""
}

func scanModules(ctx context.Context, dir string) ([]*depmodModule, error) {
	byName := map[string]*depmodModule{}
	var mods []*depmodModule
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		name := moduleName(p)
		if name == "" {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := readModuleFile(p)
		if err != nil {
			return fmt.Errorf("module %s: %w", rel, err)
		}
		if info.Name != "" && info.Name != name {
			return fmt.Errorf("module %s: modinfo name %q does not match its file name", rel, info.Name)
		}
		m := &depmodModule{name: name, path: rel, info: info}
		if prev, ok := byName[name]; ok {
			// Like depmod's default search order: updates/ wins, otherwise the first path.
			if strings.HasPrefix(rel, "updates/") && !strings.HasPrefix(prev.path, "updates/") {
				*prev = *m
			}
			return nil
		}
		byName[name] = m
		mods = append(mods, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("depmod: scanning %s: %w", dir, err)
	}
	order, err := readOrder(filepath.Join(dir, "modules.order"))
	if err != nil {
		return nil, fmt.Errorf("depmod: %w", err)
	}
	for _, m := range mods {
		if i, ok := order[stripCompression(m.path)]; ok {
			m.order = i
		} else {
			m.order = len(order)
		}
	}
	sort.SliceStable(mods, func(i, j int) bool {
		if mods[i].order != mods[j].order {
			return mods[i].order < mods[j].order
		}
		return mods[i].path < mods[j].path
	})
	for i, m := range mods {
		m.idx = i
	}
	return mods, nil
}

func stripCompression(p string) string {
	return strings.TrimSuffix(strings.TrimSuffix(p, ".xz"), ".zst")
}

// readOrder reads modules.order (module paths, one a line); a missing file
// yields an empty order.
func readOrder(name string) (map[string]int, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading modules.order: %w", err)
	}
	order := map[string]int{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if _, dup := order[line]; line != "" && !dup {
			order[line] = i
		}
	}
	return order, nil
}

// readModuleFile reads the modinfo of a module file, decompressing
// .ko.xz/.ko.zst in memory.
func readModuleFile(p string) (Info, error) {
	f, err := os.Open(p)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	var r io.Reader
	switch {
	case strings.HasSuffix(p, ".ko"):
		return ReadModinfo(f)
	case strings.HasSuffix(p, ".xz"):
		x, err := xz.NewReader(bufio.NewReader(f))
		if err != nil {
			return Info{}, fmt.Errorf("xz: %w", err)
		}
		r = x
	case strings.HasSuffix(p, ".zst"):
		z, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return Info{}, fmt.Errorf("zstd: %w", err)
		}
		defer z.Close()
		r = z
	}
	b, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return Info{}, fmt.Errorf("decompressing: %w", err)
	}
	if len(b) > maxModuleSize {
		return Info{}, fmt.Errorf("decompressed module exceeds %d bytes", maxModuleSize)
	}
	return ReadModinfo(bytes.NewReader(b))
}

func linkDeps(mods []*depmodModule) error {
	byName := make(map[string]*depmodModule, len(mods))
	for _, m := range mods {
		byName[m.name] = m
	}
	for _, m := range mods {
		for _, d := range m.info.Depends {
			dm, ok := byName[d]
			if !ok {
				return fmt.Errorf("depmod: module %s (%s) depends on %q, which is not in the tree", m.name, m.path, d)
			}
			if dm == m || slices.Contains(m.deps, dm) {
				continue
			}
			m.deps = append(m.deps, dm)
			dm.users++
		}
	}
	return nil
}

// topoSort assigns sort indexes the way kmod's depmod does (Kahn's
// algorithm with a LIFO of modules without users), so that users come
// before their dependencies. It fails on dependency cycles.
func topoSort(mods []*depmodModule) error {
	users := make([]int, len(mods))
	var roots []int
	for i, m := range mods {
		users[i] = m.users
		if users[i] == 0 {
			roots = append(roots, i)
		}
	}
	n := 0
	for len(roots) > 0 {
		i := roots[len(roots)-1]
		roots = roots[:len(roots)-1]
		mods[i].sort = n
		n++
		for _, d := range mods[i].deps {
			users[d.idx]--
			if users[d.idx] == 0 {
				roots = append(roots, d.idx)
			}
		}
	}
	if n < len(mods) {
		var cyc []string
		for i, u := range users {
			if u > 0 {
				cyc = append(cyc, mods[i].name)
			}
		}
		return fmt.Errorf("depmod: dependency cycle among modules %s", strings.Join(cyc, " "))
	}
	return nil
}

// allDeps returns m's transitive dependencies sorted by topological index.
func allDeps(m *depmodModule) []*depmodModule {
	seen := map[*depmodModule]bool{}
	var out []*depmodModule
	var walk func(*depmodModule)
	walk = func(x *depmodModule) {
		for _, d := range x.deps {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
				walk(d)
			}
		}
	}
	walk(m)
	sort.Slice(out, func(i, j int) bool { return out[i].sort < out[j].sort })
	return out
}

func writeDep(w *bufio.Writer, mods []*depmodModule) {
	for _, m := range mods {
		w.WriteString(m.path + ":")
		for _, d := range allDeps(m) {
			w.WriteString(" " + d.path)
		}
		w.WriteByte('\n')
	}
}

func writeAlias(w *bufio.Writer, mods []*depmodModule) {
	w.WriteString("# Aliases extracted from modules themselves.\n")
	for _, m := range mods {
		for _, a := range m.info.Aliases {
			fmt.Fprintf(w, "alias %s %s\n", a, m.name)
		}
	}
}

func writeSoftdep(w *bufio.Writer, mods []*depmodModule) {
	w.WriteString("# Soft dependencies extracted from modules themselves.\n")
	for _, m := range mods {
		for _, s := range m.info.Softdeps {
			fmt.Fprintf(w, "softdep %s %s\n", m.name, s)
		}
	}
}
