package signame

import (
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want syscall.Signal
		err  bool
	}{
		{"TERM", syscall.SIGTERM, false},
		{"SIGTERM", syscall.SIGTERM, false},
		{"sigkill", syscall.SIGKILL, false},
		{"kill", syscall.SIGKILL, false},
		{"9", syscall.SIGKILL, false},
		{"15", syscall.SIGTERM, false},
		{"HUP", syscall.SIGHUP, false},
		{"USR1", syscall.SIGUSR1, false},
		{"SIGIOT", syscall.SIGABRT, false},
		{"poll", syscall.SIGIO, false},
		{"SIGRTMIN", 34, false},
		{"RTMIN+3", 37, false},
		{"SIGRTMAX-2", 62, false},
		{"64", 64, false},
		{"0", 0, true},
		{"65", 0, true},
		{"-1", 0, true},
		{"", 0, true},
		{"SIG", 0, true},
		{"NOPE", 0, true},
		{"RTMIN+31", 0, true},
		{"RTMIN-1", 0, true},
		{"RTMAX+1", 0, true},
		{"RTMIN+03", 0, true},
		{"RTMIN+", 0, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestName(t *testing.T) {
	for sig, want := range map[syscall.Signal]string{syscall.SIGTERM: "SIGTERM", syscall.SIGKILL: "SIGKILL", 34: "SIGRTMIN", 37: "SIGRTMIN+3", 64: "SIGRTMIN+30", 32: "32"} {
		if got := Name(sig); got != want {
			t.Errorf("Name(%d) = %q, want %q", sig, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"TERM", "9", "SIGRTMIN+3", "RTMAX-0", "", "SIG", "+1", "RTMIN+99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := Parse(s)
		if err != nil {
			return
		}
		if sig < 1 || sig > 64 {
			t.Fatalf("Parse(%q) = %d", s, sig)
		}
		if back, err := Parse(Name(sig)); err != nil || back != sig {
			t.Fatalf("Parse(Name(%d)) = %d, %v", sig, back, err)
		}
	})
}
