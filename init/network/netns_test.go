//go:build linux

package network

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"cairn.dev/cairn/internal/testhost"
)

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI (Debian dnsmasq-base): %v", name, err)
		}
		t.Skipf("%s not installed (Debian dnsmasq-base): %v", name, err)
	}
	return p
}

// newNS creates a network namespace, kept alive by its fd, without moving
// the test into it.
func newNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	err := inNetNS(nil, func() error {
		c := make(chan error, 1)
		go func() {
			goruntime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				goruntime.UnlockOSThread()
				c <- err
				return
			}
			defer orig.Close()
			if h, err = netns.New(); err != nil {
				goruntime.UnlockOSThread()
				c <- err
				return
			}
			if err := netns.Set(orig); err != nil {
				c <- fmt.Errorf("switch back: %w", err) // the thread stays locked and dies
				return
			}
			goruntime.UnlockOSThread()
			c <- nil
		}()
		return <-c
	})
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func handleAt(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := newHandle(&ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines collects log lines and lets a test wait for one.
type lines struct {
	t  *testing.T
	mu sync.Mutex
	l  []string
}

func (l *lines) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.l = append(l.l, s)
	l.mu.Unlock()
	l.t.Logf("%s network: %s", time.Now().Format("05.000"), s)
}

func (l *lines) wait(substr string, timeout time.Duration) string {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, s := range l.l {
			if strings.Contains(s, substr) {
				l.mu.Unlock()
				return s
			}
		}
		l.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Fatalf("no log line with %q after %v", substr, timeout)
	return ""
}

// TestDHCPNetns runs the manager in a network namespace of its own, joined by
// a veth pair to a second namespace where dnsmasq serves DHCP (T1 3 s) and a
// tiny SNTP responder answers. It checks the address, default route, DNS,
// search domain, NTP option, host name, hosts file, online signal, a
// renewal, an NTP query over the path, and the release at the end.
func TestDHCPNetns(t *testing.T) {
	testhost.Root(t)
	dnsmasq := requireTool(t, "dnsmasq")
	dir := t.TempDir()
	cns, sns := newNS(t), newNS(t)
	ch, sh := handleAt(t, cns), handleAt(t, sns)

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "srv0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(cns))}
	if err := sh.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	srv, err := sh.LinkByName("srv0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.AddrAdd(srv, &netlink.Addr{IPNet: toIPNet(pfx("10.99.0.1/24"))}); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"lo", "srv0"} {
		link, err := sh.LinkByName(l)
		if err == nil {
			err = sh.LinkSetUp(link)
		}
		if err != nil {
			t.Fatalf("server %s up: %v", l, err)
		}
	}
	eth0, err := ch.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	clientMAC := eth0.Attrs().HardwareAddr.String()

	// dnsmasq, forked from a thread inside the server namespace.
	var dlog syncBuffer
	cmd := exec.Command(dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-ping", "--port=0", "--log-dhcp", "--log-facility=-",
		"--user=root", "--group=root", "--pid-file=", "--interface=srv0", "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--dhcp-range=10.99.0.50,10.99.0.60,255.255.255.0,2m",
		"--dhcp-host="+clientMAC+",10.99.0.55,node-1",
		"--dhcp-option=option:router,10.99.0.1",
		"--dhcp-option=option:dns-server,10.99.0.1",
		"--dhcp-option=option:ntp-server,10.99.0.1",
		"--dhcp-option=option:domain-search,cairn.test",
		"--dhcp-option=option:T1,3", "--dhcp-option=option:T2,6")
	cmd.Stdout, cmd.Stderr = &dlog, &dlog
	if err := inNetNS(&sns, cmd.Start); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq log:\n%s", dlog.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(dlog.String(), "DHCP, IP range"); {
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq did not start:\n%s", dlog.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// SNTP responder on the server side, 90 s ahead.
	var sntp string
	if err := inNetNS(&sns, func() error { sntp = sntpServerAt(t, "10.99.0.1:123", 90*time.Second); return nil }); err != nil {
		t.Fatal(err)
	}

	log := &lines{t: t}
	var hostMu sync.Mutex
	var names []string
	m, err := New(Options{
		Config:      &Config{Interfaces: []Interface{{Name: "eth0", DHCP: true}}, HostnameFromDHCP: true},
		NetNS:       &cns,
		ResolvConf:  filepath.Join(dir, "resolv.conf"),
		Hosts:       filepath.Join(dir, "hosts"),
		Hostname:    func() string { return "node-1" },
		SetHostname: func(n string) error { hostMu.Lock(); names = append(names, n); hostMu.Unlock(); return nil },
		Logf:        log.logf,
		DHCPTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- m.Run(ctx) }()

	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := m.WaitOnline(wctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("online after %v", time.Since(start).Round(time.Millisecond))
	line := log.wait("eth0 10.99.0.55/24", 5*time.Second)
	if want := "eth0 10.99.0.55/24 via 10.99.0.1 dns 10.99.0.1 ntp 10.99.0.1 search cairn.test (lease 2m)"; line != want {
		t.Errorf("lease line %q, want %q", line, want)
	}

	// Applied in the client namespace.
	eth0, _ = ch.LinkByName("eth0")
	as, err := ch.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(as) != 1 || as[0].IPNet.String() != "10.99.0.55/24" || as[0].ValidLft <= 0 || as[0].ValidLft > 120 {
		t.Errorf("eth0 addresses %v (%v), want 10.99.0.55/24 with a lifetime of at most 120 s", as, err)
	}
	routes, err := ch.RouteList(eth0, netlink.FAMILY_V4)
	var def *netlink.Route
	for i, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			def = &routes[i]
		}
	}
	if err != nil || def == nil || !def.Gw.Equal(net.ParseIP("10.99.0.1")) || def.Protocol != protoDHCP {
		t.Errorf("routes %v (%v): want a DHCP default route via 10.99.0.1", routes, err)
	}
	if lo, err := ch.LinkByName("lo"); err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo not up in the client namespace: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "resolv.conf")); string(b) != "# written by cairn\nnameserver 10.99.0.1\nsearch cairn.test\n" {
		t.Errorf("resolv.conf:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hosts")); !strings.Contains(string(b), "10.99.0.55\tnode-1\n") {
		t.Errorf("hosts:\n%s", b)
	}
	if got := m.NTPServers(); !slices.Equal(got, []string{"10.99.0.1"}) {
		t.Errorf("NTP servers %v", got)
	}
	hostMu.Lock()
	if !slices.Equal(names, []string{"node-1"}) {
		t.Errorf("host names set: %v", names)
	}
	hostMu.Unlock()

	// NTP through the lease's server, from the client namespace (fake clock).
	clock := &fakeClock{}
	ts := &TimeSync{Servers: func() []string {
		var out []string
		for _, s := range m.NTPServers() {
			out = append(out, net.JoinHostPort(s, strings.TrimPrefix(sntp, "10.99.0.1:")))
		}
		return out
	}, NetNS: &cns, Clock: clock}
	if res, err := ts.Sync(ctx); err != nil || len(clock.steps) != 1 || (clock.steps[0]-90*time.Second).Abs() > time.Second {
		t.Errorf("NTP sync: %+v, %v, steps %v", res, err, clock.steps)
	}

	// Renewal at T1 (3 s).
	log.wait("eth0: renewed 10.99.0.55/24", 15*time.Second)

	// Release.
	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	log.wait("eth0: released 10.99.0.55/24", time.Second)
	if as, _ := ch.AddrList(eth0, netlink.FAMILY_V4); len(as) != 0 {
		t.Errorf("addresses left after release: %v", as)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(dlog.String(), "DHCPRELEASE(srv0) 10.99.0.55") {
		if time.Now().After(deadline) {
			t.Fatalf("dnsmasq saw no release")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(dlog.String(), "DHCPACK(srv0) 10.99.0.55"); n < 2 {
		t.Errorf("dnsmasq acknowledged %d times, want the lease and at least one renewal", n)
	}
}

// TestStaticNetns applies a static config in a namespace of its own.
func TestStaticNetns(t *testing.T) {
	testhost.Root(t)
	ns := newNS(t)
	h := handleAt(t, ns)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "st0"}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	if peer, err := h.LinkByName("peer0"); err != nil || h.LinkSetUp(peer) != nil {
		t.Fatalf("peer up: %v", err)
	}
	log := &lines{t: t}
	m, err := New(Options{Config: &Config{
		Interfaces: []Interface{{Name: "st*", Addresses: []string{"10.98.0.5/24"}, Gateway: "10.98.0.1", DNS: []string{"10.98.0.1"},
			Routes: []Route{{To: "10.97.0.0/16", Via: "10.98.0.2"}}, MTU: 1400}},
		DNS: []string{"1.1.1.1"}, Search: []string{"static.test"},
	}, NetNS: &ns, ResolvConf: filepath.Join(t.TempDir(), "resolv.conf"), Logf: log.logf})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	if err := m.WaitOnline(ctx); err != nil {
		t.Fatal(err)
	}
	log.wait("st0 10.98.0.5/24 via 10.98.0.1 dns 10.98.0.1 mtu 1400", 5*time.Second)
	l, _ := h.LinkByName("st0")
	if l.Attrs().MTU != 1400 {
		t.Errorf("mtu %d", l.Attrs().MTU)
	}
	rs, _ := h.RouteList(l, netlink.FAMILY_V4)
	var got []string
	for _, r := range rs {
		if r.Gw != nil {
			got = append(got, fmt.Sprintf("%v via %v", r.Dst, r.Gw))
		}
	}
	slices.Sort(got)
	if want := []string{"10.97.0.0/16 via 10.98.0.2", "<nil> via 10.98.0.1"}; !slices.Equal(got, want) {
		// The default route's Dst is nil or 0.0.0.0/0 depending on the library version.
		if want2 := []string{"0.0.0.0/0 via 10.98.0.1", "10.97.0.0/16 via 10.98.0.2"}; !slices.Equal(got, want2) {
			t.Errorf("routes %v, want %v", got, want)
		}
	}
	if b, _ := os.ReadFile(m.o.ResolvConf); string(b) != "# written by cairn\nnameserver 1.1.1.1\nnameserver 10.98.0.1\nsearch static.test\n" {
		t.Errorf("resolv.conf:\n%s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
