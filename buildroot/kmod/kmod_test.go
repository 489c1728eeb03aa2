package kmod

import (
	"bytes"
	"context"
	"os"
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
