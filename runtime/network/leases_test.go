package network

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func validLeaseJSON() string {
	return `{"version":1,"subnet":"10.88.0.0/16","last":"10.88.0.3","leases":[
{"id":"a","ip":"10.88.0.2","veth":"cn0a580002","ports":[{"proto":"tcp","hostPort":8080,"containerPort":80}]},
{"id":"b.c_d-1","ip":"10.88.0.3","veth":"cn0a580003","ports":[{"proto":"udp","hostIP":"127.0.0.1","hostPort":53,"containerPort":53}]}]}`
}

func TestParseLeases(t *testing.T) {
	lf, err := parseLeases([]byte(validLeaseJSON()))
	if err != nil {
		t.Fatal(err)
	}
	if len(lf.Leases) != 2 || lf.Leases[1].Ports[0].HostIP != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("parsed %+v", lf)
	}
	rep := func(old, new string) string { return strings.Replace(validLeaseJSON(), old, new, 1) }
	bad := map[string]string{
		"empty":             ``,
		"not json":          `version 1`,
		"trailing":          validLeaseJSON() + `{}`,
		"unknown field":     rep(`"version":1`, `"version":1,"x":2`),
		"version":           rep(`"version":1`, `"version":2`),
		"subnet v6":         rep(`10.88.0.0/16`, `fd00::/64`),
		"subnet host bits":  rep(`10.88.0.0/16`, `10.88.0.1/16`),
		"subnet too small":  rep(`10.88.0.0/16`, `10.88.0.0/31`),
		"ip outside":        rep(`"ip":"10.88.0.2"`, `"ip":"10.89.0.2"`),
		"ip is gateway":     rep(`"ip":"10.88.0.2","veth":"cn0a580002"`, `"ip":"10.88.0.1","veth":"cn0a580001"`),
		"ip is network":     rep(`"ip":"10.88.0.2","veth":"cn0a580002"`, `"ip":"10.88.0.0","veth":"cn0a580000"`),
		"ip is broadcast":   rep(`"ip":"10.88.0.2","veth":"cn0a580002"`, `"ip":"10.88.255.255","veth":"cn0a58ffff"`),
		"ip 4in6":           rep(`"ip":"10.88.0.2"`, `"ip":"::ffff:10.88.0.2"`),
		"dup ip":            rep(`"ip":"10.88.0.3","veth":"cn0a580003"`, `"ip":"10.88.0.2","veth":"cn0a580002"`),
		"dup id":            rep(`"id":"b.c_d-1"`, `"id":"a"`),
		"bad id":            rep(`"id":"a"`, `"id":"../x"`),
		"empty id":          rep(`"id":"a"`, `"id":""`),
		"veth mismatch":     rep(`cn0a580002`, `cn0a580009`),
		"veth injection":    rep(`cn0a580002`, `eth0`),
		"bad proto":         rep(`"proto":"tcp"`, `"proto":"sctp"`),
		"port zero":         rep(`"hostPort":8080`, `"hostPort":0`),
		"port overflow":     rep(`"hostPort":8080`, `"hostPort":70000`),
		"dup host port":     rep(`"proto":"udp","hostIP":"127.0.0.1","hostPort":53`, `"proto":"tcp","hostPort":8080`),
		"host ip v6":        rep(`"hostIP":"127.0.0.1"`, `"hostIP":"::1"`),
		"host ip any":       rep(`"hostIP":"127.0.0.1"`, `"hostIP":"0.0.0.0"`),
		"last outside":      rep(`"last":"10.88.0.3"`, `"last":"10.0.0.3"`),
		"leases not a list": `{"version":1,"subnet":"10.88.0.0/16","leases":{}}`,
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := parseLeases([]byte(in)); err == nil {
				t.Fatalf("accepted %s", in)
			}
		})
	}
	if _, err := parseLeases(make([]byte, maxLeaseFileSize+1)); err == nil {
		t.Fatal("accepted oversized file")
	}
}

func TestAllocate(t *testing.T) {
	tests := []struct {
		subnet string
		n      int
		want   []string
		full   bool
	}{
		{"10.88.0.0/30", 1, []string{"10.88.0.2"}, true},
		{"10.88.0.0/29", 5, []string{"10.88.0.2", "10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"}, true},
		{"10.88.0.0/16", 3, []string{"10.88.0.2", "10.88.0.3", "10.88.0.4"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			lf := &leaseFile{Version: 1, Subnet: netip.MustParsePrefix(tt.subnet)}
			for i := 0; i < tt.n; i++ {
				a, err := lf.allocate()
				if err != nil {
					t.Fatal(err)
				}
				if a.String() != tt.want[i] {
					t.Fatalf("allocation %d = %s, want %s", i, a, tt.want[i])
				}
				lf.Leases = append(lf.Leases, lease{ID: string(rune('a' + i)), IP: a, Veth: vethName(a)})
			}
			if err := lf.validate(); err != nil {
				t.Fatal(err)
			}
			_, err := lf.allocate()
			if tt.full != (err != nil) {
				t.Fatalf("allocate on %d leases: err=%v, want full=%v", tt.n, err, tt.full)
			}
		})
	}
	// Released addresses are not reused at once: allocation continues after Last and wraps.
	lf := &leaseFile{Version: 1, Subnet: netip.MustParsePrefix("10.88.0.0/29")}
	a1, _ := lf.allocate()
	lf.Leases = append(lf.Leases, lease{ID: "x", IP: a1, Veth: vethName(a1)})
	lf.Leases = nil // released
	a2, _ := lf.allocate()
	if a2 == a1 {
		t.Fatalf("released %s handed out again at once", a1)
	}
	lf.Last = netip.MustParseAddr("10.88.0.6")
	if a, _ := lf.allocate(); a.String() != "10.88.0.2" {
		t.Fatalf("no wrap-around: got %s", a)
	}
}

func TestValidateID(t *testing.T) {
	for _, id := range []string{"a", "abc-DEF_0.9", strings.Repeat("x", 128)} {
		if err := ValidateID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", ".a", "-a", "a/b", "a b", "a\n", strings.Repeat("x", 129), "é"} {
		if err := ValidateID(id); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
}

func TestValidatePorts(t *testing.T) {
	ok := [][]PortMapping{
		nil,
		{{HostPort: 1, ContainerPort: 65535}},
		{{Protocol: "tcp", HostPort: 80, ContainerPort: 80}, {Protocol: "udp", HostPort: 80, ContainerPort: 80}},
		{{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: 80, ContainerPort: 80}},
	}
	for _, p := range ok {
		if err := validatePorts(p); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
	bad := [][]PortMapping{
		{{HostPort: 0, ContainerPort: 80}},
		{{HostPort: 80, ContainerPort: 0}},
		{{Protocol: "TCP", HostPort: 80, ContainerPort: 80}},
		{{HostPort: 80, ContainerPort: 80}, {Protocol: "tcp", HostPort: 80, ContainerPort: 81}},
		{{HostIP: netip.MustParseAddr("::1"), HostPort: 80, ContainerPort: 80}},
		{{HostIP: netip.MustParseAddr("0.0.0.0"), HostPort: 80, ContainerPort: 80}},
	}
	for _, p := range bad {
		if err := validatePorts(p); err == nil {
			t.Errorf("%v accepted", p)
		}
	}
}

func TestVethName(t *testing.T) {
	a := netip.MustParseAddr("10.88.1.2")
	if got := vethName(a); got != "cn0a580102" || !isOurVeth(got) {
		t.Fatalf("vethName = %q", got)
	}
	for _, n := range []string{"eth0", "cn0a58010", "cn0a58010g", "cairn0"} {
		if isOurVeth(n) {
			t.Errorf("isOurVeth(%q)", n)
		}
	}
}

func TestLeaseStore(t *testing.T) {
	dir := t.TempDir()
	s := &leaseStore{dir: dir, subnet: DefaultSubnet}
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := "c" + string(rune('a'+i))
			err := s.withLock(ctx, func(lf *leaseFile) (bool, error) {
				a, err := lf.allocate()
				if err != nil {
					return false, err
				}
				lf.Leases = append(lf.Leases, lease{ID: id, IP: a, Veth: vethName(a)})
				mu.Lock()
				defer mu.Unlock()
				if other, dup := got[a]; dup {
					t.Errorf("%s handed to %s and %s", a, other, id)
				}
				got[a] = id
				return true, nil
			})
			if err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	// A fresh store on the same dir sees them all.
	s2 := &leaseStore{dir: dir, subnet: DefaultSubnet}
	if err := s2.withLock(ctx, func(lf *leaseFile) (bool, error) {
		if len(lf.Leases) != 20 {
			t.Errorf("reloaded %d leases, want 20", len(lf.Leases))
		}
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	// Another subnet while leases exist is refused.
	s3 := &leaseStore{dir: dir, subnet: netip.MustParsePrefix("10.99.0.0/16")}
	if err := s3.withLock(ctx, func(*leaseFile) (bool, error) { return false, nil }); err == nil {
		t.Fatal("subnet change with live leases accepted")
	}
	// A corrupt file is an error, not silently reset.
	if err := os.WriteFile(filepath.Join(dir, "leases.json"), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s2.withLock(ctx, func(*leaseFile) (bool, error) { return false, nil }); err == nil {
		t.Fatal("corrupt lease file accepted")
	}
	// Cancellation while the lock is held elsewhere.
	f, err := os.OpenFile(s.lockPath(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flockContext(ctx, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.withLock(cctx, func(*leaseFile) (bool, error) { return false, nil }); err == nil {
		t.Fatal("withLock ignored cancelled context while locked")
	}
}

func FuzzParseLeases(f *testing.F) {
	f.Add([]byte(validLeaseJSON()))
	f.Add([]byte(`{"version":1,"subnet":"10.88.0.0/16","leases":[]}`))
	f.Add([]byte(`{"version":1,"subnet":"192.168.0.0/30","last":"192.168.0.2","leases":[{"id":"x","ip":"192.168.0.2","veth":"cnc0a80002"}]}`))
	f.Add([]byte(`{"version":1,"subnet":"10.0.0.0/8","leases":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		lf, err := parseLeases(data)
		if err != nil {
			return
		}
		if err := lf.validate(); err != nil {
			t.Fatalf("parsed but invalid: %v", err)
		}
		out, err := lf.marshal()
		if err != nil {
			t.Fatal(err)
		}
		lf2, err := parseLeases(out)
		if err != nil {
			t.Fatalf("round trip: %v\n%s", err, out)
		}
		if len(lf.Leases) == 0 {
			lf.Leases, lf2.Leases = nil, nil
		}
		for _, l := range [][]lease{lf.Leases, lf2.Leases} {
			for i := range l {
				if len(l[i].Ports) == 0 {
					l[i].Ports = nil
				}
			}
		}
		if !reflect.DeepEqual(lf, lf2) {
			t.Fatalf("round trip changed state:\n%+v\n%+v", lf, lf2)
		}
		// Allocation on any accepted state yields a usable, unused address or an error.
		if a, err := lf.allocate(); err == nil {
			if !usable(lf.Subnet, a) {
				t.Fatalf("allocated unusable %s in %s", a, lf.Subnet)
			}
			for _, l := range lf.Leases {
				if l.IP == a {
					t.Fatalf("allocated %s twice", a)
				}
			}
		}
	})
}
