package tuf

import (
	"fmt"
	"regexp"
	"strings"
)

// versionRe is the version syntax of OS files (os/schema): 1-64 letters,
// digits, '.', '_', '~' or '-', starting with a letter or digit. '+' is
// reserved for boot counting in UKI file names, '/' would change target paths.
var versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._~-]{0,63}$`)

// ValidVersion reports whether v is a version Cairn can publish and install.
func ValidVersion(v string) error {
	if !versionRe.MatchString(v) {
		return fmt.Errorf("version %q must be 1-64 letters, digits, '.', '_', '~' or '-', starting with a letter or digit", v)
	}
	return nil
}

// token kinds in the order they sort: '~' sorts before the end of a version,
// which sorts before letters, which sort before numbers.
const (
	tokTilde = iota
	tokEnd
	tokAlpha
	tokNum
)

type token struct {
	kind int
	text string
}

// tokenize splits v into runs of digits and runs of other characters; '.',
// '-' and '_' only separate runs, and every '~' is a token of its own.
func tokenize(v string) []token {
	var toks []token
	i := 0
	for i < len(v) {
		c := v[i]
		switch {
		case c == '.' || c == '-' || c == '_':
			i++
		case c == '~':
			toks = append(toks, token{kind: tokTilde, text: "~"})
			i++
		case isDigit(c):
			j := i
			for j < len(v) && isDigit(v[j]) {
				j++
			}
			toks = append(toks, token{kind: tokNum, text: strings.TrimLeft(v[i:j], "0")})
			i = j
		default:
			j := i
			for j < len(v) && !isDigit(v[j]) && !strings.ContainsRune(".-_~", rune(v[j])) {
				j++
			}
			toks = append(toks, token{kind: tokAlpha, text: v[i:j]})
			i = j
		}
	}
	return toks
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func compareTokens(a, b token) int {
	if a.kind != b.kind {
		if a.kind < b.kind {
			return -1
		}
		return 1
	}
	switch a.kind {
	case tokNum:
		// Leading zeros are stripped: the longer run is the larger number,
		// so numbers of any length compare without overflow.
		if len(a.text) != len(b.text) {
			if len(a.text) < len(b.text) {
				return -1
			}
			return 1
		}
		return strings.Compare(a.text, b.text)
	case tokAlpha:
		return strings.Compare(a.text, b.text)
	}
	return 0
}

// CompareVersions orders two versions and returns -1, 0 or +1. It is a total
// order, and it returns 0 only when a == b.
//
// A version is split into runs of digits and runs of other characters; '.',
// '-' and '_' only separate runs, and '~' is a run of its own. The runs are
// compared left to right: two numbers by value (1.2.10 > 1.2.9, 1.02 and 1.2
// tie here), two other runs byte by byte (1.0b > 1.0a), and a number is
// greater than any other run (1.0.1 > 1.0.rc1). A version that runs out of
// runs is smaller than one that goes on (1.2 < 1.2.1, 1.0 < 1.0rc1), except
// that '~' sorts before the end, as in Debian (1.0~rc1 < 1.0). When every run
// ties (1.02 against 1.2, 1-0 against 1.0), the strings are compared byte by
// byte, so that different strings never compare equal.
func CompareVersions(a, b string) int {
	if a == b {
		return 0
	}
	ta, tb := tokenize(a), tokenize(b)
	for i := 0; i < len(ta) || i < len(tb); i++ {
		x, y := token{kind: tokEnd}, token{kind: tokEnd}
		if i < len(ta) {
			x = ta[i]
		}
		if i < len(tb) {
			y = tb[i]
		}
		if c := compareTokens(x, y); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}
