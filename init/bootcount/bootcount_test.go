package bootcount

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"
)

func encode(attr uint32, s string, nul bool) []byte {
	b := binary.LittleEndian.AppendUint32(nil, attr)
	u := utf16.Encode([]rune(s))
	if nul {
		u = append(u, 0)
	}
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}

func TestParseString(t *testing.T) {
	for _, s := range []string{`\EFI\Linux\cairn-1.0.0+2-1.efi`, "", "ünïcode €"} {
		for _, nul := range []bool{true, false} {
			got, err := ParseString(encode(6, s, nul))
			if err != nil || got != s {
				t.Errorf("ParseString(%q, nul=%v) = %q, %v", s, nul, got, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, {6, 0, 0, 0, 'a'}, make([]byte, maxVar+2)} {
		if _, err := ParseString(bad); err == nil {
			t.Errorf("ParseString(%d bytes) accepted", len(bad))
		}
	}
}

func TestCounter(t *testing.T) {
	for _, tc := range []struct {
		in, blessed string
		left, done  int
		ok          bool
	}{
		{"cairn-1.0.0+3.efi", "cairn-1.0.0.efi", 3, 0, true},
		{"cairn-1.0.0+2-1.efi", "cairn-1.0.0.efi", 2, 1, true},
		{"cairn-1.0.0+0-3.efi", "cairn-1.0.0.efi", 0, 3, true},
		{"lab-a+1-2.conf", "lab-a.conf", 1, 2, true},
		{"cairn-1.0.0.efi", "cairn-1.0.0.efi", 0, 0, false},
		{"cairn-1.0.0+x.efi", "cairn-1.0.0+x.efi", 0, 0, false},
		{"cairn+1-.efi", "cairn+1-.efi", 0, 0, false},
		{"+3.efi", "+3.efi", 0, 0, false},
		{"a+1-2-3.efi", "a+1-2-3.efi", 0, 0, false},
	} {
		b, l, d, ok := Counter(tc.in)
		if b != tc.blessed || l != tc.left || d != tc.done || ok != tc.ok {
			t.Errorf("Counter(%q) = %q %d %d %v", tc.in, b, l, d, ok)
		}
	}
}

func TestBless(t *testing.T) {
	esp := t.TempDir()
	dir := filepath.Join(esp, "EFI", "Linux")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "cairn-1.0.0+2-1.efi"), []byte("uki"), 0o644)
	old, nw, err := Bless(esp, `\EFI\Linux\cairn-1.0.0+2-1.efi`)
	if err != nil || old != "cairn-1.0.0+2-1.efi" || nw != "cairn-1.0.0.efi" {
		t.Fatalf("Bless = %q %q %v", old, nw, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cairn-1.0.0.efi")); err != nil || string(b) != "uki" {
		t.Fatalf("blessed file: %q %v", b, err)
	}
	// Again: already blessed.
	if old, nw, err := Bless(esp, `\EFI\Linux\cairn-1.0.0+2-1.efi`); err != nil || old != nw {
		t.Fatalf("second Bless = %q %q %v", old, nw, err)
	}
	// Target exists: refuse to overwrite.
	os.WriteFile(filepath.Join(dir, "cairn-2+1.efi"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(dir, "cairn-2.efi"), []byte("b"), 0o644)
	if _, _, err := Bless(esp, `\EFI\Linux\cairn-2+1.efi`); err == nil {
		t.Fatal("overwrote an existing blessed entry")
	}
	for _, bad := range []string{``, `\`, `\EFI\..\..\etc\passwd+1.efi`, `\EFI\Linux\.\x+1.efi`, `\EFI\Linux\cairn.efi`, `\EFI\Linux\missing+1.efi`, "\\EFI\\a\x00+1.efi"} {
		if _, _, err := Bless(esp, bad); err == nil {
			t.Errorf("Bless(%q) succeeded", bad)
		}
	}
}

func TestReadVars(t *testing.T) {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, VarBootCountPath+"-"+LoaderGUID), encode(6, `\EFI\Linux\c+1-2.efi`, true), 0o644)
	v, err := ReadVars(d)
	if err != nil || v.BootCountPath != `\EFI\Linux\c+1-2.efi` || v.EntrySelected != "" {
		t.Fatalf("%+v %v", v, err)
	}
	os.WriteFile(filepath.Join(d, VarEntrySelected+"-"+LoaderGUID), []byte{1, 2, 3}, 0o644)
	if _, err := ReadVars(d); err == nil {
		t.Fatal("truncated variable accepted")
	}
}

func FuzzParseString(f *testing.F) {
	f.Add(encode(6, `\EFI\Linux\cairn-1.0.0+2-1.efi`, true))
	f.Add([]byte{6, 0, 0, 0, 0xd8, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseString(b)
		if err != nil {
			return
		}
		if strings.ContainsRune(s, 0) {
			t.Fatalf("NUL in %q", s)
		}
		if p, err := ESPPath(s); err == nil && (strings.Contains("/"+p+"/", "/../") || strings.HasPrefix(p, "/")) {
			t.Fatalf("ESPPath(%q) = %q", s, p)
		}
		Counter(s)
	})
}
