//go:build !cairn_pid1 && !cairn_early

package main

import (
	"testing"

	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/update/agent"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1000", 1000, true},
		{"512K", 512 << 10, true},
		{"10M", 10 << 20, true},
		{"2MB", 2 << 20, true},
		{"1G", 1 << 30, true},
		{"0", 0, false},
		{"-1M", 0, false},
		{"M", 0, false},
		{"1.5M", 0, false},
		{"99999999999999G", 0, false},
	}
	for _, tt := range tests {
		got, err := parseRate(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRebootPolicy(t *testing.T) {
	api := &agent.API{URL: "http://server"}
	tests := []struct {
		r    schema.Reboot
		want string
		ok   bool
	}{
		{schema.Reboot{}, "immediate", true},
		{schema.Reboot{Strategy: "immediate"}, "immediate", true},
		{schema.Reboot{Strategy: "window", Window: "Sat,Sun 02:00-04:00", Timezone: "Europe/Berlin"}, "window", true},
		{schema.Reboot{Strategy: "window", Window: "Sat 02:00-04:00", Timezone: "Mars/Base"}, "", false},
		{schema.Reboot{Strategy: "window", Window: "someday"}, "", false},
		{schema.Reboot{Strategy: "fleetlock"}, "fleetlock http://server", true},
		{schema.Reboot{Strategy: "fleetlock", FleetLock: "http://locks"}, "fleetlock http://locks", true},
		{schema.Reboot{Strategy: "later"}, "", false},
	}
	for _, tt := range tests {
		p, err := rebootPolicy(&schema.Update{Reboot: tt.r}, nil, api)
		if (err == nil) != tt.ok {
			t.Errorf("%+v: err = %v, want ok=%v", tt.r, err, tt.ok)
			continue
		}
		if err == nil && len(p.String()) < len(tt.want) || err == nil && p.String()[:len(tt.want)] != tt.want {
			t.Errorf("%+v: policy %s, want %s", tt.r, p, tt.want)
		}
	}
}
