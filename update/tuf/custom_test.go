package tuf

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func validCustom() Custom {
	return Custom{OS: "hello", Version: "1.2.0", Channel: "stable", MinVersion: "1.0.0",
		Waves:     []Wave{{0, 10}, {24, 50}, {48, 100}},
		Published: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC),
		Kind:      KindRoot, VerityRootHash: testHash, Size: 4096}
}

func TestCustomRoundTrip(t *testing.T) {
	for _, c := range []Custom{
		validCustom(),
		func() Custom { c := validCustom(); c.Kind, c.Slot, c.VerityRootHash = KindUKI, "B", ""; return c }(),
		func() Custom { c := validCustom(); c.Kind, c.Waves, c.MinVersion = KindChunkIndex, nil, ""; return c }(),
	} {
		raw, err := MarshalCustom(c)
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := ParseCustom(raw)
		if err != nil || !ok {
			t.Fatalf("ParseCustom(%s) = %v, %v", raw, ok, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("got %+v, want %+v", got, c)
		}
	}
}

func TestParseCustomNotCairn(t *testing.T) {
	for _, raw := range []string{"", "{}", `{"other": 1}`, "null"} {
		if _, ok, err := ParseCustom([]byte(raw)); ok || err != nil {
			t.Errorf("ParseCustom(%q) = %v, %v; want not ok, no error", raw, ok, err)
		}
	}
}

func TestParseCustomHostile(t *testing.T) {
	mutate := func(f func(m map[string]any)) string {
		raw, err := MarshalCustom(validCustom())
		if err != nil {
			t.Fatal(err)
		}
		var outer map[string]map[string]any
		if err := json.Unmarshal(raw, &outer); err != nil {
			t.Fatal(err)
		}
		f(outer["cairn"])
		out, _ := json.Marshal(outer)
		return string(out)
	}
	for name, raw := range map[string]string{
		"not json":         `{"cairn": `,
		"cairn null":       `{"cairn": null}`,
		"cairn string":     `{"cairn": "x"}`,
		"array":            `[1]`,
		"huge":             `{"x":"` + strings.Repeat("a", maxCustomBytes) + `"}`,
		"bad os":           mutate(func(m map[string]any) { m["os"] = "../etc" }),
		"no os":            mutate(func(m map[string]any) { delete(m, "os") }),
		"bad version":      mutate(func(m map[string]any) { m["version"] = "1+3" }),
		"version slash":    mutate(func(m map[string]any) { m["version"] = "1/../2" }),
		"bad channel":      mutate(func(m map[string]any) { m["channel"] = "Stable Channel" }),
		"bad min":          mutate(func(m map[string]any) { m["min_version"] = " " }),
		"wrong type":       mutate(func(m map[string]any) { m["size"] = "12" }),
		"negative size":    mutate(func(m map[string]any) { m["size"] = -1 }),
		"bad kind":         mutate(func(m map[string]any) { m["kind"] = "kernel" }),
		"root with slot":   mutate(func(m map[string]any) { m["slot"] = "A" }),
		"uki no slot":      mutate(func(m map[string]any) { m["kind"] = "uki"; delete(m, "verity_root_hash") }),
		"uki slot C":       mutate(func(m map[string]any) { m["kind"] = "uki"; m["slot"] = "C"; delete(m, "verity_root_hash") }),
		"no verity":        mutate(func(m map[string]any) { delete(m, "verity_root_hash") }),
		"upper hex":        mutate(func(m map[string]any) { m["verity_root_hash"] = strings.ToUpper(testHash) }),
		"short hex":        mutate(func(m map[string]any) { m["verity_root_hash"] = "abcd" }),
		"no published":     mutate(func(m map[string]any) { delete(m, "published") }),
		"percent 0":        mutate(func(m map[string]any) { m["waves"] = []Wave{{0, 0}} }),
		"percent > 100":    mutate(func(m map[string]any) { m["waves"] = []Wave{{0, 101}} }),
		"fractional":       mutate(func(m map[string]any) { m["waves"] = []map[string]any{{"start_after_hours": 0, "percent": 0.5}} }),
		"negative hours":   mutate(func(m map[string]any) { m["waves"] = []Wave{{-1, 100}} }),
		"huge hours":       mutate(func(m map[string]any) { m["waves"] = []Wave{{1 << 60, 100}} }),
		"waves shrink":     mutate(func(m map[string]any) { m["waves"] = []Wave{{0, 50}, {24, 20}} }),
		"waves same start": mutate(func(m map[string]any) { m["waves"] = []Wave{{0, 50}, {0, 100}} }),
		"trailing":         `{"cairn": {"os":"hello"} {}}`,
	} {
		if _, ok, err := ParseCustom([]byte(raw)); err == nil {
			t.Errorf("%s: ParseCustom(%.80q) = ok %v, no error", name, raw, ok)
		}
	}
}

func TestWaveAllows(t *testing.T) {
	pub := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	v := Version{Published: pub, Waves: []Wave{{0, 10}, {24, 50}, {48, 100}}}
	for _, tc := range []struct {
		seed  float64
		after time.Duration
		want  bool
	}{
		{0.05, 0, true}, {0.2, 0, false}, {0.2, 23 * time.Hour, false}, {0.2, 24 * time.Hour, true},
		{0.7, 47 * time.Hour, false}, {0.999, 48 * time.Hour, true}, {0.05, -time.Hour, false},
	} {
		if got := v.WaveAllows(tc.seed, pub.Add(tc.after)); got != tc.want {
			t.Errorf("seed %v at +%v: %v, want %v", tc.seed, tc.after, got, tc.want)
		}
	}
	if !(&Version{}).WaveAllows(0.99, pub) {
		t.Error("no waves must allow everyone")
	}
}

func TestCanUpdateFrom(t *testing.T) {
	v := Version{MinVersion: "1.2.0"}
	for cur, want := range map[string]bool{"1.1.9": false, "1.2.0": true, "1.10.0": true, "1.2.0~rc1": false} {
		if got := v.CanUpdateFrom(cur); got != want {
			t.Errorf("CanUpdateFrom(%q) = %v, want %v", cur, got, want)
		}
	}
	if !(&Version{}).CanUpdateFrom("0") {
		t.Error("no min version must allow any")
	}
}

func FuzzParseCustom(f *testing.F) {
	raw, _ := MarshalCustom(validCustom())
	f.Add([]byte(raw))
	f.Add([]byte(`{"cairn": {"os":"a","version":"1","channel":"s","kind":"uki","slot":"A","published":"2026-01-01T00:00:00Z"}}`))
	f.Add([]byte(`{"cairn": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ok, err := ParseCustom(data)
		if err != nil || !ok {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed custom does not validate: %v", err)
		}
		out, err := MarshalCustom(c)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		c2, ok, err := ParseCustom(out)
		if err != nil || !ok {
			t.Fatalf("re-parse %s: %v %v", out, ok, err)
		}
		if !reflect.DeepEqual(c.Waves, c2.Waves) || c.Version != c2.Version || c.Kind != c2.Kind || !c.Published.Equal(c2.Published) {
			t.Fatalf("round trip changed %+v into %+v", c, c2)
		}
	})
}
