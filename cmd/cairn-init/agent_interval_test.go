//go:build !cairn_pid1 && !cairn_early

package main

import (
	"testing"
	"time"

	"cairn.dev/cairn/init/cmdline"
)

func TestIntervalOverride(t *testing.T) {
	for _, c := range []struct {
		cmdline string
		want    time.Duration
		ok      bool
	}{
		{"console=ttyS0 cairn_test.update_interval=5s quiet", 5 * time.Second, true},
		{"cairn_test.update_interval=2m", 2 * time.Minute, true},
		{"console=ttyS0", 0, false},
		{"cairn_test.update_interval=100ms", 0, false},
		{"cairn_test.update_interval=soon", 0, false},
		{"xcairn_test.update_interval=5s", 0, false},
	} {
		p, err := cmdline.Parse(c.cmdline)
		if err != nil {
			t.Fatalf("%q: %v", c.cmdline, err)
		}
		got, ok := intervalOverride(p.Args)
		if got != c.want || ok != c.ok {
			t.Errorf("intervalOverride(%q) = %v, %v; want %v, %v", c.cmdline, got, ok, c.want, c.ok)
		}
	}
}
