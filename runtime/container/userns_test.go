package container

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestValidateUserNS(t *testing.T) {
	m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	userns := []specs.LinuxNamespace{{Type: specs.UserNamespace}, {Type: specs.MountNamespace}}
	for _, tc := range []struct {
		name       string
		ns         []specs.LinuxNamespace
		uidm, gidm []specs.LinuxIDMapping
		err        string
	}{
		{"none", nil, nil, nil, ""},
		{"ok", userns, m, m, ""},
		{"maps without namespace", nil, m, m, "need a user namespace"},
		{"namespace without maps", userns, nil, m, "needs linux.uidMappings"},
		{"join by path", []specs.LinuxNamespace{{Type: specs.UserNamespace, Path: "/proc/1/ns/user"}}, m, m, "not supported"},
		{"root unmapped", userns, []specs.LinuxIDMapping{{ContainerID: 1, HostID: 100000, Size: 10}}, m, "uid 0"},
		{"zero size", userns, m, []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1, Size: 0}}, "gidMappings[0]"},
		{"overflow", userns, []specs.LinuxIDMapping{{ContainerID: 0, HostID: 4294967295, Size: 2}}, m, "uidMappings[0]"},
	} {
		spec := &specs.Spec{Linux: &specs.Linux{Namespaces: tc.ns, UIDMappings: tc.uidm, GIDMappings: tc.gidm}}
		err := validateUserNS(spec)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	if id, ok := hostID(m, 1000); !ok || id != 101000 {
		t.Errorf("hostID(1000) = %d %v", id, ok)
	}
	if _, ok := hostID(m, 65536); ok {
		t.Error("hostID beyond the map")
	}
}

// chownTree shifts every file of root by off (lchown, as a mapping-aware
// snapshot would).
func chownTree(t *testing.T, root string, off int) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		return unix.Lchown(p, int(st.Uid)+off, int(st.Gid)+off)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// searchable lets everyone search the directories above p (t.TempDir
// makes them 0700): the mapped root must reach the rootfs and the mount
// sources.
func searchable(t *testing.T, p string) {
	t.Helper()
	for d := filepath.Dir(p); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUserNamespace(t *testing.T) {
	h := newHarness(t)
	root := makeRootfs(t)
	userSpec := func(args ...string) *specs.Spec {
		spec := DefaultSpec(root, args...)
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = m, m
		return spec
	}
	// The rootfs still belongs to the host's root: refused.
	err := h.rt.Create(context.Background(), newID(t), userSpec("true"), CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "chown the rootfs") {
		t.Fatalf("rootfs of the host's root: %v", err)
	}
	chownTree(t, root, 200000)
	searchable(t, root)

	exit, out, stderr := h.run(userSpec("sh", "-c", `id -u; cat /proc/self/uid_map; touch /tmp/made-by-root; grep CapEff /proc/self/status; echo x > /dev/null && echo devnull-ok`))
	fields := strings.Fields(out)
	if exit.Code != 0 || len(fields) < 7 || fields[0] != "0" || strings.Join(fields[1:4], " ") != "0 200000 65536" ||
		fields[5] != "00000000a00425fb" || fields[6] != "devnull-ok" {
		t.Fatalf("exit %+v out %q stderr %q", exit, out, stderr)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "tmp/made-by-root"), &st); err != nil || st.Uid != 200000 {
		t.Fatalf("file made by the container's root: uid %d (%v), want host uid 200000", st.Uid, err)
	}
	// A user of the image maps too, and the container's root is not the
	// host's: it cannot write a host file that the bind mount exposes.
	hostFile := filepath.Join(t.TempDir(), "host-owned")
	searchable(t, hostFile)
	if err := os.WriteFile(hostFile, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := userSpec("sh", "-c", `echo changed > /mnt/host-owned || echo denied; id -u`)
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/mnt/host-owned", Type: "bind", Source: hostFile, Options: []string{"bind"}})
	exit, out, _ = h.run(spec)
	if b, _ := os.ReadFile(hostFile); exit.Code != 0 || !strings.HasPrefix(out, "denied") || string(b) != "keep" {
		t.Fatalf("host file from a user namespace: exit %+v out %q content %q", exit, out, b)
	}
	spec = userSpec("sh", "-c", `id -u; touch /home/app/x`)
	spec.Process.User.Username = "app"
	if exit, out, stderr := h.run(spec); exit.Code != 0 || out != "1000\n" {
		t.Fatalf("user app: exit %+v out %q stderr %q", exit, out, stderr)
	}
	if err := unix.Stat(filepath.Join(root, "home/app/x"), &st); err != nil || st.Uid != 201000 {
		t.Fatalf("file made by app: uid %d (%v), want 201000", st.Uid, err)
	}
}
