package ctr

import (
	"strings"
	"testing"

	"cairn.dev/cairn/runtime/network"
)

func TestParseRun(t *testing.T) {
	m, err := parseRun([]string{"--name", "web", "img:1", "--rm", "-p", "8080:80", "-p", "127.0.0.1:53:53/udp", "-e", "A=1", "--user", "app", "--read-only", "--", "sh", "-c", "exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "web" || m.Image != "img:1" || !m.Rm || !m.ReadOnly || m.User != "app" || m.Net != network.ModeBridge ||
		len(m.Ports) != 2 || m.Ports[1].Protocol != "udp" || m.Ports[1].HostIP.String() != "127.0.0.1" ||
		strings.Join(m.Cmd, " ") != "sh -c exit 3" || strings.Join(m.Env, ",") != "A=1" {
		t.Fatalf("%+v", m)
	}
	// Without "--" the command starts at the first argument after IMAGE.
	m, err = parseRun([]string{"-d", "img", "sh", "-c", "echo -n x"})
	if err != nil || !m.Detach || strings.Join(m.Cmd, "|") != "sh|-c|echo -n x" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{nil, "missing IMAGE"},
		{[]string{"--net", "weird", "img"}, "unknown network mode"},
		{[]string{"--net", "host", "-p", "1:2", "img"}, "needs --net bridge"},
		{[]string{"-p", "0:80", "img"}, "not a port number"},
		{[]string{"-p", "80", "img"}, "want [IP:]HOSTPORT"},
		{[]string{"-p", "x:1:2", "img"}, "invalid host IPv4"},
		{[]string{"-p", "1:2/sctp", "img"}, "tcp or udp"},
		{[]string{"--name", "../x", "img"}, "invalid container id"},
		{[]string{"-e", "=x", "img"}, "invalid environment"},
		{[]string{"-d", "-i", "img"}, "cannot be combined"},
	} {
		if _, err := parseRun(tc.args); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: err %v, want %q", tc.args, err, tc.err)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "A=1"}, []string{"A=2", "B=3"})
	if strings.Join(got, ",") != "PATH=/bin,A=2,B=3" {
		t.Fatal(got)
	}
}

func TestHostnameFor(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "a_b.c": "a-b-c", "abc123def": "abc123def", "___": "cairn", strings.Repeat("x", 100): strings.Repeat("x", 63)} {
		if got := hostnameFor(in); got != want {
			t.Errorf("hostnameFor(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParsePort(f *testing.F) {
	for _, s := range []string{"8080:80", "127.0.0.1:53:53/udp", "1:2/tcp", "::1:2", "65536:1", "01:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pm, err := ParsePort(s)
		if err != nil {
			return
		}
		if pm.HostPort == 0 || pm.ContainerPort == 0 || (pm.HostIP.IsValid() && !pm.HostIP.Is4()) {
			t.Fatalf("ParsePort(%q) = %+v", s, pm)
		}
	})
}

func FuzzParseRun(f *testing.F) {
	f.Add("--name\x00x\x00img\x00--rm\x00-p\x008080:80\x00--\x00sh")
	f.Add("img\x00-e\x00A=B\x00--user\x00nobody")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseRun(strings.Split(s, "\x00"))
		if err != nil {
			return
		}
		if m.Image == "" {
			t.Fatalf("no image from %q", s)
		}
		if len(m.Ports) > 0 && m.Net != network.ModeBridge {
			t.Fatal("ports without bridge")
		}
	})
}
