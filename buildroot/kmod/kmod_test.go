package kmod

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"cairn.dev/cairn/buildroot/internal/debtest"
)

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Info
		wantErr string
	}{
		{"typical", "license=GPL\x00depends=reed_solomon,dm-mod,dm-bufio\x00name=dm_verity\x00softdep=pre: crc32c\x00alias=dm-target-verity\x00",
			Info{Name: "dm_verity", Depends: []string{"reed_solomon", "dm_mod", "dm_bufio"}, Aliases: []string{"dm-target-verity"}, Softdeps: []string{"pre: crc32c"}}, ""},
		{"padding and no final NUL", "\x00\x00name=x-y\x00\x00\x00depends=", Info{Name: "x_y"}, ""},
		{"empty", "", Info{}, ""},
		{"value with =", "alias=a=b\x00parm=x:y=z", Info{Aliases: []string{"a=b"}}, ""},
		{"empty deps items", "depends=,a,,b,", Info{Depends: []string{"a", "b"}}, ""},
		{"no equals", "name=x\x00garbage\x00", Info{}, `entry at offset 7 has no '='`},
		{"bad name", "name=a b", Info{}, "invalid name"},
		{"name with slash", "name=../x", Info{}, "invalid name"},
		{"bad dep", "depends=a,b\nc", Info{}, "invalid dependency"},
		{"empty alias", "alias=", Info{}, "invalid alias"},
		{"alias with space", "alias=a b", Info{}, "invalid alias"},
		{"softdep newline", "softdep=pre: a\nb", Info{}, "invalid softdep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseModinfo([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseSoftdep(t *testing.T) {
	tests := []struct {
		in   []string
		want Softdep
	}{
		{[]string{"pre: crc32c"}, Softdep{Pre: []string{"crc32c"}}},
		{[]string{"pre: a b post: c", "post: d pre: e"}, Softdep{Pre: []string{"a", "b", "e"}, Post: []string{"c", "d"}}},
		{[]string{"junk pre:"}, Softdep{}},
		{nil, Softdep{}},
	}
	for _, tc := range tests {
		if got := ParseSoftdep(tc.in...); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSoftdep(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestReadModinfo(t *testing.T) {
	elf := debtest.ModuleELF("name=a_b", "depends=c", "alias=fs-ab")
	got, err := ReadModinfo(bytes.NewReader(elf))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Name: "a_b", Depends: []string{"c"}, Aliases: []string{"fs-ab"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	bad := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"not ELF", []byte("hello"), "reading ELF"},
		{"truncated", elf[:len(elf)-100], "reading"},
		{"no modinfo", bytes.Replace(elf, []byte(".modinfo"), []byte(".xyzinfo"), 1), "no .modinfo section"},
	}
	for _, tc := range bad {
		if _, err := ReadModinfo(bytes.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("name=a\x00depends=b,c\x00alias=x*\x00softdep=pre: y\x00"))
	f.Add([]byte("\x00\x00="))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseModinfo(b)
		if err != nil {
			return
		}
		for _, s := range append(append([]string{in.Name}, in.Depends...), in.Aliases...) {
			if strings.ContainsAny(s, "\n\x00 ") {
				t.Fatalf("unsafe value %q accepted", s)
			}
		}
	})
}

func FuzzReadModinfo(f *testing.F) {
	f.Add(debtest.ModuleELF("name=a", "depends=b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ReadModinfo(bytes.NewReader(b))
	})
}

// writeTree creates a modules directory with synthetic modules; mods maps a
// path to its modinfo strings, files holds other files.
func writeTree(t *testing.T, mods map[string][]string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	write := func(p string, b []byte) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, info := range mods {
		b := debtest.ModuleELF(info...)
		switch {
		case strings.HasSuffix(p, ".xz"), strings.HasSuffix(p, ".zst"):
			b = debtest.Compress(t, filepath.Ext(p), b)
		}
		write(p, b)
	}
	for p, s := range files {
		write(p, []byte(s))
	}
	return dir
}

func synthetic(t *testing.T) string {
	return writeTree(t, map[string][]string{
		"kernel/base.ko":          {"name=base"},
		"kernel/mid-dash.ko":      {"name=mid_dash", "depends=base"},
		"kernel/fs/top.ko":        {"name=top", "depends=mid-dash,base", "alias=fs-top", "softdep=pre: crypto-foo post: other"},
		"kernel/c/foo_generic.ko": {"name=foo_generic", "alias=crypto-foo"},
		"kernel/c/foo_fast.ko.xz": {"name=foo_fast", "alias=crypto-foo", "alias=foo"},
		"kernel/d/other.ko.zst":   {"alias=pci:v00001AF4d*sv*"},
		"kernel/d/bar_x.ko":       {"alias=multi"},
		"kernel/d/bar_y.ko":       {"alias=mul?i"},
		"kernel/d/needs_ext4.ko":  {"softdep=pre: ext4"},
	}, map[string]string{
		"modules.order":           "kernel/base.ko\nkernel/mid-dash.ko\nkernel/fs/top.ko\nkernel/c/foo_generic.ko\nkernel/c/foo_fast.ko\nkernel/d/other.ko\n",
		"modules.builtin":         "kernel/fs/ext4/ext4.ko\n",
		"modules.builtin.modinfo": "ext4.softdep=pre: base\x00ext4.alias=fs-ext4\x00crc_gen.alias=crypto-crc\x00junk\x00",
		"build/notamodule.txt":    "x",
	})
}

func TestDepmod(t *testing.T) {
	dir := synthetic(t)
	if err := Depmod(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"modules.dep": `kernel/base.ko:
kernel/mid-dash.ko: kernel/base.ko
kernel/fs/top.ko: kernel/mid-dash.ko kernel/base.ko
kernel/c/foo_generic.ko:
kernel/c/foo_fast.ko.xz:
kernel/d/other.ko.zst:
kernel/d/bar_x.ko:
kernel/d/bar_y.ko:
kernel/d/needs_ext4.ko:
`,
		"modules.alias": `# Aliases extracted from modules themselves.
alias fs-top top
alias crypto-foo foo_generic
alias crypto-foo foo_fast
alias foo foo_fast
alias pci:v00001AF4d*sv* other
alias multi bar_x
alias mul?i bar_y
`,
		"modules.softdep": `# Soft dependencies extracted from modules themselves.
softdep top pre: crypto-foo post: other
softdep needs_ext4 pre: ext4
`,
	}
	for name, w := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != w {
			t.Errorf("%s:\n%s\nwant:\n%s", name, b, w)
		}
	}
}

func TestDepmodErrors(t *testing.T) {
	tests := []struct {
		name    string
		mods    map[string][]string
		wantErr string
	}{
		{"missing dep", map[string][]string{"kernel/a.ko": {"depends=nope"}}, `module a (kernel/a.ko) depends on "nope"`},
		{"cycle", map[string][]string{"kernel/a.ko": {"depends=b"}, "kernel/b.ko": {"depends=a"}}, "dependency cycle among modules a b"},
		{"name mismatch", map[string][]string{"kernel/a.ko": {"name=b"}}, `module kernel/a.ko: modinfo name "b" does not match`},
		{"bad modinfo", map[string][]string{"kernel/a.ko": {"garbage"}}, "module kernel/a.ko: modinfo: entry at offset 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Depmod(context.Background(), writeTree(t, tc.mods, nil))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
	dir := writeTree(t, nil, map[string]string{"kernel/bad.ko": "not an ELF file"})
	if err := Depmod(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "kernel/bad.ko: reading ELF") {
		t.Errorf("non-ELF module: err = %v", err)
	}
}

func names(mods []Module) []string {
	out := []string{}
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestClosure(t *testing.T) {
	dir := synthetic(t)
	if err := Depmod(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		req     []string
		want    []string
		wantErr string
	}{
		{"by name with softdep, generic preferred", []string{"top"}, []string{"foo_generic", "base", "mid_dash", "top"}, ""},
		{"by alias glob", []string{"fs-top"}, []string{"foo_generic", "base", "mid_dash", "top"}, ""},
		{"dash and underscore equivalent", []string{"mid-dash"}, []string{"base", "mid_dash"}, ""},
		{"underscore", []string{"mid_dash", "base"}, []string{"base", "mid_dash"}, ""},
		{"built-in skipped, its softdep followed", []string{"ext4"}, []string{"base"}, ""},
		{"built-in alias", []string{"crypto-crc", "fs-ext4"}, []string{"base"}, ""},
		{"softdep on a built-in", []string{"needs_ext4"}, []string{"base", "needs_ext4"}, ""},
		{"several alias matches", []string{"multi"}, []string{"bar_x", "bar_y"}, ""},
		{"modalias glob", []string{"pci:v00001AF4d00001000sv00001AF4"}, []string{"other"}, ""},
		{"non-crypto single alias", []string{"foo"}, []string{"foo_fast"}, ""},
		{"duplicates", []string{"base", "base", "mid_dash"}, []string{"base", "mid_dash"}, ""},
		{"empty", nil, []string{}, ""},
		{"unknown", []string{"base", "nosuch-mod"}, nil, `module "nosuch-mod" not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Closure(dir, tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := names(got); !reflect.DeepEqual(g, tc.want) {
				t.Errorf("got %v, want %v", g, tc.want)
			}
		})
	}
	got, err := Closure(dir, []string{"top"})
	if err != nil {
		t.Fatal(err)
	}
	if top := got[len(got)-1]; top.Path != "kernel/fs/top.ko" || !reflect.DeepEqual(top.Deps, []string{"mid_dash", "base"}) {
		t.Errorf("top = %+v", top)
	}
}

func TestClosureBadIndex(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"no modules.dep", map[string]string{}, "reading index"},
		{"dep without colon", map[string]string{"modules.dep": "kernel/a.ko\n"}, "modules.dep line 1"},
		{"dep bad path", map[string]string{"modules.dep": "kernel/a.ko: notamodule\n"}, `bad dependency path "notamodule"`},
		{"alias fields", map[string]string{"modules.dep": "kernel/a.ko:\n", "modules.alias": "# c\nalias x\n"}, "modules.alias line 2"},
		{"softdep fields", map[string]string{"modules.dep": "kernel/a.ko:\n", "modules.softdep": "softdep a\n"}, "modules.softdep line 1"},
		{"builtin garbage", map[string]string{"modules.dep": "kernel/a.ko:\n", "modules.builtin": "a b\n"}, "modules.builtin line 1"},
		{"alias to missing module", map[string]string{"modules.dep": "kernel/a.ko:\n", "modules.alias": "alias x b\n"}, `alias "x" names module "b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Closure(writeTree(t, nil, tc.files), []string{"x"})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
			}
		})
	}
}

const realRelease = "6.1.0-56-cloud-amd64"

// realTree returns a private copy (hard links where possible) of the
// extracted Debian kernel's lib/modules/<release>, so index files can be
// written without touching /tmp/k.
func realTree(t *testing.T) (root, dir string) {
	src := filepath.Join("/tmp/k/lib/modules", realRelease)
	if _, err := os.Stat(src); err != nil {
		t.Skipf("extracted kernel not available at %s", src)
	}
	root = t.TempDir()
	dir = filepath.Join(root, "lib/modules", realRelease)
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		dst := filepath.Join(dir, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(dst, 0o755)
		case fi.Mode().IsRegular():
			if strings.HasPrefix(filepath.Base(p), "modules.") && !strings.HasPrefix(filepath.Base(p), "modules.builtin") && filepath.Base(p) != "modules.order" {
				return nil // never inherit generated index files
			}
			if os.Link(p, dst) == nil {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return root, dir
}

func TestRealKernel(t *testing.T) {
	_, dir := realTree(t)
	if err := Depmod(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		req  string
		want string
	}{
		{"virtio_pci virtio_blk dm-verity erofs",
			"virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci virtio_blk dm_mod dm_bufio reed_solomon dm_verity libcrc32c erofs"},
		// DESIGN.md's boot-critical set on 6.1 cloud (36 modules, dependency order).
		{"virtio_pci virtio_blk squashfs vfat nls_cp437 nls_ascii ext4 overlay dm_verity virtio_net veth bridge nf_tables nft_chain_nat nft_masq nft_nat nft_ct qemu_fw_cfg efivarfs",
			"virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci virtio_blk squashfs fat vfat nls_cp437 nls_ascii overlay " +
				"dm_mod dm_bufio reed_solomon dm_verity failover net_failover virtio_net veth llc stp bridge nfnetlink libcrc32c nf_tables " +
				"nf_defrag_ipv6 nf_defrag_ipv4 nf_conntrack nf_nat nft_chain_nat nft_masq nft_nat nft_ct qemu_fw_cfg efivarfs"},
		// Built-in crc32c_generic satisfies crypto-crc32c; the SSE4.2 crc32c_intel module is not pulled in.
		{"fs-erofs crypto-crc32c", "libcrc32c erofs"},
	}
	for _, tc := range tests {
		mods, err := Closure(dir, strings.Fields(tc.req))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(names(mods), " "); got != tc.want {
			t.Errorf("Closure(%s):\n got %s\nwant %s", tc.req, got, tc.want)
		}
		for _, m := range mods {
			if _, err := os.Stat(filepath.Join(dir, m.Path)); err != nil {
				t.Errorf("module %s: %v", m.Name, err)
			}
		}
	}
	if len(strings.Fields(tests[1].want)) != 36 {
		t.Fatal("DESIGN.md set must have 36 modules")
	}
}

// parseDepFile maps each module path to its dependency list.
func parseDepFile(t *testing.T, name string) (order []string, deps map[string][]string) {
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	deps = map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		p := strings.TrimSuffix(f[0], ":")
		order = append(order, p)
		deps[p] = f[1:]
	}
	return order, deps
}

// TestRealKernelAgainstDepmod compares the generated index files with kmod's
// depmod -b: modules.alias and modules.softdep must be identical; modules.dep
// must list the same modules in the same order with the same dependency
// sets. The order inside a line may differ where kmod breaks ties by symbol
// order (which modinfo does not record), so each of our lines is checked to
// be a valid load order instead.
func TestRealKernelAgainstDepmod(t *testing.T) {
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		if depmod, err = exec.LookPath("/usr/sbin/depmod"); err != nil {
			t.Skip("depmod (kmod) not installed")
		}
	}
	_, ours := realTree(t)
	if err := Depmod(context.Background(), ours); err != nil {
		t.Fatal(err)
	}
	refRoot, ref := realTree(t)
	if out, err := exec.Command(depmod, "-b", refRoot, realRelease).CombinedOutput(); err != nil {
		t.Fatalf("depmod -b: %v: %s", err, out)
	}
	for _, f := range []string{"modules.alias", "modules.softdep"} {
		a, _ := os.ReadFile(filepath.Join(ours, f))
		b, _ := os.ReadFile(filepath.Join(ref, f))
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("%s differs from depmod's (%d vs %d bytes)", f, len(a), len(b))
		}
	}
	gotOrder, got := parseDepFile(t, filepath.Join(ours, "modules.dep"))
	wantOrder, want := parseDepFile(t, filepath.Join(ref, "modules.dep"))
	if !reflect.DeepEqual(gotOrder, wantOrder) {
		t.Fatalf("modules.dep module order differs (%d vs %d lines)", len(gotOrder), len(wantOrder))
	}
	for p, w := range want {
		g := got[p]
		if !sameSet(g, w) {
			t.Errorf("%s: deps %v, depmod says %v", p, g, w)
		}
		// Users before the modules they use: no dep may need an earlier one.
		for i := range g {
			for j := i + 1; j < len(g); j++ {
				if contains(got[g[j]], g[i]) {
					t.Errorf("%s: %s listed before %s, which needs it", p, g[i], g[j])
				}
			}
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}
