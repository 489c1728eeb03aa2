package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/internal/testhost"
)

// These tests run as root, entirely inside network namespaces they create: a "host"
// namespace where the manager puts its bridge and nftables table, container
// namespaces, and an "outside" namespace. The real host's links and ruleset are never
// touched; every namespace is released (and with it its links and rules) on cleanup.

// testNS is a network namespace kept alive by an open fd.
type testNS struct {
	h    netns.NsHandle
	path string
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			c <- res{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.New() // unshare(CLONE_NEWNET) on this thread only
		if err != nil {
			goruntime.UnlockOSThread()
			c <- res{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it.
			c <- res{err: fmt.Errorf("switch back: %w", err)}
			return
		}
		goruntime.UnlockOSThread()
		c <- res{h: h}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	ns := &testNS{h: r.h, path: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(r.h))}
	t.Cleanup(func() { r.h.Close() })
	return ns
}

func (ns *testNS) handle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns.h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// listen opens a TCP listener inside ns that echoes one line per connection.
func (ns *testNS) listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	err := inNetNS(ns.h, func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				// Echo back with the peer address the server saw.
				fmt.Fprintf(c, "%s|%s", buf[:n], c.RemoteAddr())
			}()
		}
	}()
	return l
}

// dial connects from inside ns, sends a token and returns the echoed peer address
// the server saw.
func (ns *testNS) dial(addr string) (string, error) {
	var c net.Conn
	err := inNetNS(ns.h, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 2*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	s := string(b)
	if len(s) < 5 || s[:5] != "ping|" {
		return "", fmt.Errorf("unexpected reply %q", s)
	}
	return s[5:], nil
}

func mustDial(t *testing.T, ns *testNS, addr string) string {
	t.Helper()
	peer, err := ns.dial(addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return peer
}

func newTestManager(t *testing.T, host *testNS, stateDir string) *Manager {
	t.Helper()
	m, err := New(Config{StateDir: stateDir, NetNSPath: host.path, ResolvConfPaths: []string{"/nonexistent"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func addrsOf(t *testing.T, h *netlink.Handle, name string) []string {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	as, err := h.AddrList(l, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out
}

func linkExists(t *testing.T, h *netlink.Handle, name string) bool {
	t.Helper()
	_, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func portRules(t *testing.T, host *testNS) int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(host.h)))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(&nftables.Table{Name: DefaultTable, Family: nftables.TableFamilyIPv4},
		&nftables.Chain{Name: chainPorts})
	if err != nil {
		t.Fatal(err)
	}
	return len(rules)
}

func TestBridgeEndToEnd(t *testing.T) {
	testhost.Root(t)
	// With br_netfilter, bridged frames go through the host's netfilter hooks, which
	// hides missing hairpin NAT; test both ways when this kernel has it (a guest
	// kernel may not).
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil {
		bridgeEndToEnd(t, "")
		return
	}
	for _, v := range []string{"0", "1"} {
		t.Run("bridge-nf-call-iptables="+v, func(t *testing.T) { bridgeEndToEnd(t, v) })
	}
}

func bridgeEndToEnd(t *testing.T, brNF string) {
	ctx := context.Background()
	host := newTestNS(t)
	if brNF != "" {
		if err := inNetNS(host.h, func() error { return writeSysctl("net/bridge/bridge-nf-call-iptables", brNF) }); err != nil {
			t.Fatal(err)
		}
	}
	ctr := newTestNS(t)
	outside := newTestNS(t)
	hh := host.handle(t)

	// The "host" gets an uplink to an "outside" namespace (192.0.2.0/24) and another
	// address of its own on lo (this kernel has no dummy links).
	if err := hh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(outside.h)}); err != nil {
		t.Fatal(err)
	}
	setAddrUp(t, hh, "lo", "198.51.100.1/32")
	setAddrUp(t, hh, "uplink", "192.0.2.1/24")
	oh := outside.handle(t)
	setAddrUp(t, oh, "lo", "")
	setAddrUp(t, oh, "eth0", "192.0.2.2/24")

	m := newTestManager(t, host, t.TempDir())
	const hostPort = 18080
	res, err := m.Attach(ctx, "web", ctr.path, []PortMapping{
		{HostPort: hostPort, ContainerPort: 80},
		{HostIP: netip.MustParseAddr("198.51.100.1"), HostPort: hostPort + 2, ContainerPort: 80},
		{Protocol: UDP, HostPort: hostPort + 3, ContainerPort: 53},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Detach(ctx, "web") })
	gw := netip.MustParseAddr("10.88.0.1")
	if res.Mode != ModeBridge || res.Gateway != gw || !DefaultSubnet.Contains(res.IP) || res.IP == gw || res.Interface != "eth0" {
		t.Fatalf("result %+v", res)
	}

	// Container side: eth0 with the address, lo up, default route via the gateway.
	ch := ctr.handle(t)
	if got := addrsOf(t, ch, "eth0"); len(got) != 1 || got[0] != res.IP.String()+"/16" {
		t.Fatalf("container eth0 addresses %v", got)
	}
	lo, _ := ch.LinkByName("lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("container lo is down")
	}
	routes, err := ch.RouteList(nil, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	hasDefault := false
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(gw.AsSlice()) {
			hasDefault = true
		}
	}
	if !hasDefault {
		t.Fatalf("no default route via %s: %v", gw, routes)
	}
	// Host side: the bridge has the gateway address and the veth is enslaved.
	if got := addrsOf(t, hh, "cairn0"); len(got) != 1 || got[0] != "10.88.0.1/16" {
		t.Fatalf("bridge addresses %v", got)
	}
	hv, err := hh.LinkByName(res.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	br, _ := hh.LinkByName("cairn0")
	if hv.Attrs().MasterIndex != br.Attrs().Index {
		t.Fatal("host veth not on the bridge")
	}

	t.Run("container to host bridge address", func(t *testing.T) {
		l := host.listen(t, "10.88.0.1:0")
		peer := mustDial(t, ctr, l.Addr().String())
		if ap, _ := netip.ParseAddrPort(peer); ap.Addr() != res.IP {
			t.Fatalf("host saw %s, want %s", peer, res.IP)
		}
	})
	t.Run("container to outside is masqueraded", func(t *testing.T) {
		l := outside.listen(t, "192.0.2.2:0")
		peer := mustDial(t, ctr, l.Addr().String())
		if ap, _ := netip.ParseAddrPort(peer); ap.Addr() != netip.MustParseAddr("192.0.2.1") {
			t.Fatalf("outside saw %s, want the host's uplink address", peer)
		}
	})

	ctr.listen(t, "0.0.0.0:80")
	for _, target := range []string{"127.0.0.1", "10.88.0.1", "198.51.100.1", "192.0.2.1"} {
		t.Run("published port from host via "+target, func(t *testing.T) {
			mustDial(t, host, net.JoinHostPort(target, strconv.Itoa(hostPort)))
		})
	}
	t.Run("published port from outside", func(t *testing.T) {
		peer := mustDial(t, outside, net.JoinHostPort("192.0.2.1", strconv.Itoa(hostPort)))
		if ap, _ := netip.ParseAddrPort(peer); ap.Addr() != netip.MustParseAddr("192.0.2.2") {
			t.Fatalf("container saw %s, want the client's own address (no SNAT from outside)", peer)
		}
	})
	t.Run("port bound to one host address", func(t *testing.T) {
		mustDial(t, host, net.JoinHostPort("198.51.100.1", strconv.Itoa(hostPort+2)))
		if _, err := host.dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort+2))); err == nil {
			t.Fatal("mapping bound to 198.51.100.1 reachable at 127.0.0.1")
		}
	})
	t.Run("udp published port from host via 127.0.0.1", func(t *testing.T) {
		var srv net.PacketConn
		if err := inNetNS(ctr.h, func() (err error) { srv, err = net.ListenPacket("udp4", "0.0.0.0:53"); return err }); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		go func() {
			buf := make([]byte, 64)
			n, from, err := srv.ReadFrom(buf)
			if err == nil {
				_, _ = srv.WriteTo(append([]byte("re:"), buf[:n]...), from)
			}
		}()
		var c net.Conn
		if err := inNetNS(host.h, func() (err error) {
			c, err = net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort+3)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "re:q" {
			t.Fatalf("udp reply %q, %v", buf[:n], err)
		}
	})
	t.Run("container reaches its own published port", func(t *testing.T) {
		mustDial(t, ctr, net.JoinHostPort("192.0.2.1", strconv.Itoa(hostPort)))
	})
	t.Run("unpublished port is not forwarded", func(t *testing.T) {
		if _, err := host.dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort+1))); err == nil {
			t.Fatal("unpublished port reachable")
		}
	})
	t.Run("hairpin from a second container", func(t *testing.T) {
		ctr2 := newTestNS(t)
		if _, err := m.Attach(ctx, "client", ctr2.path, nil); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := m.Detach(ctx, "client"); err != nil {
				t.Error(err)
			}
		}()
		mustDial(t, ctr2, net.JoinHostPort("192.0.2.1", strconv.Itoa(hostPort)))
	})
	t.Run("duplicate host port refused", func(t *testing.T) {
		ctr3 := newTestNS(t)
		if _, err := m.Attach(ctx, "dup", ctr3.path, []PortMapping{{HostPort: hostPort, ContainerPort: 81}}); err == nil {
			t.Fatal("second publisher of the same host port accepted")
		}
		if _, ok, _ := m.Lookup(ctx, "dup"); ok {
			t.Fatal("failed attach left a lease")
		}
		if _, err := m.Attach(ctx, "web", ctr3.path, nil); err == nil {
			t.Fatal("second attach of the same id accepted")
		}
	})

	// Detach removes the veth (both ends), the lease and the DNAT rules.
	if n := portRules(t, host); n != 3 {
		t.Fatalf("%d port rules before detach, want 3", n)
	}
	if err := m.Detach(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if linkExists(t, hh, res.HostVeth) || linkExists(t, ch, "eth0") {
		t.Fatal("veth left after detach")
	}
	if _, ok, err := m.Lookup(ctx, "web"); err != nil || ok {
		t.Fatalf("lease left after detach (ok=%v, err=%v)", ok, err)
	}
	if n := portRules(t, host); n != 0 {
		t.Fatalf("%d port rules after detach", n)
	}
	if _, err := host.dial(net.JoinHostPort("127.0.0.1", strconv.Itoa(hostPort))); err == nil {
		t.Fatal("published port still reachable after detach")
	}
	if err := m.Detach(ctx, "web"); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if linkExists(t, hh, "cairn0") {
		t.Fatal("bridge left after cleanup")
	}
}

func setAddrUp(t *testing.T, h *netlink.Handle, name, cidr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if cidr != "" {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

func TestLeasesPersistAndGC(t *testing.T) {
	testhost.Root(t)
	ctx := context.Background()
	host := newTestNS(t)
	hh := host.handle(t)
	state := t.TempDir()
	m1 := newTestManager(t, host, state)
	ips := map[string]netip.Addr{}
	for _, id := range []string{"a", "b"} {
		r, err := m1.Attach(ctx, id, newTestNS(t).path, []PortMapping{{Protocol: UDP, HostPort: 5300 + uint16(len(ips)), ContainerPort: 53}})
		if err != nil {
			t.Fatal(err)
		}
		ips[id] = r.IP
	}
	// A new manager (a restart) on the same state dir sees the leases and does not
	// hand their addresses out again.
	m2 := newTestManager(t, host, state)
	for id, ip := range ips {
		r, ok, err := m2.Lookup(ctx, id)
		if err != nil || !ok || r.IP != ip {
			t.Fatalf("lookup %s after restart: %+v ok=%v err=%v", id, r, ok, err)
		}
	}
	r, err := m2.Attach(ctx, "c", newTestNS(t).path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.IP == ips["a"] || r.IP == ips["b"] {
		t.Fatalf("restarted manager reused %s", r.IP)
	}
	if _, err := m2.Attach(ctx, "x", newTestNS(t).path, []PortMapping{{Protocol: UDP, HostPort: 5300, ContainerPort: 1}}); err == nil {
		t.Fatal("restarted manager allowed a published port held by a persisted lease")
	}
	// GC with only "a" alive: b and c lose their leases, veths and rules.
	removed, err := m2.GC(ctx, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Fatalf("gc removed %v, want b and c", removed)
	}
	if linkExists(t, hh, vethName(ips["b"])) || linkExists(t, hh, r.HostVeth) || !linkExists(t, hh, vethName(ips["a"])) {
		t.Fatal("gc removed the wrong veths")
	}
	if n := portRules(t, host); n != 1 {
		t.Fatalf("%d port rules after gc, want 1", n)
	}
	if _, ok, _ := m1.Lookup(ctx, "b"); ok {
		t.Fatal("b's lease survived gc")
	}
	if err := m1.Detach(ctx, "a"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentAttach(t *testing.T) {
	testhost.Root(t)
	ctx := context.Background()
	host := newTestNS(t)
	hh := host.handle(t)
	state := t.TempDir()
	const n = 8
	nss := make([]*testNS, n)
	for i := range nss {
		nss[i] = newTestNS(t)
	}
	// Two managers on one state dir stand for two processes.
	ms := []*Manager{newTestManager(t, host, state), newTestManager(t, host, state)}
	results := make([]Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = ms[i%2].Attach(ctx, fmt.Sprintf("c%d", i), nss[i].path,
				[]PortMapping{{HostPort: uint16(20000 + i), ContainerPort: 80}})
		}(i)
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("attach c%d: %v", i, errs[i])
		}
		if j, dup := seen[results[i].IP]; dup {
			t.Fatalf("c%d and c%d both got %s", i, j, results[i].IP)
		}
		seen[results[i].IP] = i
		if !linkExists(t, hh, results[i].HostVeth) {
			t.Fatalf("veth of c%d missing", i)
		}
	}
	if got := portRules(t, host); got != n {
		t.Fatalf("%d port rules, want %d", got, n)
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = ms[(i+1)%2].Detach(ctx, fmt.Sprintf("c%d", i))
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("detach c%d: %v", i, err)
		}
	}
	if got := portRules(t, host); got != 0 {
		t.Fatalf("%d port rules after detach", got)
	}
}

func TestModeNoneAndHost(t *testing.T) {
	testhost.Root(t)
	ctx := context.Background()
	host := newTestNS(t)
	ctr := newTestNS(t)
	m := newTestManager(t, host, t.TempDir())
	res, err := m.AttachMode(ctx, ModeNone, "n", ctr.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != ModeNone || res.IP.IsValid() {
		t.Fatalf("result %+v", res)
	}
	ch := ctr.handle(t)
	lo, _ := ch.LinkByName("lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("lo down in mode none")
	}
	links, _ := ch.LinkList()
	if len(links) != 1 {
		t.Fatalf("mode none netns has %d links", len(links))
	}
	l := ctr.listen(t, "127.0.0.1:0")
	mustDial(t, ctr, l.Addr().String())
	if _, err := m.AttachMode(ctx, ModeNone, "n2", ctr.path, []PortMapping{{HostPort: 1, ContainerPort: 1}}); err == nil {
		t.Fatal("ports accepted in mode none")
	}
	if _, err := m.AttachMode(ctx, ModeHost, "h", "", []PortMapping{{HostPort: 1, ContainerPort: 1}}); err == nil {
		t.Fatal("ports accepted in mode host")
	}
	res, err = m.AttachMode(ctx, ModeHost, "h", "", nil)
	if err != nil || res.Mode != ModeHost {
		t.Fatalf("host mode: %+v %v", res, err)
	}
	if linkExists(t, host.handle(t), "cairn0") {
		t.Fatal("modes none/host created the bridge")
	}
	if err := m.Detach(ctx, "n"); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkAttachDetach(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	ctx := context.Background()
	host := newTestNS(b)
	ctr := newTestNS(b)
	m, err := New(Config{StateDir: b.TempDir(), NetNSPath: host.path, ResolvConfPaths: []string{"/nonexistent"}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ports := []PortMapping{{HostPort: 8080, ContainerPort: 80}}
	for b.Loop() {
		if _, err := m.Attach(ctx, "bench", ctr.path, ports); err != nil {
			b.Fatal(err)
		}
		if err := m.Detach(ctx, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
