package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Mode is a container's network mode.
type Mode string

// Network modes.
const (
	// ModeNone gives the container its own network namespace with only loopback.
	ModeNone Mode = "none"
	// ModeHost shares the host's network namespace; nothing is set up.
	ModeHost Mode = "host"
	// ModeBridge (the default) connects the container's namespace to the cairn0
	// bridge through a veth pair, with NAT and published ports.
	ModeBridge Mode = "bridge"
)

// ParseMode parses a network mode name; "" means ModeBridge.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case "", ModeBridge:
		return ModeBridge, nil
	case ModeNone, ModeHost:
		return Mode(s), nil
	}
	return "", fmt.Errorf("unknown network mode %q (want none, host or bridge)", s)
}

// Protocols accepted in a PortMapping.
const (
	TCP = "tcp"
	UDP = "udp"
)

// PortMapping publishes a container port on the host.
type PortMapping struct {
	// Protocol is "tcp" (default when empty) or "udp".
	Protocol string `json:"proto"`
	// HostIP restricts the mapping to one host address; the zero value means every
	// local address of the host, 127.0.0.1 included.
	HostIP        netip.Addr `json:"hostIP,omitzero"`
	HostPort      uint16     `json:"hostPort"`
	ContainerPort uint16     `json:"containerPort"`
}

func (p PortMapping) String() string {
	h := ""
	if p.HostIP.IsValid() {
		h = p.HostIP.String() + ":"
	}
	return fmt.Sprintf("%s%d->%d/%s", h, p.HostPort, p.ContainerPort, p.proto())
}

func (p PortMapping) proto() string {
	if p.Protocol == "" {
		return TCP
	}
	return p.Protocol
}

type portKey struct {
	proto string
	port  uint16
}

// key identifies the host side of a mapping. A host port is reserved per protocol
// regardless of HostIP: a wildcard and a specific mapping of the same port would
// shadow each other.
func (p PortMapping) key() portKey { return portKey{p.proto(), p.HostPort} }

func validatePorts(ports []PortMapping) error {
	seen := make(map[portKey]bool, len(ports))
	for _, p := range ports {
		switch p.Protocol {
		case "", TCP, UDP:
		default:
			return fmt.Errorf("port %d: unknown protocol %q (want tcp or udp)", p.HostPort, p.Protocol)
		}
		if p.HostPort == 0 || p.ContainerPort == 0 {
			return fmt.Errorf("port mapping %s: ports must be 1-65535", p)
		}
		if p.HostIP.IsValid() && (!p.HostIP.Is4() || p.HostIP.IsUnspecified()) {
			return fmt.Errorf("port mapping %s: host IP must be a specific IPv4 address", p)
		}
		if p.HostIP.Zone() != "" {
			return fmt.Errorf("port mapping %s: host IP has a zone", p)
		}
		if seen[p.key()] {
			return fmt.Errorf("host port %d/%s published twice", p.HostPort, p.proto())
		}
		seen[p.key()] = true
	}
	return nil
}

// Result describes a container's attached network.
type Result struct {
	Mode Mode
	ID   string
	// The fields below are set in ModeBridge only.

	// IP is the container's address on the bridge, Subnet the bridge's network and
	// Gateway the bridge's (host side) address, which is the container's default route.
	IP      netip.Addr
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Interface is the container-side link name ("eth0"), HostVeth the host side.
	Interface string
	HostVeth  string
	Ports     []PortMapping
}

// ValidateID checks a container ID used as a lease key: 1-128 characters from
// [A-Za-z0-9_.-], not starting with '.' or '-'.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("empty container id")
	}
	if len(id) > 128 {
		return fmt.Errorf("container id is %d characters, limit 128", len(id))
	}
	if id[0] == '.' || id[0] == '-' {
		return fmt.Errorf("container id %q starts with %q", id, id[0])
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_.-", c)) {
			return fmt.Errorf("container id %q: invalid character %q", id, c)
		}
	}
	return nil
}

// checkSubnet accepts a masked IPv4 prefix of length 8..30 (room for gateway + one host).
func checkSubnet(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("subnet %s: want an IPv4 prefix", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("subnet %s: host bits set (want %s)", p, p.Masked())
	}
	if p.Bits() < 8 || p.Bits() > 30 {
		return fmt.Errorf("subnet %s: prefix length must be 8-30", p)
	}
	if p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsUnspecified() {
		return fmt.Errorf("subnet %s: not a unicast range", p)
	}
	return nil
}

func addrToU32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func u32ToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// gatewayOf is the first host address of the subnet: the bridge's address.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Addr().Next() }

// hostRange is the range of container addresses: gateway+1 .. broadcast-1.
func hostRange(p netip.Prefix) (first, last netip.Addr) {
	base := addrToU32(p.Addr())
	size := uint32(1) << (32 - p.Bits())
	return u32ToAddr(base + 2), u32ToAddr(base + size - 2)
}

// usable reports whether a is an address that may be leased to a container.
func usable(p netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !p.Contains(a) {
		return false
	}
	first, last := hostRange(p)
	return !a.Less(first) && !last.Less(a)
}

// vethName derives the host-side veth name from the leased address; leases are
// unique, so names are too (also across managers with different subnets), and a
// stale link of a dead lease with the same address is recognisable.
// "cn" + 8 hex digits = 10 characters (IFNAMSIZ is 16).
func vethName(a netip.Addr) string {
	return fmt.Sprintf("cn%08x", addrToU32(a))
}
