package tuf

import "testing"

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1.2.10", "1.2.9", 1},
		{"1.2.9", "1.2.10", -1},
		{"1.2.3", "1.2.3", 0},
		{"1.10", "1.9.9", 1},
		{"2", "10", -1},
		{"1.2", "1.2.1", -1},
		{"1.0", "1.0rc1", -1},
		{"1.0~rc1", "1.0", -1},
		{"1.0~rc1", "1.0~rc2", -1},
		{"1.0~~", "1.0~", -1},
		{"1.0.rc1", "1.0.1", -1},
		{"1.0a", "1.0b", -1},
		{"1.0b", "1.0B", 1}, // bytes: 'B' < 'b'
		{"1.02", "1.2", -1}, // runs tie, then bytes: '0' < '2'
		{"1-0", "1.0", -1},  // runs tie, then bytes: '-' < '.'
		{"99999999999999999999999", "99999999999999999999998", 1},
		{"0001", "2", -1},
		{"2026.11.22", "2026.2.1", 1},
		{"v1", "1", -1}, // a number beats a letter
	} {
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestValidVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"1.0.0": true, "2026.11.22-1": true, "1.0~rc1": true, "a": true,
		"": false, "1+3": false, "../1": false, "1/2": false, ".1": false, "-1": false,
		"1 0": false, "12345678901234567890123456789012345678901234567890123456789012345": false,
	} {
		if err := ValidVersion(v); (err == nil) != ok {
			t.Errorf("ValidVersion(%q) = %v, want ok=%v", v, err, ok)
		}
	}
}

func FuzzCompareVersions(f *testing.F) {
	for _, s := range [][3]string{{"1.2.10", "1.2.9", "1.2"}, {"1.0~rc1", "1.0", "1.0a"}, {"1.02", "1.2", "1-2"}, {"", "~", "0"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, c string) {
		ab, ba := CompareVersions(a, b), CompareVersions(b, a)
		if ab != -ba || ab < -1 || ab > 1 {
			t.Fatalf("not antisymmetric: %q vs %q: %d, %d", a, b, ab, ba)
		}
		if (ab == 0) != (a == b) {
			t.Fatalf("CompareVersions(%q, %q) = %d", a, b, ab)
		}
		bc, ac := CompareVersions(b, c), CompareVersions(a, c)
		if ab <= 0 && bc <= 0 && ac > 0 {
			t.Fatalf("not transitive: %q <= %q <= %q but %q > %q", a, b, c, a, c)
		}
		if ab >= 0 && bc >= 0 && ac < 0 {
			t.Fatalf("not transitive: %q >= %q >= %q but %q < %q", a, b, c, a, c)
		}
	})
}
