package schema

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"cairn.dev/cairn/os/netconf"
)

// Flavours are the Debian kernel flavours an OS file may name.
var flavours = map[string]bool{"cloud-amd64": true, "amd64": true}

// DefaultFlavour is the kernel flavour used when the OS file names none.
const DefaultFlavour = "cloud-amd64"

// generatedEtc are the files in /etc that the system stage writes itself.
var generatedEtc = map[string]bool{
	"/etc/hostname": true, "/etc/os-release": true, "/etc/machine-id": true,
	"/etc/resolv.conf": true, "/etc/hosts": true,
}

// fileRoots are the trees an OS file may put files into.
var fileRoots = []string{"/etc/", "/usr/", "/opt/"}

func syntaxError(name string, err error) Error {
	msg := cleanYAMLError(err)
	e := Error{File: name, Msg: "invalid YAML: " + msg}
	if _, after, ok := strings.Cut(err.Error(), "line "); ok {
		digits := after[:len(after)-len(strings.TrimLeft(after, "0123456789"))]
		if n, err := strconv.Atoi(digits); err == nil {
			e.Line, e.Column = n, 1
		}
	}
	return e
}

// validate checks values and fills defaults. Positions come from the nodes
// the decoder recorded; a missing field points at the document.
func validate(o *OS, d *decoder) {
	bad := d.bad

	switch {
	case o.Name == "":
		bad("name", "required")
	case !validName(o.Name):
		bad("name", "%q must be 1-32 lower-case letters, digits or dashes, starting and ending with a letter or digit", o.Name)
	}
	switch {
	case o.Version == "":
		bad("version", "required")
	case !validVersion(o.Version):
		bad("version", "%q must be 1-64 letters, digits, '.', '_', '~' or '-', starting with a letter or digit ('+' is reserved for boot counting)", o.Version)
	}
	if o.Hostname == "" {
		o.Hostname = o.Name
	} else if !validHostname(o.Hostname) {
		bad("hostname", "%q is not a valid host name (dot-separated labels of letters, digits and dashes, at most 64 characters)", o.Hostname)
	}

	if o.Kernel.Flavour == "" {
		o.Kernel.Flavour = DefaultFlavour
	} else if !flavours[o.Kernel.Flavour] {
		bad("kernel.flavour", "%q is not a known flavour (cloud-amd64, amd64)", o.Kernel.Flavour)
	}
	for i, arg := range o.Kernel.Cmdline {
		f := fmt.Sprintf("kernel.cmdline[%d]", i)
		switch {
		case arg == "":
			bad(f, "empty argument")
		case strings.ContainsAny(arg, " \t\r\n\x00\""):
			bad(f, "%q must be one argument without spaces, quotes or control characters", arg)
		case strings.HasPrefix(arg, "cairn."):
			bad(f, "%q: arguments starting with cairn. are set by the build", arg)
		}
	}
	for i, m := range o.Kernel.Modules {
		if !validModule(m) {
			bad(fmt.Sprintf("kernel.modules[%d]", i), "%q is not a module name", m)
		}
	}

	seen := map[string]int{}
	for i := range o.Files {
		validateFile(&o.Files[i], fmt.Sprintf("files[%d]", i), seen, i, bad)
	}

	validateNetwork(o.Network, d)
	validateServices(o.Services, d, false)
	validateOnboot(o.Onboot, o.Services, d)
	crossCheck(o.Services, d.bad)
	if o.Update != nil {
		validateUpdate(o.Update, d)
	}
}

func validateNetwork(c *netconf.Config, d *decoder) {
	if c == nil {
		return
	}
	if err := c.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			field, msg, ok := strings.Cut(strings.TrimPrefix(line, "network: "), ": ")
			if !ok {
				field, msg = "", line
			}
			d.bad(strings.TrimSuffix("network."+field, "."), "%s", msg)
		}
	}
}

// at returns the node recorded for field or for its nearest parent.
func (d *decoder) at(field string) *yaml.Node {
	for p := field; p != ""; {
		if n, ok := d.nodes[p]; ok {
			return n
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return d.nodes[""]
}

// bad reports a problem with field at its (or its parent's) position.
func (d *decoder) bad(field, format string, args ...any) {
	d.errorf(d.at(field), field, format, args...)
}

func validateFile(f *File, field string, seen map[string]int, i int, bad func(string, string, ...any)) {
	switch {
	case f.Path == "":
		bad(field+".path", "required")
	case !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || strings.Contains(f.Path, "\x00"):
		bad(field+".path", "%q must be an absolute, clean path (no '..', '//' or trailing '/')", f.Path)
	case !underRoots(f.Path):
		bad(field+".path", "%q must be under /etc, /usr or /opt (/var is the state partition)", f.Path)
	case generatedEtc[f.Path]:
		bad(field+".path", "%q is generated at boot and cannot be set here", f.Path)
	default:
		if j, dup := seen[f.Path]; dup {
			bad(field+".path", "%q is already given by files[%d]", f.Path, j)
		}
		seen[f.Path] = i
	}
	if f.Content != "" && f.Source != "" {
		bad(field, "content and source exclude each other; a file with neither is empty")
	}
	if f.Mode == "" {
		f.Mode = "0644"
	} else if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o7777 {
		bad(field+".mode", "%q must be an octal mode such as \"0644\"", f.Mode)
	}
}

// FileMode returns the permission bits of f; Mode has been validated.
func (f *File) FileMode() uint32 {
	m, _ := strconv.ParseUint(f.Mode, 8, 32)
	return uint32(m)
}

func underRoots(p string) bool {
	for _, r := range fileRoots {
		if strings.HasPrefix(p, r) {
			return true
		}
	}
	return false
}

func validHostname(h string) bool {
	if len(h) > 64 { // the kernel's HOST_NAME_MAX
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

// The validators below are written out rather than as regular expressions:
// PID 1 parses the OS file before READY, and compiling regexps at package
// initialisation costs boot time under emulation.

func isLower(c byte) bool  { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return isLower(c) || c >= 'A' && c <= 'Z' }

// allOf reports whether every byte of s satisfies ok.
func allOf(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// validName: 1-32 of [a-z0-9-], starting and ending with [a-z0-9].
func validName(s string) bool {
	alnum := func(c byte) bool { return isLower(c) || isDigit(c) }
	return len(s) >= 1 && len(s) <= 32 && alnum(s[0]) && alnum(s[len(s)-1]) &&
		allOf(s, func(c byte) bool { return alnum(c) || c == '-' })
}

// validVersion: 1-64 of [0-9A-Za-z._~-], starting with a letter or digit.
func validVersion(s string) bool {
	return len(s) >= 1 && len(s) <= 64 && (isLetter(s[0]) || isDigit(s[0])) &&
		allOf(s, func(c byte) bool { return isLetter(c) || isDigit(c) || strings.IndexByte("._~-", c) >= 0 })
}

// validLabel: an RFC 1123 host name label of 1-63 characters.
func validLabel(s string) bool {
	alnum := func(c byte) bool { return isLetter(c) || isDigit(c) }
	return len(s) >= 1 && len(s) <= 63 && alnum(s[0]) && alnum(s[len(s)-1]) &&
		allOf(s, func(c byte) bool { return alnum(c) || c == '-' })
}

// validModule: 1-64 of [A-Za-z0-9_-].
func validModule(s string) bool {
	return len(s) >= 1 && len(s) <= 64 &&
		allOf(s, func(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' || c == '-' })
}
