package container

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/runtime/seccomp"
)

func writeRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(c, "symlink:") {
			if err := os.Symlink(strings.TrimPrefix(c, "symlink:"), full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const testPasswd = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nbad:x:notanumber:1:::\napp:x:1000:1000:app:/home/app:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n"
const testGroup = "root:x:0:\napp:x:1000:\nextra:x:2000:app,web\nother:x:3000: app \nweb:x:33:\n"

func TestResolveUser(t *testing.T) {
	root := writeRootfs(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup})
	for _, tc := range []struct {
		in     string
		uid    uint32
		gid    uint32
		groups []uint32
		home   string
		err    bool
	}{
		{"", 0, 0, nil, "/root", false},
		{"root", 0, 0, nil, "/root", false},
		{"app", 1000, 1000, []uint32{2000, 3000}, "/home/app", false},
		{"1000", 1000, 1000, []uint32{2000, 3000}, "/home/app", false},
		{"app:extra", 1000, 2000, []uint32{3000}, "/home/app", false},
		{"app:5000", 1000, 5000, []uint32{2000, 3000}, "/home/app", false},
		{"4242", 4242, 0, nil, "/", false},
		{"4242:4243", 4242, 4243, nil, "/", false},
		{"web", 33, 33, []uint32{2000}, "/var/www", false},
		{"ghost", 0, 0, nil, "", true},
		{"app:ghosts", 0, 0, nil, "", true},
		{":1000", 0, 0, nil, "", true},
		{"4294967295", 0, 0, nil, "", true},
		{"-1", 0, 0, nil, "", true},
	} {
		u, home, err := ResolveUser(root, tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("%q: want error, got %+v", tc.in, u)
			}
			continue
		}
		if err != nil || u.UID != tc.uid || u.GID != tc.gid || !slices.Equal(u.AdditionalGids, tc.groups) || home != tc.home {
			t.Errorf("%q: got %+v home %q err %v; want uid %d gid %d groups %v home %q", tc.in, u, home, err, tc.uid, tc.gid, tc.groups, tc.home)
		}
	}
}

func TestResolveUserHostileRootfs(t *testing.T) {
	// /etc/passwd points at the host's files: resolution stays inside the
	// rootfs (where the target is missing), so host names never resolve.
	hostile := writeRootfs(t, map[string]string{
		"etc/passwd": "symlink:/../../../../../../../etc/passwd",
		"etc/group":  "symlink:/etc/missing",
	})
	u, _, err := ResolveUser(hostile, "0")
	if err == nil && u.UID != 0 {
		t.Fatalf("numeric user in hostile rootfs: %+v", u)
	}
	if _, _, err := ResolveUser(hostile, "daemon"); err == nil {
		t.Fatal("resolved a name from the host's /etc/passwd")
	}
	// A symlink loop is an error, not a hang.
	loop := writeRootfs(t, map[string]string{"etc/passwd": "symlink:passwd", "etc/group": ""})
	if _, _, err := ResolveUser(loop, "root"); err == nil {
		t.Fatal("symlink loop accepted")
	}
	// A FIFO as /etc/passwd must not hang.
	fifoRoot := writeRootfs(t, map[string]string{"etc/group": ""})
	if err := unix.Mkfifo(filepath.Join(fifoRoot, "etc/passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ResolveUser(fifoRoot, "root"); err == nil || !strings.Contains(err.Error(), "regular") {
		t.Fatalf("fifo passwd: %v", err)
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "web-1", "A.b_c", strings.Repeat("x", 128)} {
		if ValidID(id) != nil {
			t.Errorf("%q rejected", id)
		}
	}
	for _, id := range []string{"", ".", "..", "../x", "a/b", "-a", ".hidden", "a b", strings.Repeat("x", 129), "a\x00"} {
		if ValidID(id) == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

// TestValidIDMatchesRegexp checks the hand-written ID check against the
// regular expression it replaced, over every string of up to 3 bytes from
// an alphabet of interesting bytes, and around the length limit.
func TestValidIDMatchesRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	alphabet := []byte("aZ09_.-/ \x00\xff:")
	var ids []string
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		ids = append(ids, string(prefix))
		if len(prefix) == 3 {
			return
		}
		for _, c := range alphabet {
			gen(append(append([]byte(nil), prefix...), c))
		}
	}
	gen(nil)
	ids = append(ids, strings.Repeat("a", 127), strings.Repeat("a", 128), strings.Repeat("a", 129), "a"+strings.Repeat("-", 127))
	for _, id := range ids {
		if got, want := ValidID(id) == nil, re.MatchString(id); got != want {
			t.Errorf("ValidID(%q) ok = %v, regexp says %v", id, got, want)
		}
	}
}

func TestParseMountOptions(t *testing.T) {
	pm := parseMountOptions(specs.Mount{Type: "tmpfs", Options: []string{"nosuid", "ro", "rw", "noexec", "mode=755", "size=1m", "rprivate"}})
	if pm.flags != unix.MS_NOSUID|unix.MS_NOEXEC || pm.data != "mode=755,size=1m" || pm.bind || len(pm.propagation) != 1 {
		t.Fatalf("tmpfs: %+v", pm)
	}
	pm = parseMountOptions(specs.Mount{Type: "none", Options: []string{"rbind", "ro"}})
	if !pm.bind || pm.flags != unix.MS_BIND|unix.MS_REC|unix.MS_RDONLY {
		t.Fatalf("rbind: %+v", pm)
	}
}

func TestDefaultSpecCompiles(t *testing.T) {
	spec := DefaultSpec("/rootfs", "/bin/true")
	if err := validateSpec(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := seccomp.Compile(spec.Linux.Seccomp); err != nil {
		t.Fatal(err)
	}
	bad := DefaultSpec("/rootfs", "/bin/true")
	bad.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}}
	if err := validateSpec(bad); err == nil || !strings.Contains(err.Error(), "need a user namespace") {
		t.Fatalf("id mappings without a user namespace: %v", err)
	}
}

func TestSignalByName(t *testing.T) {
	for in, want := range map[string]int{"SIGTERM": 15, "TERM": 15, "SIGQUIT": 3, "SIGRTMIN": 34, "SIGRTMIN+3": 37, "9": 9, "34": 34, "bogus": 0, "": 0, "65": 0} {
		if got := signalByName(in); got != want {
			t.Errorf("%s = %d want %d", in, got, want)
		}
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte(testPasswd))
	f.Fuzz(func(t *testing.T, b []byte) {
		ents, err := ParsePasswd(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, e := range ents {
			if e.Name == "" || e.UID == 0xffffffff || e.GID == 0xffffffff {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzParseGroup(f *testing.F) {
	f.Add([]byte(testGroup))
	f.Fuzz(func(t *testing.T, b []byte) {
		ents, err := ParseGroup(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		for _, e := range ents {
			if e.Name == "" || slices.Contains(e.Members, "") {
				t.Fatalf("bad entry %+v", e)
			}
		}
	})
}

func FuzzResolveUser(f *testing.F) {
	root := ""
	f.Add("app:extra")
	f.Add("1000:1000")
	f.Fuzz(func(t *testing.T, user string) {
		if root == "" {
			root = writeRootfs(t, map[string]string{"etc/passwd": testPasswd, "etc/group": testGroup})
		}
		u, _, err := ResolveUser(root, user)
		if err == nil && (u.UID == 0xffffffff || u.GID == 0xffffffff) {
			t.Fatalf("%q resolved to invalid id %+v", user, u)
		}
	})
}

func FuzzValidID(f *testing.F) {
	f.Add("web-1")
	f.Fuzz(func(t *testing.T, id string) {
		if ValidID(id) == nil && (strings.ContainsAny(id, "/\x00") || id == "." || id == "..") {
			t.Fatalf("%q accepted", id)
		}
	})
}
