// Package network attaches containers to the network: mode none (loopback only),
// host (the host's namespace) and bridge (a cairn0 bridge, one veth pair per
// container, addresses from a persisted subnet, nftables masquerade and published
// ports by DNAT, also reachable from the host's own addresses including 127.0.0.1).
//
// Every netlink and nftables call is bound to an explicit network namespace (the
// "host" side, Config.NetNSPath, and the container's), so the package can be driven
// from any thread and tested entirely inside private namespaces.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults for Config.
const (
	DefaultBridge = "cairn0"
	DefaultTable  = "cairn"
	// ContainerInterface is the name of the container's side of the veth pair.
	ContainerInterface = "eth0"
)

// DefaultSubnet is the bridge network used when Config.Subnet is the zero value.
var DefaultSubnet = netip.MustParsePrefix("10.88.0.0/16")

// Config configures a Manager.
type Config struct {
	// StateDir holds the lease file and its lock (required), e.g.
	// /var/lib/cairn/network.
	StateDir string
	// Bridge is the bridge's name (default "cairn0").
	Bridge string
	// Subnet is the container network (default 10.88.0.0/16); its first host address
	// is the bridge's (gateway) address.
	Subnet netip.Prefix
	// MTU of the bridge and veths; 0 keeps the kernel's default (1500).
	MTU int
	// DNS, when non-empty, replaces the nameservers taken from the host.
	DNS []netip.Addr
	// DNSSearch and DNSOptions, when non-empty, replace the host's search and
	// options lines.
	DNSSearch  []string
	DNSOptions []string
	// FallbackDNS is used when neither DNS nor the host gives a usable (non-loopback
	// IPv4) nameserver; default 8.8.8.8 and 8.8.4.4, as Docker does.
	FallbackDNS []netip.Addr
	// ResolvConfPaths are the host's resolver files, tried in order; the first with
	// a usable nameserver wins (default /etc/resolv.conf, then systemd-resolved's
	// upstream file /run/systemd/resolve/resolv.conf).
	ResolvConfPaths []string
	// HostsPath is the host's hosts file, copied in host mode (default /etc/hosts).
	HostsPath string
	// NetNSPath is the network namespace where the bridge, the host side of the
	// veths and the nftables table live; "" means this process's namespace.
	NetNSPath string
	// Table is the name of the nftables table (family ip) owned by the manager
	// (default "cairn").
	Table string
}

// Manager attaches containers to the network. Its methods are safe for concurrent
// use, also from several processes sharing the state dir (a file lock serialises
// them).
type Manager struct {
	cfg    Config
	store  *leaseStore
	hostNS netns.NsHandle
	// baseWritten is set once this Manager has (re)written the base nftables chains;
	// later Attaches only check that the table still exists (a commit costs ~10 ms).
	baseWritten atomic.Bool
}

// New validates cfg, fills defaults and opens the host network namespace.
// Nothing is changed on the system until the first Attach.
func New(cfg Config) (*Manager, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("network: StateDir is required")
	}
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if len(cfg.Bridge) >= unix.IFNAMSIZ || !validIfname(cfg.Bridge) {
		return nil, fmt.Errorf("network: invalid bridge name %q", cfg.Bridge)
	}
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if err := checkSubnet(cfg.Subnet); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.MTU < 0 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("network: invalid MTU %d", cfg.MTU)
	}
	for _, a := range cfg.DNS {
		if !a.IsValid() {
			return nil, errors.New("network: invalid DNS server address")
		}
	}
	if cfg.FallbackDNS == nil {
		cfg.FallbackDNS = []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("8.8.4.4")}
	}
	if cfg.ResolvConfPaths == nil {
		cfg.ResolvConfPaths = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}
	}
	if cfg.HostsPath == "" {
		cfg.HostsPath = "/etc/hosts"
	}
	nsPath := cfg.NetNSPath
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("network: open host netns %s: %w", nsPath, err)
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("network: state dir: %w", err)
	}
	cfg.StateDir = abs
	return &Manager{cfg: cfg, store: &leaseStore{dir: abs, subnet: cfg.Subnet}, hostNS: h}, nil
}

// Close releases the manager's namespace handle. It does not detach anything.
func (m *Manager) Close() error {
	if err := m.hostNS.Close(); err != nil {
		return fmt.Errorf("network: close netns: %w", err)
	}
	return nil
}

// Config returns the effective configuration (defaults filled in).
func (m *Manager) Config() Config { return m.cfg }

// Gateway is the bridge's address.
func (m *Manager) Gateway() netip.Addr { return gatewayOf(m.cfg.Subnet) }

// AttachMode sets up a container's network in the given mode. For ModeHost,
// netnsPath is ignored and nothing is changed; for ModeNone, loopback is brought up
// in netnsPath; ModeBridge is Attach. Published ports need ModeBridge.
func (m *Manager) AttachMode(ctx context.Context, mode Mode, id, netnsPath string, ports []PortMapping) (Result, error) {
	if err := ValidateID(id); err != nil {
		return Result{}, fmt.Errorf("network: %w", err)
	}
	switch mode {
	case ModeBridge, "":
		return m.Attach(ctx, id, netnsPath, ports)
	case ModeHost, ModeNone:
	default:
		return Result{}, fmt.Errorf("network: unknown mode %q", mode)
	}
	if len(ports) != 0 {
		return Result{}, fmt.Errorf("network: %s: publishing ports needs bridge mode (mode is %s)", id, mode)
	}
	if mode == ModeNone {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := loopbackUp(netnsPath); err != nil {
			return Result{}, fmt.Errorf("network: %s: %w", id, err)
		}
	}
	return Result{Mode: mode, ID: id}, nil
}

// Attach connects the container network namespace at netnsPath to the bridge:
// it leases an address, creates the veth pair (eth0 inside, with the address, a
// default route via the bridge and lo up) and publishes ports. Attaching an ID that
// already holds a lease is an error.
func (m *Manager) Attach(ctx context.Context, id, netnsPath string, ports []PortMapping) (Result, error) {
	if err := ValidateID(id); err != nil {
		return Result{}, fmt.Errorf("network: %w", err)
	}
	if err := validatePorts(ports); err != nil {
		return Result{}, fmt.Errorf("network: %s: %w", id, err)
	}
	ports = normalizePorts(ports)
	var res Result
	err := m.store.withLock(ctx, func(lf *leaseFile) (bool, error) {
		if lf.find(id) >= 0 {
			return false, fmt.Errorf("%s is already attached", id)
		}
		for _, l := range lf.Leases {
			for _, q := range l.Ports {
				for _, p := range ports {
					if p.key() == q.key() {
						return false, fmt.Errorf("host port %d/%s is already published by %s", p.HostPort, p.proto(), l.ID)
					}
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		ip, err := lf.allocate()
		if err != nil {
			return false, err
		}
		l := lease{ID: id, IP: ip, Veth: vethName(ip), Ports: ports}
		if err := m.setup(l, netnsPath); err != nil {
			return false, err
		}
		lf.Leases = append(lf.Leases, l)
		res = m.result(l)
		return true, nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("network: attach %s: %w", id, err)
	}
	return res, nil
}

func normalizePorts(ports []PortMapping) []PortMapping {
	if len(ports) == 0 {
		return nil
	}
	out := slices.Clone(ports)
	for i := range out {
		out[i].Protocol = out[i].proto()
	}
	return out
}

func (m *Manager) result(l lease) Result {
	return Result{
		Mode:      ModeBridge,
		ID:        l.ID,
		IP:        l.IP,
		Subnet:    m.cfg.Subnet,
		Gateway:   m.Gateway(),
		Interface: ContainerInterface,
		HostVeth:  l.Veth,
		Ports:     slices.Clone(l.Ports),
	}
}

// Lookup returns the current lease of id as a Result.
func (m *Manager) Lookup(ctx context.Context, id string) (Result, bool, error) {
	var res Result
	var ok bool
	err := m.store.withLock(ctx, func(lf *leaseFile) (bool, error) {
		if i := lf.find(id); i >= 0 {
			res, ok = m.result(lf.Leases[i]), true
		}
		return false, nil
	})
	if err != nil {
		return Result{}, false, fmt.Errorf("network: lookup %s: %w", id, err)
	}
	return res, ok, nil
}

// Detach removes a container's veth, published ports and lease. Detaching an ID
// without a lease (mode none or host, or already detached) only removes rules that
// may be left tagged with it, and is not an error.
func (m *Manager) Detach(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	err := m.store.withLock(ctx, func(lf *leaseFile) (bool, error) {
		i := lf.find(id)
		var l *lease
		if i >= 0 {
			l = &lf.Leases[i]
		}
		if err := m.teardown(id, l); err != nil {
			return false, err
		}
		if i < 0 {
			return false, nil
		}
		lf.Leases = slices.Delete(lf.Leases, i, i+1)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("network: detach %s: %w", id, err)
	}
	return nil
}

// GC releases the leases (and removes the veths and port rules) of every container
// not in live, removes port rules tagged with IDs that hold no lease and veths on the
// bridge that belong to no lease. It returns the IDs whose leases were released.
func (m *Manager) GC(ctx context.Context, live []string) ([]string, error) {
	keep := make(map[string]bool, len(live))
	for _, id := range live {
		keep[id] = true
	}
	var removed []string
	err := m.store.withLock(ctx, func(lf *leaseFile) (bool, error) {
		kept := lf.Leases[:0:0]
		for i := range lf.Leases {
			l := lf.Leases[i]
			if keep[l.ID] {
				kept = append(kept, l)
				continue
			}
			if err := m.teardown(l.ID, &l); err != nil {
				return false, err
			}
			removed = append(removed, l.ID)
		}
		lf.Leases = kept
		leased := make(map[string]bool, len(kept))
		veths := make(map[string]bool, len(kept))
		for _, l := range kept {
			leased[l.ID] = true
			veths[l.Veth] = true
		}
		if err := m.withNFT(func(n *nftRules) error {
			return n.delPorts(func(id string) bool { return !leased[id] })
		}); err != nil {
			return false, err
		}
		if err := m.deleteStrayVeths(veths); err != nil {
			return false, err
		}
		return len(removed) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("network: gc: %w", err)
	}
	return removed, nil
}

// Cleanup removes the bridge and the nftables table if no lease is left. It is for
// shutdown and tests; the next Attach recreates both.
func (m *Manager) Cleanup(ctx context.Context) error {
	err := m.store.withLock(ctx, func(lf *leaseFile) (bool, error) {
		if len(lf.Leases) != 0 {
			return false, fmt.Errorf("%d leases still held", len(lf.Leases))
		}
		if err := m.withNFT(func(n *nftRules) error { return n.deleteTable() }); err != nil {
			return false, err
		}
		m.baseWritten.Store(false)
		h, err := m.hostHandle()
		if err != nil {
			return false, err
		}
		defer h.Close()
		if err := deleteLink(h, m.cfg.Bridge); err != nil {
			return false, err
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("network: cleanup: %w", err)
	}
	return nil
}

func (m *Manager) hostHandle() (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(m.hostNS, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle for host netns: %w", err)
	}
	return h, nil
}

func (m *Manager) withNFT(fn func(n *nftRules) error) error {
	n, err := newNFT(int(m.hostNS), m.cfg.Table, m.cfg.Bridge, m.cfg.Subnet)
	if err != nil {
		return err
	}
	return fn(n)
}

// setup does everything for one lease; on failure it undoes what it did.
func (m *Manager) setup(l lease, netnsPath string) (err error) {
	if netnsPath == "" {
		return errors.New("bridge mode needs the container's netns path")
	}
	cns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open container netns %s: %w", netnsPath, err)
	}
	defer cns.Close()
	if cns.Equal(m.hostNS) {
		return errors.New("container netns is the host netns (use host mode)")
	}
	h, err := m.hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()

	br, err := m.ensureBridge(h)
	if err != nil {
		return err
	}
	if err := m.withNFT(func(n *nftRules) error {
		if m.baseWritten.Load() {
			if ok, err := n.tableExists(); err != nil || ok {
				return err
			}
		}
		if err := n.ensureBase(); err != nil {
			return err
		}
		m.baseWritten.Store(true)
		return nil
	}); err != nil {
		return err
	}

	// A link with this name can only be a leftover of a lease lost in a crash.
	if err := deleteLink(h, l.Veth); err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: l.Veth, MTU: m.cfg.MTU, MasterIndex: br.Attrs().Index},
		PeerName:      ContainerInterface,
		PeerNamespace: netlink.NsFd(cns),
		PeerMTU:       uint32(m.cfg.MTU),
	}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s (peer %s in container netns): %w", l.Veth, ContainerInterface, err)
	}
	defer func() {
		if err != nil {
			_ = deleteLink(h, l.Veth)
		}
	}()
	hv, err := h.LinkByName(l.Veth)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", l.Veth, err)
	}
	if hv.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMaster(hv, br); err != nil {
			return fmt.Errorf("attach %s to %s: %w", l.Veth, m.cfg.Bridge, err)
		}
	}
	// Hairpin mode lets a container reach its own published port through a host
	// address: with br_netfilter the DNATed packet is bridged back out of the port it
	// came in on (Docker does the same without its userland proxy).
	if err := h.LinkSetHairpin(hv, true); err != nil {
		return fmt.Errorf("set hairpin mode on %s: %w", l.Veth, err)
	}
	if err := h.LinkSetUp(hv); err != nil {
		return fmt.Errorf("set %s up: %w", l.Veth, err)
	}

	if err := m.configureContainer(cns, l.IP); err != nil {
		return err
	}
	if err := m.withNFT(func(n *nftRules) error { return n.addPorts(l.ID, l.IP, l.Ports) }); err != nil {
		return err
	}
	return nil
}

func (m *Manager) configureContainer(cns netns.NsHandle, ip netip.Addr) error {
	ch, err := netlink.NewHandleAt(cns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle for container netns: %w", err)
	}
	defer ch.Close()
	lo, err := ch.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("container lo: %w", err)
	}
	if err := ch.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set container lo up: %w", err)
	}
	eth, err := ch.LinkByName(ContainerInterface)
	if err != nil {
		return fmt.Errorf("container %s: %w", ContainerInterface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(m.cfg.Subnet.Bits(), 32)}}
	if err := ch.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("add %s to container %s: %w", addr.IPNet, ContainerInterface, err)
	}
	if err := ch.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set container %s up: %w", ContainerInterface, err)
	}
	gw := m.Gateway()
	if err := ch.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice(), Scope: netlink.SCOPE_UNIVERSE}); err != nil {
		return fmt.Errorf("add default route via %s: %w", gw, err)
	}
	return nil
}

// ensureBridge creates the bridge with the gateway address if needed, brings it up
// and sets the sysctls NAT needs (ip_forward, route_localnet on the bridge).
func (m *Manager) ensureBridge(h *netlink.Handle) (netlink.Link, error) {
	name := m.cfg.Bridge
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: m.cfg.MTU}}
		if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return nil, fmt.Errorf("find bridge %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return nil, fmt.Errorf("link %s exists and is a %s, not a bridge", name, link.Type())
	}
	gw := m.Gateway()
	want := &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(m.cfg.Subnet.Bits(), 32)}
	addrs, err := h.AddrList(link, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	has := false
	for _, a := range addrs {
		if a.IPNet.String() == want.String() {
			has = true
		}
	}
	if !has {
		if err := h.AddrAdd(link, &netlink.Addr{IPNet: want}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add %s to %s: %w", want, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", name, err)
	}
	err = inNetNS(m.hostNS, func() error {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		return writeSysctl("net/ipv4/conf/"+name+"/route_localnet", "1")
	})
	if err != nil {
		return nil, err
	}
	return link, nil
}

func (m *Manager) teardown(id string, l *lease) error {
	if l != nil {
		h, err := m.hostHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		if err := deleteLink(h, l.Veth); err != nil {
			return err
		}
		if len(l.Ports) == 0 {
			// Rules are only ever added with a lease's ports; leftovers of a crash
			// are removed by GC.
			return nil
		}
	}
	return m.withNFT(func(n *nftRules) error {
		return n.delPorts(func(x string) bool { return x == id })
	})
}

// deleteStrayVeths removes veths enslaved to the bridge whose names are ours but
// belong to no lease.
func (m *Manager) deleteStrayVeths(leased map[string]bool) error {
	h, err := m.hostHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	br, err := h.LinkByName(m.cfg.Bridge)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find bridge: %w", err)
	}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index || l.Type() != "veth" || leased[a.Name] || !isOurVeth(a.Name) {
			continue
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete stray veth %s: %w", a.Name, err)
		}
	}
	return nil
}

func isOurVeth(name string) bool {
	if len(name) != 10 || name[:2] != "cn" {
		return false
	}
	for _, c := range name[2:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func deleteLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

func validIfname(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return false
		}
	}
	return true
}

func loopbackUp(netnsPath string) error {
	if netnsPath == "" {
		return errors.New("mode none needs the container's netns path")
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return fmt.Errorf("open container netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle for container netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("container lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set container lo up: %w", err)
	}
	return nil
}

// inNetNS runs fn on a dedicated OS thread switched into ns (for /proc/sys/net,
// which follows the opening thread's namespace). If the thread cannot be switched
// back it stays locked, so the Go runtime discards it.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return to original netns: %w", err)
			return
		}
		goruntime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func writeSysctl(key, value string) error {
	p := "/proc/sys/" + key
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
