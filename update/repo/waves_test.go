package repo

import (
	"reflect"
	"testing"

	"cairn.dev/cairn/update/tuf"
)

func TestParseWaves(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []tuf.Wave
		ok   bool
	}{
		{"", nil, true},
		{"0h:10%,24h:50%,48h:100%", []tuf.Wave{{StartAfterHours: 0, Percent: 10}, {StartAfterHours: 24, Percent: 50}, {StartAfterHours: 48, Percent: 100}}, true},
		{"0h:5%, 2d:100%", []tuf.Wave{{StartAfterHours: 0, Percent: 5}, {StartAfterHours: 48, Percent: 100}}, true},
		{"0h:100%", []tuf.Wave{{StartAfterHours: 0, Percent: 100}}, true},
		{"0h:10%,24h:50%", nil, false},  // never reaches 100%
		{"24h:10%,0h:100%", nil, false}, // start goes back
		{"0h:50%,24h:10%", nil, false},  // percentage goes down
		{"0:10%", nil, false},
		{"1.5h:100%", nil, false},
		{"0h:10", nil, false},
		{"0h:0.5%", nil, false},
		{"0h:101%", nil, false},
		{"-1h:100%", nil, false},
		{"0h", nil, false},
		{"99999999999999d:100%", nil, false},
	} {
		got, err := ParseWaves(tc.in)
		if (err == nil) != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseWaves(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
