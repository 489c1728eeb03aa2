package netconf

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    *Config
		wantErr string
	}{
		{name: "empty", yaml: "", want: &Config{}},
		{name: "dhcp by name", yaml: "interfaces:\n  - {name: eth0, dhcp: true}\nhostname_from_dhcp: true\n",
			want: &Config{Interfaces: []Interface{{Name: "eth0", DHCP: true}}, HostnameFromDHCP: true}},
		{name: "static", yaml: `
interfaces:
  - mac: "52:54:00:12:34:56"
    addresses: [10.0.0.5/24, "fd00::5/64"]
    gateway: 10.0.0.1
    dns: [10.0.0.1]
    routes: [{to: 10.1.0.0/16, via: 10.0.0.2}]
    mtu: 1400
dns: [1.1.1.1]
search: [example.com]
ntp: [pool.ntp.org, 10.0.0.1]
`, want: &Config{
			Interfaces: []Interface{{MAC: "52:54:00:12:34:56", Addresses: []string{"10.0.0.5/24", "fd00::5/64"}, Gateway: "10.0.0.1",
				DNS: []string{"10.0.0.1"}, Routes: []Route{{To: "10.1.0.0/16", Via: "10.0.0.2"}}, MTU: 1400}},
			DNS: []string{"1.1.1.1"}, Search: []string{"example.com"}, NTP: []string{"pool.ntp.org", "10.0.0.1"}}},
		{name: "unknown field", yaml: "interfaces: [{name: eth0, dchp: true}]", wantErr: "dchp"},
		{name: "no selector", yaml: "interfaces: [{dhcp: true}]", wantErr: "needs name or mac"},
		{name: "bad glob", yaml: "interfaces: [{name: 'eth[', dhcp: true}]", wantErr: "not a link name or glob"},
		{name: "bad mac", yaml: "interfaces: [{mac: zz, dhcp: true}]", wantErr: "not an ethernet address"},
		{name: "dhcp and static", yaml: "interfaces: [{name: eth0, dhcp: true, addresses: [10.0.0.5/24]}]", wantErr: "exclusive"},
		{name: "bad address", yaml: "interfaces: [{name: eth0, addresses: [10.0.0.5]}]", wantErr: "not an address/prefix"},
		{name: "gateway without address", yaml: "interfaces: [{name: eth0, gateway: 10.0.0.1}]", wantErr: "needs static addresses"},
		{name: "bad route", yaml: "interfaces: [{name: eth0, addresses: [10.0.0.5/24], routes: [{to: nowhere, via: 10.0.0.1}]}]", wantErr: "routes[0]"},
		{name: "mixed route", yaml: "interfaces: [{name: eth0, addresses: [10.0.0.5/24], routes: [{to: 10.1.0.0/16, via: 'fd00::1'}]}]", wantErr: "mixes address families"},
		{name: "bad mtu", yaml: "interfaces: [{name: eth0, dhcp: true, mtu: 20}]", wantErr: "mtu 20"},
		{name: "bad dns", yaml: "dns: [dns.example]", wantErr: "not an IP address"},
		{name: "bad search", yaml: "search: ['a b']", wantErr: "not a domain name"},
		{name: "bad ntp", yaml: "ntp: ['-x-']", wantErr: "neither an address nor a host name"},
		{name: "too big", yaml: "search: [" + strings.Repeat("a,", MaxConfigSize) + "]", wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.yaml))
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
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func mac(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

func TestAssign(t *testing.T) {
	lo := LinkInfo{Index: 1, Name: "lo", Loopback: true, Kind: "device"}
	eth0 := LinkInfo{Index: 2, Name: "eth0", MAC: mac("52:54:00:00:00:01"), Kind: "device", Ether: true}
	eth1 := LinkInfo{Index: 3, Name: "eth1", MAC: mac("52:54:00:00:00:02"), Kind: "device", Ether: true}
	veth := LinkInfo{Index: 4, Name: "veth0", MAC: mac("52:54:00:00:00:03"), Kind: "veth", Ether: true}
	br := LinkInfo{Index: 5, Name: "cairn0", MAC: mac("52:54:00:00:00:04"), Kind: "bridge", Ether: true}
	static := Interface{Name: "eth1", Addresses: []string{"10.0.0.5/24"}}
	tests := []struct {
		name  string
		cfg   *Config
		links []LinkInfo
		taken map[int]bool
		want  map[int]Interface
	}{
		{name: "default first ethernet", cfg: Default(), links: []LinkInfo{lo, br, veth, eth1, eth0}, want: map[int]Interface{2: DefaultInterface()}},
		{name: "default no NIC yet", cfg: Default(), links: []LinkInfo{lo, veth, br}, want: map[int]Interface{}},
		{name: "default once", cfg: Default(), links: []LinkInfo{lo, eth0, eth1}, taken: map[int]bool{2: true}, want: map[int]Interface{}},
		{name: "nil config is default", cfg: nil, links: []LinkInfo{eth1}, want: map[int]Interface{3: DefaultInterface()}},
		{name: "glob", cfg: &Config{Interfaces: []Interface{{Name: "eth*", DHCP: true}}}, links: []LinkInfo{lo, eth0, eth1, veth},
			want: map[int]Interface{2: {Name: "eth*", DHCP: true}, 3: {Name: "eth*", DHCP: true}}},
		{name: "first entry wins", cfg: &Config{Interfaces: []Interface{static, {Name: "*", DHCP: true}}}, links: []LinkInfo{lo, eth0, eth1},
			want: map[int]Interface{2: {Name: "*", DHCP: true}, 3: static}},
		{name: "by mac", cfg: &Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:02", DHCP: true}}}, links: []LinkInfo{eth0, eth1},
			want: map[int]Interface{3: {MAC: "52:54:00:00:00:02", DHCP: true}}},
		{name: "mac upper case", cfg: &Config{Interfaces: []Interface{{MAC: "52:54:00:00:00:0A", DHCP: true}}},
			links: []LinkInfo{{Index: 7, Name: "x", MAC: mac("52:54:00:00:00:0a")}}, want: map[int]Interface{7: {MAC: "52:54:00:00:00:0A", DHCP: true}}},
		{name: "name and mac both needed", cfg: &Config{Interfaces: []Interface{{Name: "eth0", MAC: "52:54:00:00:00:02", DHCP: true}}},
			links: []LinkInfo{eth0, eth1}, want: map[int]Interface{}},
		{name: "never lo", cfg: &Config{Interfaces: []Interface{{Name: "*", DHCP: true}}}, links: []LinkInfo{lo}, want: map[int]Interface{}},
		{name: "taken skipped", cfg: &Config{Interfaces: []Interface{{Name: "eth*", DHCP: true}}}, links: []LinkInfo{eth0, eth1},
			taken: map[int]bool{2: true}, want: map[int]Interface{3: {Name: "eth*", DHCP: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.cfg.Assign(tt.links, tt.taken); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Assign = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseConfig: a machine config comes from outside (fw_cfg, a config
// drive, metadata); parsing and validating must not panic, and what
// validates must yield plans.
func FuzzParse(f *testing.F) {
	f.Add([]byte("interfaces:\n  - {name: eth0, dhcp: true}\n"))
	f.Add([]byte("interfaces: [{mac: '52:54:00:12:34:56', addresses: [10.0.0.5/24, 'fd00::1/64'], gateway: 10.0.0.1, routes: [{to: default, via: 'fd00::2'}], mtu: 1400}]\ndns: [1.1.1.1]\nsearch: [a.b]\nntp: [x.y]\n"))
	f.Add([]byte("interfaces: [{name: 'e*', addresses: [10.0.0.5/32], gateway: 192.168.1.1}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		c.Assign([]LinkInfo{{Index: 2, Name: "eth0", MAC: mac("52:54:00:12:34:56"), Kind: "device", Ether: true}}, nil)
	})
}
