//go:build linux

package network

import (
	"errors"
	"fmt"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetNS runs fn in network namespace ns, or right here if ns is nil (PID 1
// uses its own namespace; tests pass one they created). Sockets that fn
// opens stay in ns. fn runs on a dedicated, locked OS thread; if the thread
// cannot be switched back it stays locked, so the Go runtime discards it.
func inNetNS(ns *netns.NsHandle, fn func() error) error {
	if ns == nil {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("network: panic in netns call: %v", r)
			}
		}()
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("network: get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(*ns); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("network: enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("network: return to original netns: %w", err))
			return
		}
		goruntime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// newHandle opens a route-only netlink handle in ns (nil: the current one).
// Only NETLINK_ROUTE: a minimal kernel has no xfrm or netfilter netlink.
func newHandle(ns *netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	var err error
	if ns == nil {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandleAt(*ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("network: netlink: %w", err)
	}
	return h, nil
}
