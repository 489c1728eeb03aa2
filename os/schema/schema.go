// Package schema defines Cairn's OS file: the one YAML document that
// `cairn build` turns into a disk image. It parses the file strictly (unknown
// fields are errors) and validates every value, reporting problems with the
// file, line, column and field they concern.
package schema

import (
	"fmt"
	"io"
	"os"
	"reflect"

	"go.yaml.in/yaml/v3"

	"cairn.dev/cairn/os/netconf"
)

// MaxFileSize bounds the size of an OS file, so that a hostile file cannot
// make the parser use unbounded memory.
const MaxFileSize = 4 << 20

// OS is a parsed, validated OS file.
type OS struct {
	// Name names the OS and its image files: lower-case letters, digits and
	// dashes. It also seeds the image's partition UUIDs, so every version of
	// one OS shares them.
	Name string `yaml:"name"`
	// Version is the version of this build, such as "1.0.0". systemd-boot
	// orders boot entries by it.
	Version string `yaml:"version"`
	// Hostname is the machine's host name; the default is Name.
	Hostname string `yaml:"hostname"`
	// Kernel selects the kernel and what the boot adds to it.
	Kernel Kernel `yaml:"kernel"`
	// Files are put into the image: under /etc they are copied into the
	// generated /etc at boot, elsewhere they sit in the read-only root.
	Files []File `yaml:"files"`
	// Network configures the machine's interfaces, DNS and NTP; nil means
	// DHCP on the first ethernet interface.
	Network *netconf.Config `yaml:"network"`
	// Services are the long-running containers, by name; Onboot the one-shot
	// containers run in order before them.
	Services map[string]Service `yaml:"services"`
	Onboot   []Onboot           `yaml:"onboot"`
	// Update configures the update agent; nil: no automatic updates.
	Update *Update `yaml:"update"`

	// Source is the path the file was read from, for resolving relative
	// paths such as File.Source. It is not part of the YAML.
	Source string `yaml:"-"`

	// nodes are the YAML nodes by field path, for positions in errors found
	// after parsing (CheckFiles, Merge).
	nodes map[string]*yaml.Node
}

// Kernel is the kernel section of an OS file.
type Kernel struct {
	// Flavour is the Debian kernel flavour: "cloud-amd64" (the default, for
	// virtual machines) or "amd64" (bare metal).
	Flavour string `yaml:"flavour"`
	// Cmdline holds extra kernel command line arguments, one per item.
	Cmdline []string `yaml:"cmdline"`
	// Modules are extra kernel modules that the system loads at boot.
	Modules []string `yaml:"modules"`
}

// File is one file that the OS file puts into the image.
type File struct {
	Path string `yaml:"path"`
	// Content is the file's content, or Source a path (relative to the OS
	// file) whose content is read at build time. Exactly one is set.
	Content string `yaml:"content"`
	Source  string `yaml:"source"`
	// Mode is the octal permission, such as "0644" (the default) or "0755".
	Mode string `yaml:"mode"`
}

// Load reads, parses and validates the OS file at path.
func Load(path string) (*OS, error) {
	data, err := readFile(path, "OS file")
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses and validates an OS file held in memory. name is used in
// error messages and to resolve relative paths. The error, if any, is of type
// Errors and lists every problem found.
func Parse(name string, data []byte) (*OS, error) {
	o := &OS{Source: name}
	nodes, err := parseDoc(name, data, o, func(d *decoder) { validate(o, d) })
	if err != nil {
		return nil, err
	}
	o.nodes = nodes
	return o, nil
}

// readFile reads the file at path, at most MaxFileSize+1 bytes (enough
// for parseDoc to refuse a larger one); what names it in errors.
func readFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	return data, nil
}

// parseDoc decodes the YAML document data into v, a pointer to a struct,
// and when that succeeds checks it with validate. It returns the YAML
// nodes by field path, or Errors sorted by position; name is the file
// they name.
func parseDoc(name string, data []byte, v any, validate func(*decoder)) (map[string]*yaml.Node, error) {
	if len(data) > MaxFileSize {
		return nil, Errors{{File: name, Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{syntaxError(name, err)}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, Errors{{File: name, Msg: "file is empty"}}
	}
	d := &decoder{file: name, nodes: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	d.decode(doc.Content[0], reflect.ValueOf(v).Elem(), "", 0)
	if len(d.errs) == 0 {
		validate(d)
	}
	if len(d.errs) > 0 {
		return nil, d.sorted()
	}
	return d.nodes, nil
}
