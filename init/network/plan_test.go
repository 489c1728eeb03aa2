//go:build linux

package network

import (
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func ack(t testing.TB, yiaddr string, opts ...dhcpv4.Option) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.ParseIP(yiaddr))}
	for _, o := range opts {
		mods = append(mods, dhcpv4.WithOption(o))
	}
	d, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ips(ss ...string) []net.IP {
	var out []net.IP
	for _, s := range ss {
		out = append(out, net.ParseIP(s))
	}
	return out
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var defaultV4 = pfx("0.0.0.0/0")

func TestPlanFromLease(t *testing.T) {
	slirp := []dhcpv4.Option{
		dhcpv4.OptSubnetMask(net.IPv4Mask(255, 255, 255, 0)), dhcpv4.OptRouter(net.ParseIP("10.0.2.2")),
		dhcpv4.OptDNS(net.ParseIP("10.0.2.3")), dhcpv4.OptIPAddressLeaseTime(24 * time.Hour),
		dhcpv4.OptServerIdentifier(net.ParseIP("10.0.2.2")),
	}
	tests := []struct {
		name    string
		ack     *dhcpv4.DHCPv4
		want    *Plan
		wantErr string
		line    string
	}{
		{name: "qemu user networking", ack: ack(t, "10.0.2.15", slirp...),
			want: &Plan{Addrs: []netip.Prefix{pfx("10.0.2.15/24")}, Lifetime: 24 * time.Hour, Routes: []PlanRoute{{Dst: defaultV4, Gw: netip.MustParseAddr("10.0.2.2")}},
				DNS: addrs("10.0.2.3"), Times: LeaseTimes{Lease: 24 * time.Hour, T1: 12 * time.Hour, T2: 21 * time.Hour}, Server: netip.MustParseAddr("10.0.2.2")},
			line: "eth0 10.0.2.15/24 via 10.0.2.2 dns 10.0.2.3 (lease 24h)"},
		{name: "everything", ack: ack(t, "10.99.0.60",
			dhcpv4.OptSubnetMask(net.IPv4Mask(255, 255, 0, 0)), dhcpv4.OptRouter(net.ParseIP("0.0.0.0"), net.ParseIP("10.99.0.1")),
			dhcpv4.OptDNS(net.ParseIP("10.99.0.1"), net.ParseIP("255.255.255.255"), net.ParseIP("10.99.0.2")), dhcpv4.OptNTPServers(ips("10.99.0.1", "224.0.0.1")...),
			dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{"a.test", "b.test", "bad label"}}), dhcpv4.OptDomainName("c.test"),
			dhcpv4.OptHostName("node-1"), dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(1400)},
			dhcpv4.OptIPAddressLeaseTime(2*time.Minute), dhcpv4.OptRenewTimeValue(5*time.Second), dhcpv4.OptRebindingTimeValue(8*time.Second)),
			want: &Plan{Addrs: []netip.Prefix{pfx("10.99.0.60/16")}, Lifetime: 2 * time.Minute, Routes: []PlanRoute{{Dst: defaultV4, Gw: netip.MustParseAddr("10.99.0.1")}},
				MTU: 1400, DNS: addrs("10.99.0.1", "10.99.0.2"), NTP: addrs("10.99.0.1"), Search: []string{"a.test", "b.test", "c.test"}, Hostname: "node-1",
				Times: LeaseTimes{Lease: 2 * time.Minute, T1: 5 * time.Second, T2: 8 * time.Second}},
			line: "eth0 10.99.0.60/16 via 10.99.0.1 dns 10.99.0.1,10.99.0.2 ntp 10.99.0.1 search a.test,b.test,c.test mtu 1400 (lease 2m)"},
		{name: "classless routes win, gateway off subnet", ack: ack(t, "192.168.1.10",
			dhcpv4.OptSubnetMask(net.IPv4Mask(255, 255, 255, 255)), dhcpv4.OptRouter(net.ParseIP("10.9.9.9")),
			dhcpv4.OptClasslessStaticRoute(
				&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: net.ParseIP("192.168.0.1")},
				&dhcpv4.Route{Dest: &net.IPNet{IP: net.ParseIP("172.16.0.0").To4(), Mask: net.CIDRMask(12, 32)}, Router: net.IPv4zero},
			), dhcpv4.OptIPAddressLeaseTime(0xffffffff*time.Second)),
			want: &Plan{Addrs: []netip.Prefix{pfx("192.168.1.10/32")}, Routes: []PlanRoute{
				{Dst: pfx("192.168.0.1/32")}, {Dst: defaultV4, Gw: netip.MustParseAddr("192.168.0.1")}, {Dst: pfx("172.16.0.0/12")}},
				Times: LeaseTimes{Infinite: true}},
			line: "eth0 192.168.1.10/32 via 192.168.0.1 (lease infinite)"},
		{name: "no mask: classful, no lease time: 1h, bad mtu dropped, bad hostname dropped", ack: ack(t, "10.1.2.3",
			dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(20)}, dhcpv4.OptHostName("bad_name;rm")),
			want: &Plan{Addrs: []netip.Prefix{pfx("10.1.2.3/8")}, Lifetime: time.Hour, Times: LeaseTimes{Lease: time.Hour, T1: 30 * time.Minute, T2: 52*time.Minute + 30*time.Second}}},
		{name: "tiny lease clamped", ack: ack(t, "10.1.2.3", dhcpv4.OptIPAddressLeaseTime(time.Second), dhcpv4.OptRenewTimeValue(time.Hour)),
			want: &Plan{Addrs: []netip.Prefix{pfx("10.1.2.3/8")}, Lifetime: minLease, Times: LeaseTimes{Lease: minLease, T1: minLease * 7 / 8, T2: minLease * 7 / 8}}},
		{name: "zero address", ack: ack(t, "0.0.0.0"), wantErr: "not usable"},
		{name: "broadcast address", ack: ack(t, "255.255.255.255"), wantErr: "not usable"},
		{name: "multicast address", ack: ack(t, "224.0.0.5"), wantErr: "not usable"},
		{name: "holey mask", ack: ack(t, "10.0.0.5", dhcpv4.OptSubnetMask(net.IPv4Mask(255, 0, 255, 0))), wantErr: "not contiguous"},
		{name: "zero mask", ack: ack(t, "10.0.0.5", dhcpv4.OptSubnetMask(net.IPv4Mask(0, 0, 0, 0))), wantErr: "/0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanFromLease(tt.ack)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan\n got %+v\nwant %+v", got, tt.want)
			}
			if tt.line != "" {
				if l := describe("eth0", got); l != tt.line {
					t.Errorf("line %q, want %q", l, tt.line)
				}
			}
		})
	}
}

func TestPlanFromStatic(t *testing.T) {
	tests := []struct {
		name string
		itf  Interface
		want *Plan
	}{
		{name: "address gateway dns mtu", itf: Interface{Name: "eth0", Addresses: []string{"10.0.0.5/24"}, Gateway: "10.0.0.1", DNS: []string{"10.0.0.1"}, MTU: 9000},
			want: &Plan{Addrs: []netip.Prefix{pfx("10.0.0.5/24")}, Routes: []PlanRoute{{Dst: defaultV4, Gw: netip.MustParseAddr("10.0.0.1")}}, MTU: 9000, DNS: addrs("10.0.0.1")}},
		{name: "routes and v6 default", itf: Interface{Name: "eth0", Addresses: []string{"10.0.0.5/24", "fd00::5/64"},
			Routes: []Route{{To: "10.1.0.0/16", Via: "10.0.0.2"}, {To: "default", Via: "fd00::1"}, {To: "10.2.0.0/16", Via: "192.168.9.1"}}},
			want: &Plan{Addrs: []netip.Prefix{pfx("10.0.0.5/24"), pfx("fd00::5/64")}, Routes: []PlanRoute{
				{Dst: pfx("10.1.0.0/16"), Gw: netip.MustParseAddr("10.0.0.2")}, {Dst: pfx("::/0"), Gw: netip.MustParseAddr("fd00::1")},
				{Dst: pfx("192.168.9.1/32")}, {Dst: pfx("10.2.0.0/16"), Gw: netip.MustParseAddr("192.168.9.1")}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PlanFromStatic(tt.itf)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestRenewWait(t *testing.T) {
	bound := time.Unix(1000, 0)
	lt := LeaseTimes{Lease: 100 * time.Second, T1: 50 * time.Second, T2: 80 * time.Second}
	tests := []struct {
		at     time.Duration // since bound
		want   time.Duration
		wantOK bool
	}{
		{0, 50 * time.Second, true},
		{49 * time.Second, time.Second, true},
		{50 * time.Second, 15 * time.Second, true}, // half the way to T2
		{76 * time.Second, 10 * time.Second, true}, // floor: lease/10
		{80 * time.Second, 10 * time.Second, true}, // rebinding: half to expiry
		{95 * time.Second, 5 * time.Second, true},  // not past expiry
		{100 * time.Second, 0, false},              // expired
		{200 * time.Second, 0, false},
	}
	for _, tt := range tests {
		got, ok := renewWait(bound.Add(tt.at), bound, lt)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("at +%v: %v %v, want %v %v", tt.at, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{24 * time.Hour: "24h", 90 * time.Second: "1m30s", 2 * time.Minute: "2m", 0: "0s", 3723 * time.Second: "1h2m3s"} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// FuzzPlanFromLease: a DHCP ACK comes from the network. Whatever it holds,
// the plan must be sane: usable address, a mask, times in order, sane MTU,
// host name safe to write into /etc/hosts.
func FuzzPlanFromLease(f *testing.F) {
	f.Add(ack(f, "10.0.2.15", dhcpv4.OptSubnetMask(net.IPv4Mask(255, 255, 255, 0)), dhcpv4.OptRouter(net.ParseIP("10.0.2.2")),
		dhcpv4.OptDNS(net.ParseIP("10.0.2.3")), dhcpv4.OptIPAddressLeaseTime(24*time.Hour)).ToBytes())
	f.Add(ack(f, "192.168.1.10", dhcpv4.OptClasslessStaticRoute(&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: net.ParseIP("192.168.0.1")}),
		dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{"a.test"}}), dhcpv4.OptHostName("h"), dhcpv4.OptRenewTimeValue(time.Second)).ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		p, err := PlanFromLease(d)
		if err != nil {
			return
		}
		if len(p.Addrs) != 1 || !usableV4(p.Addrs[0].Addr()) || p.Addrs[0].Bits() == 0 {
			t.Fatalf("addresses %v", p.Addrs)
		}
		if lt := p.Times; !lt.Infinite && !(minRenew <= lt.T1 && lt.T1 <= lt.T2 && lt.T2 <= lt.Lease && lt.Lease >= minLease) {
			t.Fatalf("times %+v", lt)
		}
		if p.MTU != 0 && (p.MTU < MinMTU || p.MTU > MaxMTU) {
			t.Fatalf("mtu %d", p.MTU)
		}
		if p.Hostname != "" && !validHostname(p.Hostname) || strings.ContainsAny(p.Hostname, " \t\n#") {
			t.Fatalf("hostname %q", p.Hostname)
		}
		for _, s := range p.Search {
			if strings.ContainsAny(s, " \t\n#") {
				t.Fatalf("search %q", s)
			}
		}
		for _, r := range p.Routes {
			if !r.Dst.IsValid() || (r.Gw.IsValid() && !usableV4(r.Gw)) {
				t.Fatalf("route %+v", r)
			}
		}
		_ = describe("eth0", p)
		_ = RenderResolvConf(p.DNS, p.Search)
		_ = RenderHosts(p.Hostname, []netip.Addr{p.Addrs[0].Addr()})
	})
}

// FuzzStaticPlan: whatever validates as a static interface yields a plan.
func FuzzStaticPlan(f *testing.F) {
	f.Add([]byte("interfaces: [{mac: '52:54:00:12:34:56', addresses: [10.0.0.5/24, 'fd00::1/64'], gateway: 10.0.0.1, routes: [{to: default, via: 'fd00::2'}], mtu: 1400}]"))
	f.Add([]byte("interfaces: [{name: 'e*', addresses: [10.0.0.5/32], gateway: 192.168.1.1, routes: [{to: 10.1.0.0/16, via: 10.0.0.9}]}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		for _, itf := range c.Interfaces {
			if itf.DHCP {
				continue
			}
			if _, err := PlanFromStatic(itf); err != nil {
				t.Fatalf("validated interface %+v: %v", itf, err)
			}
		}
	})
}

func TestLinkCarrier(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    netlink.LinkAttrs
		want bool
	}{
		{"oper up", netlink.LinkAttrs{OperState: netlink.OperUp}, true},
		{"oper unknown (no carrier reporting)", netlink.LinkAttrs{OperState: netlink.OperUnknown}, true},
		{"lower up, linkwatch not yet run", netlink.LinkAttrs{OperState: netlink.OperDown, RawFlags: unix.IFF_UP | unix.IFF_LOWER_UP}, true},
		{"up without carrier", netlink.LinkAttrs{OperState: netlink.OperDown, RawFlags: unix.IFF_UP}, false},
		{"dormant", netlink.LinkAttrs{OperState: netlink.OperDormant}, false},
	} {
		if got := linkCarrier(&tc.a); got != tc.want {
			t.Errorf("%s: linkCarrier = %v, want %v", tc.name, got, tc.want)
		}
	}
}
