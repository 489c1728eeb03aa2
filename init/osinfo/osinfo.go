// Package osinfo reads the few fields of the OS file (os.yaml) that PID 1
// needs before the full schema (os/schema) is wired in: name, version and
// hostname. Unknown fields are ignored.
package osinfo

import (
	"fmt"
	"os"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// Path is where the image builder puts the OS file in the root.
const Path = "/usr/share/cairn/os.yaml"

// Info is the subset of the OS file PID 1 uses.
type Info struct {
	Name     string `yaml:"name"`
	Version  string `yaml:"version"`
	Hostname string `yaml:"hostname"`
}

// maxSize bounds the OS file.
const maxSize = 1 << 20

var hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

// ValidHostname reports whether s is an RFC 1123 host name of at most 64
// bytes (the kernel's limit), lower case.
func ValidHostname(s string) bool {
	return len(s) <= 64 && hostnameRE.MatchString(s)
}

// Parse parses an OS file. The hostname defaults to the name.
func Parse(b []byte) (Info, error) {
	var i Info
	if len(b) > maxSize {
		return i, fmt.Errorf("osinfo: %d bytes, larger than %d", len(b), maxSize)
	}
	if err := yaml.Unmarshal(b, &i); err != nil {
		return i, fmt.Errorf("osinfo: %w", err)
	}
	if i.Hostname == "" {
		i.Hostname = i.Name
	}
	if i.Hostname != "" && !ValidHostname(i.Hostname) {
		return i, fmt.Errorf("osinfo: bad hostname %q", i.Hostname)
	}
	return i, nil
}

// Load reads and parses the OS file at path.
func Load(path string) (Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Info{}, fmt.Errorf("osinfo: %w", err)
	}
	return Parse(b)
}
