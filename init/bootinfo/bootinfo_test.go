package bootinfo

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := Info{Slot: "B", Version: "1.2.3", Disk: "/dev/vda", Root: "/dev/vda3", Verity: "/dev/dm-0",
		ESP: "/dev/vda1", State: "/dev/vda4", EarlyStartMs: 1641.5, ModulesDoneMs: 1937,
		RootMountedMs: 1980.25, SwitchRootMs: 2053, ModulesLoaded: 12, StateGrownFrom: 5243071}
	p := filepath.Join(t.TempDir(), "run/cairn/boot.env")
	if err := Write(p, in); err != nil {
		t.Fatal(err)
	}
	out, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		want              Info
	}{
		{"unknown keys ignored", "slot=A\nfuture=1\n", "", Info{Slot: "A"}},
		{"empty", "", "", Info{}},
		{"value with =", "root=/dev/a=b\n", "", Info{Root: "/dev/a=b"}},
		{"no equals", "slot\n", "line 1", Info{}},
		{"bad number", "slot=A\nmodules_loaded=x\n", "line 2: modules_loaded", Info{}},
		{"negative uint", "state_grown_from_lba=-1\n", "state_grown_from_lba", Info{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Unmarshal([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMarshalNewlines(t *testing.T) {
	got, err := Unmarshal(Info{Slot: "A\nversion=evil"}.Marshal())
	if err != nil || got.Version != "" {
		t.Fatalf("a newline in a value leaked into another field: %+v, %v", got, err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add(Info{Slot: "A", EarlyStartMs: 1.5, ModulesLoaded: 3}.Marshal())
	f.Add([]byte("x=\n=\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		i, err := Unmarshal(data)
		if err != nil {
			return
		}
		// What parses must survive a round trip (strings without newlines).
		j, err := Unmarshal(i.Marshal())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if strings.ContainsAny(i.Slot+i.Version+i.Disk+i.Root+i.Verity+i.ESP+i.State, "\n") {
			return
		}
		for _, v := range []float64{i.EarlyStartMs, i.ModulesDoneMs, i.RootMountedMs, i.SwitchRootMs} {
			if math.IsNaN(v) {
				return // NaN never equals itself
			}
		}
		if i != j {
			t.Fatalf("round trip: %+v != %+v", i, j)
		}
	})
}
