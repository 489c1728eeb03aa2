package ociruntime

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(*invocation) bool
		err   string
	}{
		{[]string{"--version"}, func(i *invocation) bool { return i.Cmd == "version" }, ""},
		{[]string{"-v"}, func(i *invocation) bool { return i.Cmd == "version" }, ""},
		{[]string{"exec", "-e", "A=1", "--env", "B=2", "--cwd", "/w", "-u", "1:2", "-d", "--pid-file", "p", "c1", "sh", "-c", "x -e y"}, func(i *invocation) bool {
			return i.ID == "c1" && strings.Join(i.Args, " ") == "sh -c x -e y" && strings.Join(i.Env, ",") == "A=1,B=2" &&
				i.Cwd == "/w" && i.User == "1:2" && i.Detach && i.PidFile == "p"
		}, ""},
		{[]string{"exec", "--process", "p.json", "c1"}, func(i *invocation) bool { return i.ProcessFile == "p.json" && i.ID == "c1" && len(i.Args) == 0 }, ""},
		{[]string{"exec", "c1"}, nil, "missing command"},
		{[]string{"exec"}, nil, "missing container-id"},
		{[]string{"exec", "-p", "f", "c1", "sh"}, nil, "exclude"},
		{[]string{"exec", "--cgroup", "sub", "c1", "sh"}, nil, "sub-cgroups"},
		{[]string{"exec", "--preserve-fds", "2", "c1", "sh"}, nil, "preserve-fds"},
		{nil, func(i *invocation) bool { return i.Cmd == "help" }, ""},
		{[]string{"--root", "/r", "--log", "/l", "--log-format", "json", "state", "x"}, func(i *invocation) bool {
			return i.Global.Root == "/r" && i.Global.Log == "/l" && i.Global.LogFormat == "json" && i.Cmd == "state" && i.ID == "x"
		}, ""},
		{[]string{"--root=/r", "--systemd-cgroup=false", "start", "x"}, func(i *invocation) bool { return i.Global.Root == "/r" && i.Cmd == "start" }, ""},
		{[]string{"create", "--bundle", "/b", "--pid-file", "/p", "--no-new-keyring", "id1"}, func(i *invocation) bool {
			return i.Bundle == "/b" && i.PidFile == "/p" && i.ID == "id1"
		}, ""},
		{[]string{"create", "-b", "/b", "id1"}, func(i *invocation) bool { return i.Bundle == "/b" }, ""},
		{[]string{"create", "id1"}, func(i *invocation) bool { return i.Bundle == "." }, ""},
		{[]string{"run", "-d", "--bundle", "/b", "id1"}, func(i *invocation) bool { return i.Detach && i.Cmd == "run" }, ""},
		{[]string{"kill", "id1"}, func(i *invocation) bool { return i.Signal == syscall.SIGTERM && !i.All }, ""},
		{[]string{"kill", "--all", "id1", "KILL"}, func(i *invocation) bool { return i.Signal == syscall.SIGKILL && i.All }, ""},
		{[]string{"kill", "id1", "9"}, func(i *invocation) bool { return i.Signal == syscall.SIGKILL }, ""},
		{[]string{"delete", "--force", "id1"}, func(i *invocation) bool { return i.Force }, ""},
		{[]string{"delete", "-f", "id1"}, func(i *invocation) bool { return i.Force }, ""},
		{[]string{"list", "--format", "json"}, func(i *invocation) bool { return i.Format == "json" }, ""},
		{[]string{"list", "-q"}, func(i *invocation) bool { return i.Quiet && i.Format == "table" }, ""},
		{[]string{"spec", "--bundle", "/b"}, func(i *invocation) bool { return i.Bundle == "/b" }, ""},
		{[]string{"--systemd-cgroup", "create", "x"}, nil, "systemd cgroup driver is not supported"},
		{[]string{"--log-format", "xml", "state", "x"}, nil, "invalid --log-format"},
		{[]string{"--rootless", "true", "state", "x"}, nil, "rootless mode is not supported"},
		{[]string{"pause", "x"}, nil, "unsupported command"},
		{[]string{"kill", "x", "BOGUS"}, nil, "unknown signal"},
		{[]string{"kill", "x", "TERM", "extra"}, nil, "unexpected arguments"},
		{[]string{"state"}, nil, "missing container-id"},
		{[]string{"list", "--format", "yaml"}, nil, "invalid --format"},
		{[]string{"create", "--preserve-fds", "-1", "x"}, nil, "must not be negative"},
		{[]string{"create", "--bogus", "x"}, nil, "flag provided but not defined"},
	} {
		inv, err := parseArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !tc.check(inv) {
			t.Errorf("%q: unexpected %+v", tc.args, inv)
		}
	}
}

const minimalConfig = `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"},"linux":{}}`

func TestParseConfig(t *testing.T) {
	bundle := "/bundles/b"
	spec, err := parseConfig([]byte(minimalConfig), bundle)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Root.Path != filepath.Join(bundle, "rootfs") {
		t.Fatalf("root.path = %q", spec.Root.Path)
	}
	for _, tc := range []struct{ name, cfg, err string }{
		{"not json", `{`, "parse config.json"},
		{"trailing", minimalConfig + `{}`, "trailing data"},
		{"version", strings.Replace(minimalConfig, "1.0.2", "2.0.0", 1), "unsupported ociVersion"},
		{"no root", `{"ociVersion":"1.0.2","process":{"args":["sh"]},"linux":{}}`, "root.path is required"},
		{"escape", strings.Replace(minimalConfig, `"rootfs"`, `"../../etc"`, 1), "escapes the bundle"},
		{"escape2", strings.Replace(minimalConfig, `"rootfs"`, `"a/../../x"`, 1), "escapes the bundle"},
		{"dotdot", strings.Replace(minimalConfig, `"rootfs"`, `".."`, 1), "escapes the bundle"},
		{"nul", strings.Replace(minimalConfig, `"rootfs"`, `"a\u0000b"`, 1), "NUL"},
		{"no process", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{}}`, "process is required"},
		{"no args", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":[]},"linux":{}}`, "process.args"},
		{"empty arg0", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":[""]},"linux":{}}`, "process.args"},
		{"relative cwd", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"tmp"},"linux":{}}`, "not absolute"},
		{"no linux", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"]}}`, "linux is required"},
		{"relative mount", `{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"]},"linux":{},"mounts":[{"destination":"tmp","type":"tmpfs"}]}`, "not absolute"},
		{"huge", `{"ociVersion":"1.0.2","x":"` + strings.Repeat("a", maxConfigBytes) + `"}`, "larger than"},
	} {
		if _, err := parseConfig([]byte(tc.cfg), bundle); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
		}
	}
	// Absolute rootfs outside the bundle is allowed (podman), relative bind
	// sources resolve against the bundle.
	spec, err = parseConfig([]byte(`{"ociVersion":"1.0.2","root":{"path":"/var/lib/x/merged"},"process":{"args":["sh"]},"linux":{},
		"mounts":[{"destination":"/data","type":"bind","source":"data","options":["rbind"]}]}`), bundle)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Root.Path != "/var/lib/x/merged" || spec.Mounts[0].Source != "/bundles/b/data" {
		t.Fatalf("got root %q mount source %q", spec.Root.Path, spec.Mounts[0].Source)
	}
}

func TestFormatLog(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var got struct{ Level, Msg, Time string }
	if err := json.Unmarshal(formatLog("json", "error", `bad "thing"`, now), &got); err != nil {
		t.Fatal(err)
	}
	if got.Level != "error" || got.Msg != `bad "thing"` || got.Time != "2026-01-02T03:04:05Z" {
		t.Fatalf("json log: %+v", got)
	}
	if s := string(formatLog("text", "error", `bad "thing"`, now)); s != `time="2026-01-02T03:04:05Z" level=error msg="bad \"thing\""`+"\n" {
		t.Fatalf("text log: %q", s)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(minimalConfig))
	f.Add([]byte(`{"ociVersion":"1.0.2","root":{"path":"../x"},"process":{"args":["sh"]},"linux":{}}`))
	f.Add([]byte(`{"ociVersion":"1.0.2","root":{"path":"/abs"},"process":{"args":["sh"]},"linux":{},"mounts":[{"destination":"/a","source":"../../../etc","options":["bind"]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, err := parseConfig(b, "/bundle")
		if err != nil {
			return
		}
		if spec.Process == nil || len(spec.Process.Args) == 0 || spec.Linux == nil {
			t.Fatal("accepted an incomplete spec")
		}
		if !filepath.IsAbs(spec.Root.Path) {
			t.Fatalf("root.path %q not made absolute", spec.Root.Path)
		}
		var raw struct {
			Root struct{ Path string } `json:"root"`
		}
		if json.Unmarshal(b, &raw) == nil && !filepath.IsAbs(raw.Root.Path) {
			if rel, err := filepath.Rel("/bundle", spec.Root.Path); err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("relative root.path %q escaped to %q", raw.Root.Path, spec.Root.Path)
			}
		}
	})
}

func FuzzParseArgs(f *testing.F) {
	f.Add("create\x00--bundle\x00/b\x00--pid-file\x00p\x00id")
	f.Add("kill\x00--all\x00id\x00SIGRTMIN+2")
	f.Add("--root\x00/r\x00--log-format\x00json\x00list\x00-f\x00json")
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := parseArgs(strings.Split(s, "\x00"))
		if err != nil {
			return
		}
		if inv.Global.Root == "" || inv.Global.SystemdCgroup {
			t.Fatalf("bad globals %+v", inv.Global)
		}
		if inv.Cmd == "kill" && (inv.Signal < 1 || inv.Signal > 64) {
			t.Fatalf("bad signal %d", inv.Signal)
		}
	})
}

func TestParseProcess(t *testing.T) {
	for _, tc := range []struct {
		in, err string
	}{
		{`{"args":["sh","-c","true"],"env":["A=1"],"cwd":"/"}`, ""},
		{`{"args":[]}`, "p.json: field args"},
		{`{"args":["sh"],"cwd":"rel"}`, "p.json: field cwd"},
		{`{"args":["sh"],"env":["NOEQUALS"]}`, "p.json: field env[0]"},
		{`{"args":"sh"}`, "p.json: field args"},
		{`{"args":["sh"],`, "p.json"},
		{`{"args":["sh"]}}`, "p.json: byte"},
		{strings.Repeat(" ", 1<<20+1), "larger than"},
	} {
		p, err := parseProcess([]byte(tc.in), "p.json")
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%.40q: %v, want %q", tc.in, err, tc.err)
		}
		if err == nil && len(p.Args) == 0 {
			t.Errorf("%q: accepted without args", tc.in)
		}
	}
}

func FuzzParseProcess(f *testing.F) {
	f.Add([]byte(`{"args":["sh","-c","true"],"env":["A=1"],"cwd":"/","user":{"uid":1,"gid":2}}`))
	f.Add([]byte(`{"args":["x"],"terminal":true,"consoleSize":{"height":1,"width":2},"capabilities":{"bounding":["CAP_KILL"]}}`))
	f.Add([]byte(`{"args":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProcess(b, "p.json")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "p.json: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(p.Args) == 0 || (p.Cwd != "" && !filepath.IsAbs(p.Cwd)) {
			t.Fatalf("accepted %+v", p)
		}
	})
}
