package peer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Source is one binary-package repository line ("deb URI suite comp...").
type Source struct {
	URI        string
	Suites     []string
	Components []string
	File       string // where it was read, for messages
	Line       int
}

// Mirrors are the repositories the peer is built from: the host's own.
type Mirrors struct {
	Main     string // URI serving Suite (debootstrap's mirror)
	Updates  string // URI serving Suite-updates, "" if none
	Security string // URI serving Suite-security, "" if none
}

// ReadHostSources reads /etc/apt/sources.list and /etc/apt/sources.list.d/
// (*.list one-line and *.sources deb822 files) under root ("/" normally).
func ReadHostSources(root string) ([]Source, error) {
	var out []Source
	main := filepath.Join(root, "etc/apt/sources.list")
	if b, err := os.ReadFile(main); err == nil {
		s, err := ParseOneLine(main, b)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("read apt sources: %w", err)
	}
	dir := filepath.Join(root, "etc/apt/sources.list.d")
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("read apt sources: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		var parse func(string, []byte) ([]Source, error)
		switch {
		case strings.HasSuffix(n, ".list"):
			parse = ParseOneLine
		case strings.HasSuffix(n, ".sources"):
			parse = ParseDeb822
		default:
			continue // apt ignores other names too
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read apt sources: %w", err)
		}
		s, err := parse(p, b)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// ParseOneLine parses the one-line format: "deb [opts] URI suite [comp...]".
// deb-src lines and comments are skipped.
func ParseOneLine(file string, b []byte) ([]Source, error) {
	var out []Source
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "deb":
		case "deb-src":
			continue
		default:
			return nil, fmt.Errorf("%s:%d: type %q: want deb or deb-src", file, n, f[0])
		}
		f = f[1:]
		if len(f) > 0 && strings.HasPrefix(f[0], "[") {
			// Options: "[a=b c=d]", possibly split over several fields.
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 {
				return nil, fmt.Errorf("%s:%d: options: no closing ]", file, n)
			}
			f = f[i+1:]
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want URI and suite", file, n)
		}
		if err := checkURI(f[0]); err != nil {
			return nil, fmt.Errorf("%s:%d: URI: %w", file, n, err)
		}
		out = append(out, Source{URI: f[0], Suites: f[1:2], Components: slices.Clone(f[2:]), File: file, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// ParseDeb822 parses the deb822 format (stanzas of "Field: value" separated
// by blank lines; continuation lines start with white space).
func ParseDeb822(file string, b []byte) ([]Source, error) {
	var out []Source
	fields := map[string]string{}
	start, last := 0, ""
	flush := func() error {
		defer func() { fields, last = map[string]string{}, "" }()
		if len(fields) == 0 {
			return nil
		}
		if strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no") {
			return nil
		}
		types := strings.Fields(fields["types"])
		if len(types) == 0 {
			return fmt.Errorf("%s:%d: stanza has no Types field", file, start)
		}
		if !slices.Contains(types, "deb") {
			return nil
		}
		uris := strings.Fields(fields["uris"])
		suites := strings.Fields(fields["suites"])
		if len(uris) == 0 {
			return fmt.Errorf("%s:%d: field URIs: missing", file, start)
		}
		if len(suites) == 0 {
			return fmt.Errorf("%s:%d: field Suites: missing", file, start)
		}
		for _, u := range uris {
			if err := checkURI(u); err != nil {
				return fmt.Errorf("%s:%d: field URIs: %w", file, start, err)
			}
			out = append(out, Source{URI: u, Suites: suites, Components: strings.Fields(fields["components"]), File: file, Line: start})
		}
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				return nil, fmt.Errorf("%s:%d: continuation line outside a field", file, n)
			}
			fields[last] += " " + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("%s:%d: want \"Field: value\"", file, n)
		}
		if len(fields) == 0 {
			start = n
		}
		last = strings.ToLower(k)
		fields[last] = strings.TrimSpace(v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func checkURI(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "file:/") {
		return fmt.Errorf("%q: want http://, https:// or file:/", u)
	}
	if strings.ContainsAny(u, " \t\n\"'`$\\") {
		return fmt.Errorf("%q: invalid character", u)
	}
	return nil
}

// PickMirrors finds, among srcs, the repositories of suite (e.g. bookworm)
// with the main component, and those of its -updates and -security suites.
func PickMirrors(srcs []Source, suite string) (Mirrors, error) {
	var m Mirrors
	for _, s := range srcs {
		if !slices.Contains(s.Components, "main") {
			continue
		}
		for _, su := range s.Suites {
			switch {
			case su == suite && m.Main == "":
				m.Main = s.URI
			case su == suite+"-updates" && m.Updates == "":
				m.Updates = s.URI
			case su == suite+"-security" && m.Security == "":
				m.Security = s.URI
			}
		}
	}
	if m.Main == "" {
		return m, fmt.Errorf("apt sources: no repository for suite %s with component main", suite)
	}
	return m, nil
}

// SourcesList renders m as the peer's /etc/apt/sources.list.
func (m Mirrors) SourcesList(suite string) string {
	s := fmt.Sprintf("deb %s %s main\n", m.Main, suite)
	if m.Updates != "" {
		s += fmt.Sprintf("deb %s %s-updates main\n", m.Updates, suite)
	}
	if m.Security != "" {
		s += fmt.Sprintf("deb %s %s-security main\n", m.Security, suite)
	}
	return s
}
