package schema

import (
	"strconv"
	"strings"
	"testing"
)

func TestHostileInput(t *testing.T) {
	head := "name: a\nversion: 1\n"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"deep nesting", head + "services:\n  s:\n    command: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n", []string{"bad.yaml"}},
		{"deep mapping", head + "services:\n  s: " + strings.Repeat("{a: ", 5000) + "1" + strings.Repeat("}", 5000) + "\n", []string{"bad.yaml"}},
		{"NUL in command", head + "services:\n  s:\n    image: reg.example.com/x:1\n    command: [\"a\\0b\"]\n", []string{"services.s.command[0]: contains a NUL byte"}},
		{"NUL in image", head + "services:\n  s:\n    image: \"reg.example.com/x:1\\0\"\n", []string{"services.s.image:", "control characters"}},
		{"NUL in volume", head + "services:\n  s:\n    image: reg.example.com/x:1\n    volumes: [\"/a\\0:/b\"]\n", []string{"services.s.volumes[0]"}},
		{"NUL in sysctl", head + "services:\n  s:\n    image: reg.example.com/x:1\n    sysctls: {net.a: \"1\\0\"}\n", []string{"NUL"}},
		{"huge duration", head + "services:\n  s:\n    image: reg.example.com/x:1\n    stop_grace_period: 99999999999999h\n", []string{"services.s.stop_grace_period: expected a duration"}},
		{"huge retries", head + "services:\n  s:\n    image: reg.example.com/x:1\n    healthcheck: {tcp: \"a:1\", retries: 1e30}\n", []string{"services.s.healthcheck.retries: expected a whole number"}},
		{"huge cpus", head + "services:\n  s:\n    image: reg.example.com/x:1\n    resources: {cpus: 1e400}\n", []string{"services.s.resources.cpus"}},
		{"alias bomb", head + "x: &a [1]\n", []string{"bad.yaml:3:1: x: unknown field"}},
		{"many services cycle", head + "services:\n" + chain(300), []string{"dependency cycle: s0 -> s1 -> s2"}},
		{"dotdot go package", head + "services:\n  s:\n    image: go://example.com/../x\n", []string{"go:// takes"}},
		{"dotdot tmpfs", head + "services:\n  s:\n    image: reg.example.com/x:1\n    tmpfs: [/a/..]\n", []string{"services.s.tmpfs[0]"}},
		{"dotdot unix socket", head + "services:\n  s:\n    image: reg.example.com/x:1\n    sockets: [\"unix:///run/../x\"]\n", []string{"services.s.sockets[0]"}},
		{"dotdot timezone", head + "update: {server: \"http://a\", root: r, reboot: {timezone: \"Europe/../../x\"}}\n", []string{"update.reboot.timezone"}},
		{"depends alias loop", head + "services:\n  s:\n    image: reg.example.com/x:1\n    depends_on: &d {s: *d}\n", []string{"bad.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { expectErrors(t, tt.in, tt.want) })
	}
}

// chain returns services s0 -> s1 -> ... -> s(n-1) -> s0.
func chain(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("  s" + strconv.Itoa(i) + ":\n    image: reg.example.com/x:1\n    depends_on: [s" + strconv.Itoa((i+1)%n) + "]\n")
	}
	return b.String()
}
