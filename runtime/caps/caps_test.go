package caps

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{"CAP_CHOWN", 0, false},
		{"cap_sys_admin", 21, false},
		{"NET_RAW", 13, false},
		{"CAP_CHECKPOINT_RESTORE", 40, false},
		{"CAP_NOPE", 0, true},
		{"", 0, true},
	} {
		got, err := Value(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("Value(%q) = %d, %v; want %d, err=%v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestDockerDefaultMask(t *testing.T) {
	m, err := Mask(DockerDefault())
	if err != nil {
		t.Fatal(err)
	}
	// moby's default set as a mask (as seen in CapBnd of a docker container).
	if m != 0x00000000a80425fb {
		t.Fatalf("Docker default mask = %#016x, want 0x00000000a80425fb", m)
	}
	if got := Names(m); len(got) != 14 {
		t.Fatalf("Names(mask) = %v", got)
	}
	// Cairn's default is Docker's without CAP_MKNOD (no device cgroup yet).
	if d, err := Mask(Default()); err != nil || d != m&^(1<<27) {
		t.Fatalf("Default mask = %#016x (%v), want Docker's without CAP_MKNOD", d, err)
	}
}

func TestFromSpec(t *testing.T) {
	s, err := FromSpec(&specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Ambient: []string{"CAP_NET_BIND_SERVICE"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Bounding != 1<<5 || s.Ambient != 1<<10 || s.Effective != 0 {
		t.Fatalf("FromSpec = %+v", s)
	}
	if _, err := FromSpec(&specs.LinuxCapabilities{Effective: []string{"CAP_BOGUS"}}); err == nil {
		t.Fatal("want error for unknown capability")
	}
}

func FuzzValue(f *testing.F) {
	f.Add("CAP_SYS_ADMIN")
	f.Add("net_raw")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Value(s)
		if err == nil && (v < 0 || v > MaxKnown) {
			t.Fatalf("Value(%q) = %d out of range", s, v)
		}
	})
}
