package qemu

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"testing"
)

type mapESP map[string][]byte

func (m mapESP) ReadDir(dir string) ([]string, error) {
	var out []string
	for p := range m {
		if path.Dir(p) == dir {
			out = append(out, path.Base(p))
		}
	}
	if len(out) == 0 {
		return nil, os.ErrNotExist
	}
	return out, nil
}

func (m mapESP) ReadFile(p string) ([]byte, error) {
	b, ok := m[p]
	if !ok {
		return nil, os.ErrNotExist
	}
	return b, nil
}

// fakeParse "parses" a UKI encoded as "osrel|cmdline".
func fakeParse(b []byte) (UKI, error) {
	osrel, cmd, ok := strings.Cut(string(b), "|")
	if !ok {
		return UKI{}, errors.New("not a UKI")
	}
	return UKI{OSRel: osrel, Cmdline: cmd, Linux: []byte("kernel")}, nil
}

func mkUKI(version, cmd string) []byte {
	return fmt.Appendf(nil, "ID=cairn\nVERSION_ID=%q\n|%s", version, cmd)
}

func TestChooseUKI(t *testing.T) {
	tests := []struct {
		name    string
		esp     mapESP
		want    string
		wantErr string
	}{
		{"only", mapESP{"EFI/Linux/cairn-1.0+3.efi": mkUKI("1.0", "a")}, "cairn-1.0+3.efi", ""},
		{"newest version", mapESP{
			"EFI/Linux/cairn-1.9.efi":    mkUKI("1.9", "a"),
			"EFI/Linux/cairn-1.10+3.efi": mkUKI("1.10", "b"),
			"EFI/Linux/cairn-1.2.efi":    mkUKI("1.2", "c"),
			"EFI/Linux/readme.txt":       []byte("x"),
		}, "cairn-1.10+3.efi", ""},
		{"exhausted tries go last", mapESP{
			"EFI/Linux/cairn-2+0-3.efi": mkUKI("2", "a"),
			"EFI/Linux/cairn-1.efi":     mkUKI("1", "b"),
		}, "cairn-1.efi", ""},
		{"broken one skipped", mapESP{
			"EFI/Linux/cairn-3.efi": []byte("garbage"),
			"EFI/Linux/cairn-1.efi": mkUKI("1", "b"),
		}, "cairn-1.efi", ""},
		{"none", mapESP{"EFI/BOOT/BOOTX64.EFI": []byte("x")}, "", "list ESP"},
		{"all broken", mapESP{"EFI/Linux/a.efi": []byte("garbage")}, "", "not a UKI"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := chooseUKI(tt.esp, fakeParse)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Name != tt.want {
				t.Errorf("chose %s, want %s", u.Name, tt.want)
			}
		})
	}
}

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1.10", "1.9", 1}, {"1.0", "1.0", 0}, {"2", "10", -1}, {"1.0.1", "1.0", 1},
		{"001", "1", 0}, {"1a", "1b", -1}, {"", "1", -1}, {"1.10", "1.a", 1},
	}
	for _, tt := range tests {
		if got := versionCompare(tt.a, tt.b); got != tt.want {
			t.Errorf("versionCompare(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := versionCompare(tt.b, tt.a); got != -tt.want {
			t.Errorf("versionCompare(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestTriesLeftAndCmdline(t *testing.T) {
	for in, want := range map[string]int{"a+3.efi": 3, "a+0-3.efi": 0, "a+2-1.EFI": 2, "a.efi": -1, "a+x.efi": -1} {
		if got := triesLeft(in); got != want {
			t.Errorf("triesLeft(%q) = %d, want %d", in, got, want)
		}
	}
	if got := cleanCmdline([]byte("console=ttyS0  panic=1\n\x00\x00")); got != "console=ttyS0 panic=1" {
		t.Errorf("cleanCmdline = %q", got)
	}
	if got := osrelValue("ID=cairn\nVERSION_ID='1.2'\n", "VERSION_ID"); got != "1.2" {
		t.Errorf("osrelValue = %q", got)
	}
}
