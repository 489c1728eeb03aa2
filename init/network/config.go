//go:build linux

// Package network brings up the machine's network in PID 1: loopback, the
// interfaces named by the config (DHCPv4 with renewals, or static addresses),
// /etc/resolv.conf and /etc/hosts, a "network online" signal, and the clock
// kept in step by NTP. Everything is applied with netlink; nothing here blocks
// READY. The config itself lives in the dependency-free package netconf.
package network

import (
	"net/netip"

	"cairn.dev/cairn/os/netconf"
)

// Config types, from netconf.
type (
	Config    = netconf.Config
	Interface = netconf.Interface
	Route     = netconf.Route
	LinkInfo  = netconf.LinkInfo
)

// Limits of the config.
const (
	MinMTU = netconf.MinMTU
	MaxMTU = netconf.MaxMTU
)

// Default is the default config: DHCP on the first ethernet interface.
func Default() *Config { return netconf.Default() }

// ParseConfig parses and validates a `network:` section.
func ParseConfig(b []byte) (*Config, error) { return netconf.Parse(b) }

func parseAddr(s string) (netip.Addr, error)      { return netconf.ParseAddr(s) }
func parseRouteTo(s string) (netip.Prefix, error) { return netconf.ParseRouteTo(s) }
func validDomain(s string) bool                   { return netconf.ValidDomain(s) }
func validHostname(s string) bool                 { return netconf.ValidHostname(s) }
