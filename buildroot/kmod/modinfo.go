// Package kmod is a small pure-Go subset of kmod's depmod: it reads the
// .modinfo section of kernel modules, writes modules.dep, modules.alias and
// modules.softdep in kmod's text formats, and computes load-ordered module
// closures from those index files.
package kmod

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Info is the part of a module's .modinfo that depmod needs.
type Info struct {
	Name     string   // name= (normalised: "-" → "_"); empty if absent
	Depends  []string // depends=, comma separated, normalised names, in order
	Aliases  []string // alias= values, in order
	Softdeps []string // softdep= values verbatim, e.g. "pre: crc32c post: foo"
}

// Normalize returns the canonical kernel spelling of a module name, with
// every "-" replaced by "_" (as in /proc/modules and modinfo name=).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// validName reports whether s is usable as a module name in index files.
func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n\x00/:,")
}

// ParseModinfo parses the contents of a .modinfo section: NUL-separated
// "key=value" strings, possibly padded with extra NULs.
func ParseModinfo(b []byte) (Info, error) {
	var in Info
	off := 0
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			i = len(b) // tolerate a missing final NUL
		}
		kv := string(b[:i])
		start := off
		off += i + 1
		if i < len(b) {
			b = b[i+1:]
		} else {
			b = nil
		}
		if kv == "" {
			continue
		}
		key, val, ok := strings.Cut(kv, "=")
		if !ok {
			return Info{}, fmt.Errorf("modinfo: entry at offset %d has no '=': %.40q", start, kv)
		}
		switch key {
		case "name":
			if !validName(val) {
				return Info{}, fmt.Errorf("modinfo: invalid name %q at offset %d", val, start)
			}
			in.Name = Normalize(val)
		case "depends":
			for _, d := range strings.Split(val, ",") {
				if d == "" {
					continue
				}
				if !validName(d) {
					return Info{}, fmt.Errorf("modinfo: invalid dependency %q at offset %d", d, start)
				}
				in.Depends = append(in.Depends, Normalize(d))
			}
		case "alias":
			if val == "" || strings.ContainsAny(val, " \t\r\n") {
				return Info{}, fmt.Errorf("modinfo: invalid alias %q at offset %d", val, start)
			}
			in.Aliases = append(in.Aliases, val)
		case "softdep":
			if strings.ContainsAny(val, "\r\n") {
				return Info{}, fmt.Errorf("modinfo: invalid softdep %q at offset %d", val, start)
			}
			in.Softdeps = append(in.Softdeps, val)
		}
	}
	return in, nil
}

// ReadModinfo reads and parses the .modinfo section of an ELF kernel module.
func ReadModinfo(r io.ReaderAt) (Info, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return Info{}, fmt.Errorf("reading ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, errors.New("no .modinfo section (not a kernel module?)")
	}
	if sec.Type == elf.SHT_NOBITS {
		return Info{}, errors.New(".modinfo section has no data")
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("reading .modinfo section (offset %d, size %d): %w", sec.Offset, sec.Size, err)
	}
	return ParseModinfo(data)
}

// Softdep holds the parsed form of softdep= values.
type Softdep struct {
	Pre, Post []string
}

// ParseSoftdep parses softdep values such as "pre: crc32c post: foo bar".
// Words before any "pre:"/"post:" marker are ignored, as kmod does.
func ParseSoftdep(values ...string) Softdep {
	var sd Softdep
	for _, v := range values {
		var cur *[]string
		for _, w := range strings.Fields(v) {
			switch w {
			case "pre:":
				cur = &sd.Pre
			case "post:":
				cur = &sd.Post
			default:
				if cur != nil {
					*cur = append(*cur, w)
				}
			}
		}
	}
	return sd
}
