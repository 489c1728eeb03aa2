package network

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Chains of the manager's table (family ip).
const (
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPostrouting = "postrouting"
	chainForward     = "forward"
	// chainPorts holds one DNAT rule per published port, tagged with the container
	// ID in the rule's comment; both prerouting and output jump to it for packets
	// addressed to a local address of the host.
	chainPorts = "ports"
)

// commentPrefix marks the rules belonging to a container: "cairn:<id>".
const commentPrefix = "cairn:"

// ctStatusDstNAT is IPS_DST_NAT (bit 5 of the conntrack status, linux/netfilter/nf_conntrack_common.h).
const ctStatusDstNAT = 1 << 5

type nftRules struct {
	conn   *nftables.Conn
	table  *nftables.Table
	bridge string
	subnet netip.Prefix
}

func newNFT(nsFd int, table, bridge string, subnet netip.Prefix) (*nftRules, error) {
	c, err := nftables.New(nftables.WithNetNSFd(nsFd))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &nftRules{
		conn:   c,
		table:  &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4},
		bridge: bridge,
		subnet: subnet,
	}, nil
}

func (n *nftRules) chain(name string) *nftables.Chain {
	return &nftables.Chain{Name: name, Table: n.table}
}

// ensureBase creates the table and chains if needed and (re)writes the base chains'
// rules in one transaction. The ports chain is left alone.
func (n *nftRules) ensureBase() error {
	c := n.conn
	c.AddTable(n.table)
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: chainPrerouting, Table: n.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	out := c.AddChain(&nftables.Chain{Name: chainOutput, Table: n.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Name: chainPostrouting, Table: n.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	fwd := c.AddChain(&nftables.Chain{Name: chainForward, Table: n.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	c.AddChain(&nftables.Chain{Name: chainPorts, Table: n.table})
	for _, ch := range []*nftables.Chain{pre, out, post, fwd} {
		c.FlushChain(ch)
	}

	// fib daddr type local jump ports
	for _, ch := range []*nftables.Chain{pre, out} {
		c.AddRule(&nftables.Rule{Table: n.table, Chain: ch, Exprs: []expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPorts},
		}})
	}

	masq := &expr.Masq{}
	// ip saddr SUBNET oifname != BRIDGE masquerade: outbound traffic of containers.
	c.AddRule(&nftables.Rule{Table: n.table, Chain: post, Exprs: concat(
		matchSaddr(n.subnet), matchIfname(unix.NFT_META_OIFNAME, expr.CmpOpNeq, n.bridge), masq)})
	// oifname BRIDGE ip saddr 127.0.0.0/8 masquerade: the host's own connections to
	// 127.0.0.1:HOSTPORT, DNATed in output, leave with a loopback source that the
	// container could not answer (needs route_localnet on the bridge).
	c.AddRule(&nftables.Rule{Table: n.table, Chain: post, Exprs: concat(
		matchIfname(unix.NFT_META_OIFNAME, expr.CmpOpEq, n.bridge),
		matchSaddr(netip.MustParsePrefix("127.0.0.0/8")), masq)})
	// oifname BRIDGE ct status dnat ip saddr SUBNET masquerade: hairpin, a container
	// reaching a published port of the host that leads back onto the bridge.
	c.AddRule(&nftables.Rule{Table: n.table, Chain: post, Exprs: concat(
		matchIfname(unix.NFT_META_OIFNAME, expr.CmpOpEq, n.bridge),
		matchCtStatus(ctStatusDstNAT), matchSaddr(n.subnet), masq)})

	acceptV := &expr.Verdict{Kind: expr.VerdictAccept}
	// iifname BRIDGE accept
	c.AddRule(&nftables.Rule{Table: n.table, Chain: fwd, Exprs: concat(
		matchIfname(unix.NFT_META_IIFNAME, expr.CmpOpEq, n.bridge), acceptV)})
	// oifname BRIDGE ct state established,related accept
	c.AddRule(&nftables.Rule{Table: n.table, Chain: fwd, Exprs: concat(
		matchIfname(unix.NFT_META_OIFNAME, expr.CmpOpEq, n.bridge),
		matchCtState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), acceptV)})
	// oifname BRIDGE ct status dnat accept: published ports reached from outside.
	c.AddRule(&nftables.Rule{Table: n.table, Chain: fwd, Exprs: concat(
		matchIfname(unix.NFT_META_OIFNAME, expr.CmpOpEq, n.bridge),
		matchCtStatus(ctStatusDstNAT), acceptV)})

	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: set up table %s: %w", n.table.Name, err)
	}
	return nil
}

// addPorts adds the DNAT rules of one container in one transaction.
func (n *nftRules) addPorts(id string, ip netip.Addr, ports []PortMapping) error {
	if len(ports) == 0 {
		return nil
	}
	ud := userdata.AppendString(nil, userdata.TypeComment, commentPrefix+id)
	for _, p := range ports {
		n.conn.AddRule(&nftables.Rule{Table: n.table, Chain: n.chain(chainPorts), UserData: ud, Exprs: dnatExprs(p, ip)})
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: publish ports of %s: %w", id, err)
	}
	return nil
}

// delPorts removes every port rule whose tag names an ID that match accepts. A
// missing table or chain means there is nothing to delete.
func (n *nftRules) delPorts(match func(id string) bool) error {
	rules, err := n.conn.GetRules(n.table, n.chain(chainPorts))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("nftables: list %s: %w", chainPorts, err)
	}
	del := 0
	for _, r := range rules {
		c, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		if !ok || !strings.HasPrefix(c, commentPrefix) || !match(strings.TrimPrefix(c, commentPrefix)) {
			continue
		}
		if err := n.conn.DelRule(r); err != nil {
			return fmt.Errorf("nftables: delete rule: %w", err)
		}
		del++
	}
	if del == 0 {
		return nil
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete %d port rules: %w", del, err)
	}
	return nil
}

func (n *nftRules) tableExists() (bool, error) {
	tables, err := n.conn.ListTablesOfFamily(n.table.Family)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == n.table.Name }), nil
}

// deleteTable removes the manager's table; a missing table is not an error.
func (n *nftRules) deleteTable() error {
	ok, err := n.tableExists()
	if err != nil || !ok {
		return err
	}
	n.conn.DelTable(n.table)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", n.table.Name, err)
	}
	return nil
}

func dnatExprs(p PortMapping, ip netip.Addr) []expr.Any {
	var e []expr.Any
	if p.HostIP.IsValid() {
		a := p.HostIP.As4()
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
	}
	proto := byte(unix.IPPROTO_TCP)
	if p.proto() == UDP {
		proto = unix.IPPROTO_UDP
	}
	dst := ip.As4()
	e = append(e,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.HostPort)},
		&expr.Immediate{Register: 1, Data: dst[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(p.ContainerPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
	return e
}

func concat(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch v := p.(type) {
		case []expr.Any:
			out = append(out, v...)
		case expr.Any:
			out = append(out, v)
		}
	}
	return out
}

func matchSaddr(p netip.Prefix) []expr.Any {
	a := p.Addr().As4()
	mask := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func matchIfname(key uint32, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKey(key), Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(name)},
	}
}

func matchCtStatus(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func matchCtState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}
