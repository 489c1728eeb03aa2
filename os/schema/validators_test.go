package schema

import (
	"regexp"
	"testing"
)

// The hand-written validators must accept exactly what these expressions
// accept (they replace them to keep regexp compilation off the boot path).
var (
	nameRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._~-]{0,63}$`)
	labelRe   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	moduleRe  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	serviceRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	volumeRe  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
)

func checkValidators(t *testing.T, s string) {
	t.Helper()
	for _, c := range []struct {
		name string
		re   *regexp.Regexp
		f    func(string) bool
	}{
		{"name", nameRe, validName}, {"version", versionRe, validVersion},
		{"label", labelRe, validLabel}, {"module", moduleRe, validModule},
		{"service", serviceRe, validServiceName}, {"volume", volumeRe, validVolumeName},
	} {
		if got, want := c.f(s), c.re.MatchString(s); got != want {
			t.Errorf("%s(%q) = %v, the expression says %v", c.name, s, got, want)
		}
	}
}

func TestValidatorsMatchExpressions(t *testing.T) {
	for _, s := range []string{
		"", "a", "-", "a-", "-a", "a-b", "A", "1.0.0", "1.0+3", "1.0~rc1", ".1", "_x", "x_y",
		"abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz0123456", "a\n", "é",
		string(make([]byte, 64)), "dm-verity", "nls_cp437", "web", "web-1", "a.b", "data_1",
		"abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0", "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01",
	} {
		checkValidators(t, s)
	}
}

func FuzzValidators(f *testing.F) {
	f.Add("hello-1")
	f.Add("1.2.3~rc1")
	f.Fuzz(checkValidators)
}
