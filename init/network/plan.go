//go:build linux

package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Plan is what one link gets: addresses, routes and MTU to apply with
// netlink, and what the rest of the system learns from it.
type Plan struct {
	Addrs []netip.Prefix
	// Lifetime of the addresses: the lease time (the kernel drops them if
	// the lease runs out without renewal); 0 means permanent.
	Lifetime time.Duration
	Routes   []PlanRoute
	MTU      int // 0: leave as is
	DNS      []netip.Addr
	Search   []string
	NTP      []netip.Addr
	Hostname string
	// Times of a DHCP lease; zero for static plans.
	Times LeaseTimes
	// Server is the DHCP server's identifier.
	Server netip.Addr
}

// PlanRoute is a route through the link; an invalid Gw means on-link.
type PlanRoute struct {
	Dst netip.Prefix
	Gw  netip.Addr
}

// Gateway returns the next hop of the IPv4 default route, if any.
func (p *Plan) Gateway() (netip.Addr, bool) {
	for _, r := range p.Routes {
		if r.Dst.Bits() == 0 && r.Gw.IsValid() {
			return r.Gw, true
		}
	}
	return netip.Addr{}, false
}

// LeaseTimes are a lease's durations, from the moment it was acknowledged.
type LeaseTimes struct {
	Lease, T1, T2 time.Duration
	// Infinite leases are never renewed and their addresses are permanent.
	Infinite bool
}

// Bounds of lease times we accept, so that a hostile or broken server cannot
// make the client spin.
const (
	minLease     = 10 * time.Second
	minRenew     = 2 * time.Second
	defaultLease = time.Hour
	infiniteSecs = math.MaxUint32
)

// leaseTimes reads the lease time (default 1 h), T1 (default half of it)
// and T2 (default 7/8) and puts them in order: minRenew <= T1 <= T2 <= Lease.
func leaseTimes(ack *dhcpv4.DHCPv4) LeaseTimes {
	secs := func(code dhcpv4.OptionCode) (uint32, bool) {
		v := ack.Options.Get(code)
		if len(v) != 4 {
			return 0, false
		}
		return binary.BigEndian.Uint32(v), true
	}
	var t LeaseTimes
	if s, ok := secs(dhcpv4.OptionIPAddressLeaseTime); ok {
		if s == infiniteSecs {
			return LeaseTimes{Infinite: true}
		}
		t.Lease = time.Duration(s) * time.Second
	} else {
		t.Lease = defaultLease
	}
	t.Lease = max(t.Lease, minLease)
	t.T1, t.T2 = t.Lease/2, t.Lease*7/8
	if s, ok := secs(dhcpv4.OptionRenewTimeValue); ok {
		t.T1 = time.Duration(s) * time.Second
	}
	if s, ok := secs(dhcpv4.OptionRebindingTimeValue); ok {
		t.T2 = time.Duration(s) * time.Second
	}
	t.T2 = min(max(t.T2, minRenew), t.Lease)
	t.T1 = min(max(t.T1, minRenew), t.T2)
	return t
}

// usableV4 reports whether a is an IPv4 address a host can use or talk to.
func usableV4(a netip.Addr) bool {
	return a.Is4() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

func addrsV4(ips []net.IP) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && usableV4(a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// PlanFromLease turns a DHCPACK into a plan. It interprets only what it
// validates: an unusable address or mask is an error; unusable options are
// dropped.
func PlanFromLease(ack *dhcpv4.DHCPv4) (*Plan, error) {
	if ack == nil {
		return nil, errors.New("dhcp: no ACK")
	}
	yi, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !usableV4(yi) {
		return nil, fmt.Errorf("dhcp: offered address %v is not usable", ack.YourIPAddr)
	}
	bits := classfulBits(yi)
	if m := ack.Options.Get(dhcpv4.OptionSubnetMask); m != nil {
		ones, size := net.IPMask(m).Size()
		if size != 32 || len(m) != 4 {
			return nil, fmt.Errorf("dhcp: subnet mask %v is not contiguous", net.IP(m))
		}
		bits = ones
	}
	if bits == 0 {
		return nil, errors.New("dhcp: subnet mask /0")
	}
	p := &Plan{Addrs: []netip.Prefix{netip.PrefixFrom(yi, bits)}, Times: leaseTimes(ack)}
	if !p.Times.Infinite {
		p.Lifetime = p.Times.Lease
	}
	if s, ok := netip.AddrFromSlice(ack.ServerIdentifier().To4()); ok {
		p.Server = s
	}
	subnet := p.Addrs[0].Masked()

	// RFC 3442: with classless static routes, the router option is ignored.
	if raw := ack.Options.Get(dhcpv4.OptionClasslessStaticRoute); raw != nil {
		for _, r := range ack.ClasslessStaticRoute() {
			if r == nil || r.Dest == nil {
				continue
			}
			ip, ok := netip.AddrFromSlice(r.Dest.IP.To4())
			ones, size := r.Dest.Mask.Size()
			if !ok || size != 32 {
				continue
			}
			dst := netip.PrefixFrom(ip, ones).Masked()
			gw, _ := netip.AddrFromSlice(r.Router.To4())
			if gw.IsUnspecified() {
				p.addRoute(subnet, PlanRoute{Dst: dst})
				continue
			}
			if usableV4(gw) {
				p.addRoute(subnet, PlanRoute{Dst: dst, Gw: gw})
			}
		}
	} else if rs := addrsV4(ack.Router()); len(rs) > 0 {
		p.addRoute(subnet, PlanRoute{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gw: rs[0]})
	}

	if v := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(v) == 2 {
		if m := int(binary.BigEndian.Uint16(v)); m >= MinMTU {
			p.MTU = m
		}
	}
	p.DNS = addrsV4(ack.DNS())
	p.NTP = addrsV4(ack.NTPServers())
	var search []string
	if l := ack.DomainSearch(); l != nil {
		search = append(search, l.Labels...)
	}
	if d := ack.DomainName(); d != "" {
		search = append(search, d)
	}
	p.Search = dedup(search, validDomain)
	if h := ack.HostName(); validHostname(h) {
		p.Hostname = h
	}
	return p, nil
}

// addRoute appends r, first adding an on-link host route to a gateway
// outside the subnet (as RFC 3442 asks), and skipping duplicates.
func (p *Plan) addRoute(subnet netip.Prefix, r PlanRoute) {
	if r.Gw.IsValid() && !subnet.Contains(r.Gw) {
		host := PlanRoute{Dst: netip.PrefixFrom(r.Gw, r.Gw.BitLen())}
		if !slices.Contains(p.Routes, host) {
			p.Routes = append(p.Routes, host)
		}
	}
	if r.Dst == subnet && !r.Gw.IsValid() {
		return // the kernel adds the prefix route itself
	}
	if !slices.Contains(p.Routes, r) {
		p.Routes = append(p.Routes, r)
	}
}

func classfulBits(a netip.Addr) int {
	switch b := a.As4()[0]; {
	case b < 128:
		return 8
	case b < 192:
		return 16
	default:
		return 24
	}
}

// PlanFromStatic turns a validated static interface config into a plan.
func PlanFromStatic(itf Interface) (*Plan, error) {
	p := &Plan{MTU: itf.MTU}
	for _, a := range itf.Addresses {
		pf, err := netip.ParsePrefix(a)
		if err != nil {
			return nil, fmt.Errorf("network: address %q: %w", a, err)
		}
		p.Addrs = append(p.Addrs, pf)
	}
	var subnet netip.Prefix
	if len(p.Addrs) > 0 {
		subnet = p.Addrs[0].Masked()
	}
	route := func(to, via string) error {
		gw, err := parseAddr(via)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		dst, err := parseRouteTo(to)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		if to == "default" && gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if dst.Addr().Is4() != gw.Is4() {
			return fmt.Errorf("network: route to %s via %s mixes address families", to, via)
		}
		sub := subnet
		for _, a := range p.Addrs {
			if a.Contains(gw) {
				sub = a.Masked()
			}
		}
		p.addRoute(sub, PlanRoute{Dst: dst, Gw: gw})
		return nil
	}
	if itf.Gateway != "" {
		if err := route("default", itf.Gateway); err != nil {
			return nil, err
		}
	}
	for _, r := range itf.Routes {
		if err := route(r.To, r.Via); err != nil {
			return nil, err
		}
	}
	for _, d := range itf.DNS {
		a, err := parseAddr(d)
		if err != nil {
			return nil, fmt.Errorf("network: dns: %w", err)
		}
		p.DNS = append(p.DNS, a)
	}
	return p, nil
}

// Route protocols, as in iproute2's rt_protos.
const (
	protoStatic = unix.RTPROT_STATIC
	protoDHCP   = 16
)

func toIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (r PlanRoute) netlink(link, proto int) *netlink.Route {
	nr := &netlink.Route{LinkIndex: link, Dst: toIPNet(r.Dst), Protocol: netlink.RouteProtocol(proto)}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	return nr
}

func lifetimeSecs(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(min(d/time.Second, math.MaxUint32-1))
}

// apply makes link match next, removing what old had and next has not.
func apply(h *netlink.Handle, link netlink.Link, old, next *Plan, proto int) error {
	var errs []error
	idx := link.Attrs().Index
	if next.MTU > 0 && next.MTU != link.Attrs().MTU {
		if err := h.LinkSetMTU(link, next.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d: %w", next.MTU, err))
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		errs = append(errs, fmt.Errorf("set up: %w", err))
	}
	for _, a := range next.Addrs {
		na := &netlink.Addr{IPNet: toIPNet(a), ValidLft: lifetimeSecs(next.Lifetime), PreferedLft: lifetimeSecs(next.Lifetime)}
		if err := h.AddrReplace(link, na); err != nil {
			errs = append(errs, fmt.Errorf("address %s: %w", a, err))
		}
	}
	if old != nil {
		for _, r := range old.Routes {
			if !slices.Contains(next.Routes, r) {
				if err := h.RouteDel(r.netlink(idx, proto)); err != nil && !gone(err) {
					errs = append(errs, fmt.Errorf("remove route %s: %w", r.Dst, err))
				}
			}
		}
		for _, a := range old.Addrs {
			if !slices.Contains(next.Addrs, a) {
				if err := h.AddrDel(link, &netlink.Addr{IPNet: toIPNet(a)}); err != nil && !gone(err) {
					errs = append(errs, fmt.Errorf("remove address %s: %w", a, err))
				}
			}
		}
	}
	for _, r := range next.Routes {
		if err := h.RouteReplace(r.netlink(idx, proto)); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %v: %w", r.Dst, r.Gw, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network: %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// unapply removes what p put on link.
func unapply(h *netlink.Handle, link netlink.Link, p *Plan, proto int) error {
	if p == nil {
		return nil
	}
	return apply(h, link, p, &Plan{}, proto)
}

func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}
