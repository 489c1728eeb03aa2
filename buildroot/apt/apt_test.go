package apt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseLock(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		in      string
		want    []Pin
		wantErr string
	}{
		{"ok", "# comment\n\nlinux-image-6.1.0-56-cloud-amd64 6.1.192-2 " + sum + "\n  systemd-boot-efi 252.39-1~deb12u2 " + strings.ToUpper(sum) + "  \n",
			[]Pin{{"linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", sum}, {"systemd-boot-efi", "252.39-1~deb12u2", sum}}, ""},
		{"epoch", "foo 1:2.3-4 " + sum, []Pin{{"foo", "1:2.3-4", sum}}, ""},
		{"empty", "", nil, ""},
		{"two fields", "foo 1.0\n", nil, "lock line 1: want"},
		{"bad name", "Foo 1.0 " + sum, nil, `invalid package name "Foo"`},
		{"option-like name", "-foo 1.0 " + sum, nil, "invalid package name"},
		{"bad version", "foo v1;rm " + sum, nil, "invalid version"},
		{"short sum", "foo 1.0 abcd", nil, "invalid sha256"},
		{"non-hex sum", "foo 1.0 " + strings.Repeat("zz", 32), nil, "invalid sha256"},
		{"duplicate", "foo 1.0 " + sum + "\nfoo 2.0 " + sum, nil, `lock line 2: package "foo" pinned twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLock(strings.NewReader(tc.in))
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

func TestRepoLockFile(t *testing.T) {
	pins, err := ReadLock("../debian.lock")
	if err != nil {
		t.Fatal(err)
	}
	if len(pins) < 2 {
		t.Fatalf("lock has %d pins", len(pins))
	}
}

func TestFamilyMatch(t *testing.T) {
	f := Family{Prefix: "linux-image-6.1.0-", Suffix: "-cloud-amd64"}
	tests := []struct {
		name string
		n    int
		ok   bool
	}{
		{"linux-image-6.1.0-56-cloud-amd64", 56, true},
		{"linux-image-6.1.0-9-cloud-amd64", 9, true},
		{"linux-image-6.1.0-56-cloud-amd64-dbg", 0, false},
		{"linux-image-6.1.0-56-cloud-amd64-unsigned", 0, false},
		{"linux-image-6.1.0--cloud-amd64", 0, false},
		{"linux-image-6.1.0-5x-cloud-amd64", 0, false},
		{"linux-image-6.1.0-56-amd64", 0, false},
	}
	for _, tc := range tests {
		if n, ok := f.Match(tc.name); n != tc.n || ok != tc.ok {
			t.Errorf("Match(%q) = %d, %v; want %d, %v", tc.name, n, ok, tc.n, tc.ok)
		}
	}
}

// fakeApt simulates apt-get/apt-cache over an in-memory archive.
type fakeApt struct {
	archive  map[string]map[string][]byte // name → version → .deb content
	corrupt  map[string]bool              // name=version served with wrong content
	offline  bool                         // apt-get download fails for everything
	calls    []string
	extraDbg bool
}

func (f *fakeApt) Run(_ context.Context, dir string, argv ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.Join(argv, " "))
	args := argv[1:]
	if len(args) > 0 && args[len(args)-2] == "--" {
		args = append(args[:len(args)-2:len(args)-2], args[len(args)-1])
	}
	switch {
	case argv[0] == "apt-get" && args[0] == "download":
		name, ver, _ := strings.Cut(args[1], "=")
		data, ok := f.archive[name][ver]
		if f.offline || !ok {
			return nil, fmt.Errorf("E: Version '%s' for '%s' was not found", ver, name)
		}
		if f.corrupt[args[1]] {
			data = append([]byte("tampered"), data...)
		}
		return nil, os.WriteFile(filepath.Join(dir, name+"_"+ver+"_amd64.deb"), data, 0o644)
	case argv[0] == "apt-cache" && args[0] == "show":
		name, ver, _ := strings.Cut(args[1], "=")
		vers, ok := f.archive[name]
		if !ok {
			return nil, errors.New("E: No packages found")
		}
		var out strings.Builder
		for v, data := range vers {
			if ver == "" || v == ver {
				fmt.Fprintf(&out, "Package: %s\nVersion: %s\nDescription: x\n continuation: y\nSHA256: %s\n\n", name, v, sum(data))
			}
		}
		return []byte(out.String()), nil
	case argv[0] == "apt-cache" && args[0] == "policy":
		vers := f.archive[args[1]]
		best := ""
		for v := range vers {
			if v > best {
				best = v
			}
		}
		if best == "" {
			return nil, nil
		}
		return []byte(args[1] + ":\n  Installed: (none)\n  Candidate: " + best + "\n  Version table:\n"), nil
	case argv[0] == "apt-cache" && args[0] == "search":
		var out strings.Builder
		for name := range f.archive {
			fmt.Fprintf(&out, "%s - Linux\n", name)
			if f.extraDbg {
				fmt.Fprintf(&out, "%s-dbg - debug\n", name)
			}
		}
		return []byte(out.String()), nil
	}
	return nil, fmt.Errorf("fakeApt: unexpected command %q", argv)
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestFetch(t *testing.T) {
	k56, k57, k9 := []byte("kernel 56"), []byte("kernel 57"), []byte("kernel 9")
	fam := &Family{Prefix: "linux-image-6.1.0-", Suffix: "-cloud-amd64"}
	pin56 := Pin{"linux-image-6.1.0-56-cloud-amd64", "6.1.192-2", sum(k56)}
	archive := func(with56 bool) map[string]map[string][]byte {
		a := map[string]map[string][]byte{
			"linux-image-6.1.0-57-cloud-amd64": {"6.1.200-1": k57},
			"linux-image-6.1.0-9-cloud-amd64":  {"6.1.50-1": k9},
		}
		if with56 {
			a[pin56.Name] = map[string][]byte{pin56.Version: k56}
		}
		return a
	}
	tests := []struct {
		name      string
		apt       *fakeApt
		cache     map[string][]byte // files in the cache before Fetch
		req       Request
		want      Result // Path is checked to be in the cache with SHA256 content
		wantErr   string
		wantCalls int // -1: don't care
		wantLog   string
	}{
		{
			name:      "warm cache: no apt call",
			apt:       &fakeApt{offline: true},
			cache:     map[string][]byte{"linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb": k56},
			req:       Request{Pin: pin56, Family: fam},
			want:      Result{Name: pin56.Name, Version: pin56.Version, SHA256: pin56.SHA256},
			wantCalls: 0,
		},
		{
			name:      "download",
			apt:       &fakeApt{archive: archive(true)},
			req:       Request{Pin: pin56, Family: fam},
			want:      Result{Name: pin56.Name, Version: pin56.Version, SHA256: pin56.SHA256},
			wantCalls: 1,
		},
		{
			name:      "corrupt cache file is ignored and replaced",
			apt:       &fakeApt{archive: archive(true)},
			cache:     map[string][]byte{"linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb": []byte("bad")},
			req:       Request{Pin: pin56, Family: fam},
			want:      Result{Name: pin56.Name, Version: pin56.Version, SHA256: pin56.SHA256},
			wantCalls: 1,
			wantLog:   "ignoring it",
		},
		{
			name:    "download sha256 mismatch is fatal, no fallback",
			apt:     &fakeApt{archive: archive(true), corrupt: map[string]bool{pin56.Name + "=" + pin56.Version: true}},
			req:     Request{Pin: pin56, Family: fam},
			wantErr: "sha256 mismatch",
		},
		{
			name:      "vanished pin falls back to the numerically newest",
			apt:       &fakeApt{archive: archive(false), extraDbg: true},
			req:       Request{Pin: pin56, Family: fam},
			want:      Result{Name: "linux-image-6.1.0-57-cloud-amd64", Version: "6.1.200-1", SHA256: sum(k57), Fallback: true, Pinned: pin56.Name + "=" + pin56.Version},
			wantCalls: -1,
			wantLog:   "no longer in the archive",
		},
		{
			name:    "fallback verifies the archive's sha256",
			apt:     &fakeApt{archive: archive(false), corrupt: map[string]bool{"linux-image-6.1.0-57-cloud-amd64=6.1.200-1": true}},
			req:     Request{Pin: pin56, Family: fam},
			wantErr: "sha256 mismatch",
		},
		{
			name:    "vanished package without family",
			apt:     &fakeApt{archive: archive(false)},
			req:     Request{Pin: pin56},
			wantErr: "has no installable candidate version",
		},
		{
			name: "vanished version without family falls back to the candidate",
			apt: &fakeApt{archive: map[string]map[string][]byte{
				"linux-image-6.1.0-57-cloud-amd64": {"6.1.200-1": k57},
			}},
			req:       Request{Pin: Pin{"linux-image-6.1.0-57-cloud-amd64", "6.1.199-1", sum(k56)}},
			want:      Result{Name: "linux-image-6.1.0-57-cloud-amd64", Version: "6.1.200-1", SHA256: sum(k57), Fallback: true, Pinned: "linux-image-6.1.0-57-cloud-amd64=6.1.199-1"},
			wantCalls: -1,
			wantLog:   "no longer in the archive",
		},
		{
			name:    "download failure while the version exists is not a fallback",
			apt:     &fakeApt{archive: archive(true), offline: true},
			req:     Request{Pin: pin56, Family: fam},
			wantErr: "downloading linux-image-6.1.0-56-cloud-amd64=6.1.192-2",
		},
		{
			name:    "no family member in the archive",
			apt:     &fakeApt{archive: map[string]map[string][]byte{"other": {"1": []byte("x")}}},
			req:     Request{Pin: pin56, Family: fam},
			wantErr: "no package linux-image-6.1.0-<N>-cloud-amd64 known to apt",
		},
		{
			name:      "no pin: newest with a warning",
			apt:       &fakeApt{archive: archive(true)},
			req:       Request{Family: fam},
			want:      Result{Name: "linux-image-6.1.0-57-cloud-amd64", Version: "6.1.200-1", SHA256: sum(k57), Fallback: true},
			wantCalls: -1,
			wantLog:   "no pin",
		},
		{
			name:      "fallback uses the cache too",
			apt:       &fakeApt{archive: archive(false)},
			cache:     map[string][]byte{"linux-image-6.1.0-57-cloud-amd64_6.1.200-1_amd64.deb": k57},
			req:       Request{Pin: pin56, Family: fam},
			want:      Result{Name: "linux-image-6.1.0-57-cloud-amd64", Version: "6.1.200-1", SHA256: sum(k57), Fallback: true, Pinned: pin56.Name + "=" + pin56.Version},
			wantCalls: -1,
		},
		{name: "empty request", apt: &fakeApt{}, wantErr: "empty request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tc.cache {
				if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var logs []string
			f := &Fetcher{Dir: dir, Runner: tc.apt, Log: func(format string, a ...any) { logs = append(logs, fmt.Sprintf(format, a...)) }}
			got, err := f.Fetch(context.Background(), tc.req)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "mismatch") && !errors.Is(err, ErrChecksum) {
					t.Errorf("err = %v, want ErrChecksum", err)
				}
				ents, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
				for _, e := range ents {
					if b, _ := os.ReadFile(e); strings.HasPrefix(string(b), "tampered") {
						t.Errorf("tampered file %s left in the cache", e)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(got.Path) != dir {
				t.Errorf("path %s not in the cache %s", got.Path, dir)
			}
			if s, err := FileSHA256(got.Path); err != nil || s != tc.want.SHA256 {
				t.Errorf("cached file sha256 %s (%v), want %s", s, err, tc.want.SHA256)
			}
			got.Path = ""
			if *got != tc.want {
				t.Errorf("got %+v\nwant %+v", *got, tc.want)
			}
			if tc.wantCalls >= 0 && len(tc.apt.calls) != tc.wantCalls {
				t.Errorf("apt calls %q, want %d", tc.apt.calls, tc.wantCalls)
			}
			if tc.wantLog != "" && !strings.Contains(strings.Join(logs, "\n"), tc.wantLog) {
				t.Errorf("logs %q, want one containing %q", logs, tc.wantLog)
			}
			if tc.want.Fallback && len(logs) == 0 {
				t.Error("fallback without a warning")
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".download-*")); len(left) > 0 {
				t.Errorf("temporary directories left: %v", left)
			}
		})
	}
}

func TestParseRecords(t *testing.T) {
	out := "Package: a\nVersion: 1\nSHA256: ABC\nDescription: x\n SHA256: fake\n\nPackage: a\nVersion: 2\nFilename: pool/a_2.deb\n"
	want := []Record{{Package: "a", Version: "1", SHA256: "abc"}, {Package: "a", Version: "2", Filename: "pool/a_2.deb"}}
	if got := parseRecords([]byte(out)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestRealDownload downloads the pinned systemd-boot-efi with the real
// apt-get and checks it against the repository lock file.
func TestRealDownload(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("apt-get not installed")
	}
	pins, err := ReadLock("../debian.lock")
	if err != nil {
		t.Fatal(err)
	}
	var pin Pin
	for _, p := range pins {
		if p.Name == "systemd-boot-efi" {
			pin = p
		}
	}
	f := &Fetcher{Dir: t.TempDir(), Log: t.Logf}
	res, err := f.Fetch(context.Background(), Request{Pin: pin})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != pin.SHA256 || res.Fallback {
		t.Fatalf("got %+v", res)
	}
	// Real apt-cache answers for the family lookup.
	newest, err := Newest(context.Background(), ExecRunner{}, Family{Prefix: "linux-image-6.1.0-", Suffix: "-cloud-amd64"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("newest cloud kernel known to apt: %s", newest)
}
