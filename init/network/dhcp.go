//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// requestedOptions are the options the client asks for.
func requestedOptions() []dhcpv4.OptionCode {
	return []dhcpv4.OptionCode{
		dhcpv4.OptionSubnetMask,
		dhcpv4.OptionRouter,
		dhcpv4.OptionClasslessStaticRoute,
		dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName,
		dhcpv4.OptionDNSDomainSearchList,
		dhcpv4.OptionHostName,
		dhcpv4.OptionNTPServers,
		dhcpv4.OptionInterfaceMTU,
		dhcpv4.OptionIPAddressLeaseTime,
		dhcpv4.OptionRenewTimeValue,
		dhcpv4.OptionRebindingTimeValue,
	}
}

// Backoff of DHCP discovery after failures.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// runDHCP runs the DHCPv4 client on l until ctx ends: DORA, apply, renew at
// T1 (retrying, broadcast, until the lease runs out), start over on NAK or
// expiry, release on the way out. Renewals and rebinds both go out as
// broadcast requests on the raw socket, which any server may answer.
func (m *Manager) runDHCP(ctx context.Context, h *netlink.Handle, l netlink.Link, itf Interface, st *linkState) {
	name := st.name
	if itf.MTU > 0 {
		if err := h.LinkSetMTU(l, itf.MTU); err != nil {
			m.o.Logf("%s: set mtu %d: %v", name, itf.MTU, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		m.o.Logf("%s: set up: %v", name, err)
	}
	waitCarrier(ctx, h, l, 3*time.Second)
	c, err := m.dhcpClient(ctx, l)
	if err != nil {
		if ctx.Err() == nil {
			m.o.Logf("%s: %v", name, err)
		}
		return
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{dhcpv4.WithRequestedOptions(requestedOptions()...)}
	proto := protoDHCP

	var cur *Plan
	deconfigure := func() {
		if err := unapply(h, l, cur, proto); err != nil {
			m.o.Logf("%v", err)
		}
		cur = nil
		m.setPlan(st, nil)
	}
	// accept applies a lease; it reports false if the lease is unusable.
	accept := func(lease *nclient4.Lease, verb string) bool {
		p, err := PlanFromLease(lease.ACK)
		if err != nil {
			m.o.Logf("%s: %v", name, err)
			return false
		}
		if itf.MTU > 0 {
			p.MTU = itf.MTU // the config wins over the lease
		}
		if err := apply(h, l, cur, p, proto); err != nil {
			m.o.Logf("%v", err)
		}
		changed := cur == nil || describe(name, cur) != describe(name, p)
		cur = p
		m.setPlan(st, p)
		if changed {
			m.o.Logf("%s", describe(name, p))
		} else {
			m.o.Logf("%s: %s %s (lease %s)", name, verb, p.Addrs[0], fmtDuration(p.Times.Lease))
		}
		return true
	}

	backoff := minBackoff
	failures := 0
	for ctx.Err() == nil {
		lease, err := c.Request(ctx, mods...)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			if failures == 1 || backoff == maxBackoff {
				m.o.Logf("%s: no DHCP lease yet (retrying): %v", name, err)
			}
			if !sleep(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff, failures = minBackoff, 0
		if !accept(lease, "bound") {
			if !sleep(ctx, minBackoff) {
				break
			}
			continue
		}
		lease = m.keepLease(ctx, c, lease, mods, accept)
		if ctx.Err() != nil {
			if lease != nil && cur != nil {
				if err := m.release(c, lease, cur); err != nil {
					m.o.Logf("%s: release: %v", name, err)
				} else {
					m.o.Logf("%s: released %s", name, cur.Addrs[0])
				}
			}
			break
		}
		m.o.Logf("%s: lease lost, starting over", name)
		deconfigure()
	}
	if cur != nil {
		deconfigure()
	}
}

// release sends DHCPRELEASE to the server, unicast from the leased address
// (the raw socket's source 0.0.0.0 makes a unicast a martian the server's
// kernel drops); if that socket cannot be had, through the raw socket.
func (m *Manager) release(c *nclient4.Client, lease *nclient4.Lease, p *Plan) error {
	if !p.Server.IsValid() {
		return errors.New("lease has no server identifier")
	}
	msg, err := dhcpv4.NewReleaseFromACK(lease.ACK)
	if err != nil {
		return fmt.Errorf("build release: %w", err)
	}
	err = inNetNS(m.o.NetNS, func() error {
		local := &net.UDPAddr{IP: p.Addrs[0].Addr().AsSlice(), Port: nclient4.ClientPort}
		conn, err := net.DialUDP("udp4", local, &net.UDPAddr{IP: p.Server.AsSlice(), Port: nclient4.ServerPort})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write(msg.ToBytes())
		return err
	})
	if err != nil {
		return c.Release(lease)
	}
	return nil
}

// waitCarrier waits up to limit for l to report carrier, so that the first
// DISCOVER is not lost on a link that is just coming up.
func waitCarrier(ctx context.Context, h *netlink.Handle, l netlink.Link, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		cur, err := h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return
		}
		if linkCarrier(cur.Attrs()) {
			return
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return
		}
	}
}

// keepLease renews lease from T1 on until ctx ends (it returns the lease to
// release) or the lease is lost (NAK or expiry: it returns nil).
func (m *Manager) keepLease(ctx context.Context, c *nclient4.Client, lease *nclient4.Lease, mods []dhcpv4.Modifier, accept func(*nclient4.Lease, string) bool) *nclient4.Lease {
	for {
		t := leaseTimes(lease.ACK)
		if t.Infinite {
			<-ctx.Done()
			return lease
		}
		bound := lease.CreationTime
		for {
			wait, ok := renewWait(time.Now(), bound, t)
			if !ok {
				return nil // expired
			}
			if !sleep(ctx, wait) {
				return lease
			}
			rctx, cancel := context.WithDeadline(ctx, bound.Add(t.Lease))
			next, err := c.Renew(rctx, lease, mods...)
			cancel()
			if ctx.Err() != nil {
				return lease
			}
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) {
				return nil
			}
			if err != nil {
				continue // retry per renewWait until the lease runs out
			}
			if !accept(next, "renewed") {
				return nil
			}
			lease = next
			break
		}
	}
}

// renewWait says how long to wait before the next renewal attempt of a lease
// bound at bound: until T1; after it, half the time left to T2 (renewing),
// then half the time left to expiry (rebinding), at least minRetry (but not
// past expiry). ok is false once the lease has expired.
func renewWait(now, bound time.Time, t LeaseTimes) (time.Duration, bool) {
	t1, t2, exp := bound.Add(t.T1), bound.Add(t.T2), bound.Add(t.Lease)
	if !now.Before(exp) {
		return 0, false
	}
	if now.Before(t1) {
		return t1.Sub(now), true
	}
	minRetry := max(min(time.Minute, t.Lease/10), time.Second)
	next := exp
	if now.Before(t2) {
		next = t2
	}
	w := max(next.Sub(now)/2, minRetry)
	return min(w, exp.Sub(now)), true
}

// dhcpClient opens the raw DHCP socket on l (in the manager's netns).
func (m *Manager) dhcpClient(ctx context.Context, l netlink.Link) (*nclient4.Client, error) {
	name := l.Attrs().Name
	var conn net.PacketConn
	var err error
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, maxBackoff) {
		err = inNetNS(m.o.NetNS, func() error {
			var err error
			conn, err = nclient4.NewRawUDPConn(name, nclient4.ClientPort)
			return err
		})
		if err == nil {
			break
		}
		if !sleep(ctx, wait) {
			return nil, fmt.Errorf("dhcp socket: %w", err)
		}
	}
	c, err := nclient4.NewWithConn(conn, l.Attrs().HardwareAddr, nclient4.WithTimeout(m.o.DHCPTimeout), nclient4.WithRetry(3))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("dhcp client: %w", err)
	}
	return c, nil
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
