// Package netconf is the machine's network config: plain structs with YAML
// tags for the OS file's (and a machine config's) `network:` section, their
// strict parser and validation, and how entries match links. It depends on
// nothing but the standard library and YAML, so the OS file schema (linked
// into the host CLI too) can embed it; init/network applies it.
package netconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxConfigSize bounds a network config read from outside.
const MaxConfigSize = 64 << 10

// Config is the machine's network: the `network:` section of the OS file (and
// of a machine config). The zero value means the default: DHCP on the first
// ethernet interface.
type Config struct {
	// Interfaces are matched, in order, against the machine's links; the
	// first entry that matches a link configures it.
	Interfaces []Interface `yaml:"interfaces,omitempty"`
	// DNS servers (IP addresses) listed before any learnt by DHCP.
	DNS []string `yaml:"dns,omitempty"`
	// Search domains listed before any learnt by DHCP.
	Search []string `yaml:"search,omitempty"`
	// NTP servers (host names or addresses). Empty: the servers of the DHCP
	// leases, else none.
	NTP []string `yaml:"ntp,omitempty"`
	// HostnameFromDHCP sets the host name from the lease's host name option.
	HostnameFromDHCP bool `yaml:"hostname_from_dhcp,omitempty"`
}

// Interface configures the links it matches.
type Interface struct {
	// Name is a link name or a glob such as "eth*" (path.Match syntax).
	Name string `yaml:"name,omitempty"`
	// MAC is a hardware address; with Name set too, both must match.
	MAC string `yaml:"mac,omitempty"`
	// DHCP runs a DHCPv4 client on the link.
	DHCP bool `yaml:"dhcp,omitempty"`
	// Addresses are static addresses in CIDR form ("10.0.0.5/24").
	Addresses []string `yaml:"addresses,omitempty"`
	// Gateway is the default route's next hop for static addresses.
	Gateway string `yaml:"gateway,omitempty"`
	// DNS servers of this link (static configs).
	DNS []string `yaml:"dns,omitempty"`
	// Routes are extra static routes through this link.
	Routes []Route `yaml:"routes,omitempty"`
	// MTU of the link; 0 keeps the driver's (or the lease's) value.
	MTU int `yaml:"mtu,omitempty"`
}

// Route is a static route: To is a CIDR prefix or "default".
type Route struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
}

// Default is the config used when the OS file has none: DHCP on the first
// ethernet interface.
func Default() *Config { return &Config{} }

// IsDefault reports whether c names no interface (DHCP on the first ethernet
// interface applies).
func (c *Config) IsDefault() bool { return c == nil || len(c.Interfaces) == 0 }

// Parse parses a network section strictly (unknown fields are errors)
// and validates it.
func Parse(b []byte) (*Config, error) {
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("network config: %d bytes, more than %d", len(b), MaxConfigSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("network config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Limits of the config.
const (
	MinMTU = 68
	MaxMTU = 65535
)

// Validate reports every problem of c, joined.
func (c *Config) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("network: "+format, args...))
	}
	for i, itf := range c.Interfaces {
		where := fmt.Sprintf("interfaces[%d]", i)
		if itf.Name == "" && itf.MAC == "" {
			bad("%s: needs name or mac", where)
		}
		if itf.Name != "" {
			if _, err := path.Match(itf.Name, ""); err != nil || strings.ContainsAny(itf.Name, "/ \t\n") || len(itf.Name) > 64 {
				bad("%s: name %q is not a link name or glob", where, itf.Name)
			}
		}
		if itf.MAC != "" {
			if hw, err := net.ParseMAC(itf.MAC); err != nil || len(hw) != 6 {
				bad("%s: mac %q is not an ethernet address", where, itf.MAC)
			}
		}
		if itf.DHCP && len(itf.Addresses) > 0 {
			bad("%s: dhcp and static addresses are exclusive", where)
		}
		if itf.DHCP && itf.Gateway != "" {
			bad("%s: gateway needs static addresses, not dhcp", where)
		}
		for _, a := range itf.Addresses {
			if p, err := netip.ParsePrefix(a); err != nil || p.Addr().IsUnspecified() || p.Addr().Zone() != "" {
				bad("%s: address %q is not an address/prefix such as 10.0.0.5/24", where, a)
			}
		}
		if itf.Gateway != "" {
			if _, err := ParseAddr(itf.Gateway); err != nil {
				bad("%s: gateway: %v", where, err)
			} else if len(itf.Addresses) == 0 {
				bad("%s: gateway needs static addresses", where)
			}
		}
		for _, d := range itf.DNS {
			if _, err := ParseAddr(d); err != nil {
				bad("%s: dns: %v", where, err)
			}
		}
		for j, r := range itf.Routes {
			to, err := ParseRouteTo(r.To)
			if err != nil {
				bad("%s: routes[%d]: %v", where, j, err)
			}
			via, verr := ParseAddr(r.Via)
			if verr != nil {
				bad("%s: routes[%d]: via: %v", where, j, verr)
			}
			if err == nil && verr == nil && r.To != "default" && to.Addr().Is4() != via.Is4() {
				bad("%s: routes[%d]: %s via %s mixes address families", where, j, r.To, r.Via)
			}
		}
		if itf.MTU != 0 && (itf.MTU < MinMTU || itf.MTU > MaxMTU) {
			bad("%s: mtu %d outside %d..%d", where, itf.MTU, MinMTU, MaxMTU)
		}
	}
	for _, d := range c.DNS {
		if _, err := ParseAddr(d); err != nil {
			bad("dns: %v", err)
		}
	}
	for _, s := range c.Search {
		if !ValidDomain(s) {
			bad("search: %q is not a domain name", s)
		}
	}
	for _, s := range c.NTP {
		if _, err := ParseAddr(s); err != nil && !ValidDomain(s) {
			bad("ntp: %q is neither an address nor a host name", s)
		}
	}
	return errors.Join(errs...)
}

// ParseAddr parses an IP address that can be a server or next hop.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.IsUnspecified() || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, nil
}

// ParseRouteTo parses a route destination: a prefix or "default" (IPv4).
func ParseRouteTo(s string) (netip.Prefix, error) {
	if s == "default" {
		return netip.MustParsePrefix("0.0.0.0/0"), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("to %q is not a prefix such as 10.1.0.0/16 or default", s)
	}
	return p.Masked(), nil
}

// ValidDomain reports whether s is a plausible DNS name (RFC 1123 labels, at
// most 253 characters; a trailing dot is allowed).
func ValidDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// ValidHostname reports whether s can be the machine's host name (one or
// more RFC 1123 labels, at most 64 bytes as the kernel allows).
func ValidHostname(s string) bool {
	return len(s) <= 64 && !strings.HasSuffix(s, ".") && !strings.Contains(s, "_") && ValidDomain(s)
}

// LinkInfo is what matching needs to know about a link.
type LinkInfo struct {
	Index int
	Name  string
	MAC   net.HardwareAddr
	// Kind is the netlink link type: "device" for a NIC, "veth", "bridge"...
	Kind string
	// Ether is true for links with ethernet framing.
	Ether bool
	// Loopback is true for lo.
	Loopback bool
}

// physical reports whether l is a NIC (what the default config picks).
func (l LinkInfo) physical() bool { return l.Ether && l.Kind == "device" && !l.Loopback }

// matches reports whether itf selects l.
func (itf Interface) matches(l LinkInfo) bool {
	if l.Loopback {
		return false
	}
	if itf.Name != "" {
		if ok, err := path.Match(itf.Name, l.Name); err != nil || !ok {
			return false
		}
	}
	if itf.MAC != "" {
		hw, err := net.ParseMAC(itf.MAC)
		if err != nil || !bytes.Equal(hw, l.MAC) {
			return false
		}
	}
	return itf.Name != "" || itf.MAC != ""
}

// DefaultInterface is what the default config applies to its one link.
func DefaultInterface() Interface { return Interface{DHCP: true} }

// Assign returns, for each link in links (ordered by index) that c
// configures and that is not in taken, the interface config that applies.
// Under the default config only the first physical ethernet link is chosen,
// and none if one is taken already.
func (c *Config) Assign(links []LinkInfo, taken map[int]bool) map[int]Interface {
	out := map[int]Interface{}
	if c.IsDefault() {
		if len(taken) > 0 {
			return out
		}
		first := -1
		for i, l := range links {
			if l.physical() && (first < 0 || l.Index < links[first].Index) {
				first = i
			}
		}
		if first >= 0 {
			out[links[first].Index] = DefaultInterface()
		}
		return out
	}
	for _, l := range links {
		if taken[l.Index] {
			continue
		}
		for _, itf := range c.Interfaces {
			if itf.matches(l) {
				out[l.Index] = itf
				break
			}
		}
	}
	return out
}
