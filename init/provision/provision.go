// Package provision finds, validates and stores a machine's config at boot:
// "one image, many machines". A machine config is the OS file's
// machine-level subset (schema.Machine). PID 1 looks for it, in order, in
// QEMU fw_cfg, at a URL on the kernel command line, on a config drive and in
// the EC2 or OpenStack metadata service; the first one found wins. An
// accepted config is stored on STATE and used first on later boots; a config
// that differs from the stored one replaces it only when the command line
// says cairn.config.replace.
//
// The package only reads and decides; applying the config (host name,
// network, services, /etc files) is the system stage's job.
package provision

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"cairn.dev/cairn/os/schema"
)

// Kernel command line parameters.
const (
	// ArgURL names the config's URL: cairn.config=http://host/config.yaml.
	ArgURL = "cairn.config"
	// ArgReplace lets a found config replace the stored one.
	ArgReplace = "cairn.config.replace"
	// ArgSHA256 pins the sha256 (hex) of the config ArgURL names: a config
	// with another hash is refused.
	ArgSHA256 = "cairn.config.sha256"
)

// MaxConfigSize bounds a config read from any source.
const MaxConfigSize = schema.MaxFileSize

// Source says where a config came from.
type Source struct {
	// Kind is "fw_cfg", "cmdline", "drive", "ec2", "openstack" or "stored".
	Kind string `json:"kind"`
	// Name is the source as error messages show it, such as
	// "fw_cfg opt/dev.cairn/config" or "config drive /dev/vdb".
	Name string `json:"name"`
}

func (s Source) String() string { return s.Name }

// Found is a config as a source delivered it, not yet validated.
type Found struct {
	Source Source
	Data   []byte
}

// SHA256 returns the hex sha256 of the config's bytes.
func (f *Found) SHA256() string { return sum(f.Data) }

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Config is an accepted (validated) machine config.
type Config struct {
	Machine *schema.Machine
	Source  Source
	Data    []byte
	SHA256  string
}

// Options configure the search. Zero values are the real system's paths.
type Options struct {
	// Sys and Dev are the roots of /sys and /dev (tests pass temp dirs).
	Sys, Dev string
	// Args are the kernel command line's key=value pairs.
	Args map[string]string
	// StoreDir is where the accepted config is kept (default StoreDir).
	StoreDir string
	// Parse parses and validates a machine config (schema.ParseMachine);
	// name is used in its error messages. Required.
	Parse func(name string, data []byte) (*schema.Machine, error)
	// Check, if set, is run on a parsed config before it is accepted: the
	// system stage merges it over the image's OS file there, so that a
	// config that cannot be merged is refused as a whole.
	Check func(*schema.Machine) error
	// LoadFwCfg makes the fw_cfg sysfs tree appear (loads qemu_fw_cfg); nil
	// looks only at what is there.
	LoadFwCfg func(ctx context.Context) error
	// Online starts the network if needed and waits until it has an
	// address; the URL and metadata sources call it. nil: they are skipped.
	Online func(ctx context.Context) error
	// HTTP is the client of the URL and metadata sources (default: one
	// with no proxy from the environment).
	HTTP *http.Client
	// MetadataURL is the metadata service's base URL (default
	// http://169.254.169.254); tests point it at an httptest server.
	MetadataURL string
	// URLAttempts bounds the fetches of the cmdline URL (default 5), with
	// Backoff doubling between them (default 1 s).
	URLAttempts int
	Backoff     time.Duration
	// Logf prints console lines; it is given "config: ..." messages
	// without the prefix.
	Logf func(format string, args ...any)
}

// StoreDir is where the accepted config lives on STATE.
const StoreDir = "/var/lib/cairn/config"

// DefaultMetadataURL is the link-local metadata service of EC2 and OpenStack.
const DefaultMetadataURL = "http://169.254.169.254"

func (o *Options) defaults() {
	if o.Sys == "" {
		o.Sys = "/sys"
	}
	if o.Dev == "" {
		o.Dev = "/dev"
	}
	if o.StoreDir == "" {
		o.StoreDir = StoreDir
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	}
	if o.MetadataURL == "" {
		o.MetadataURL = DefaultMetadataURL
	}
	o.MetadataURL = strings.TrimRight(o.MetadataURL, "/")
	if o.URLAttempts <= 0 {
		o.URLAttempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Replace reports whether the command line allows a found config to replace
// the stored one.
func (o *Options) Replace() bool {
	_, ok := o.Args[ArgReplace]
	return ok
}

// Discover tries the sources in order and returns the first config found,
// or nil if there is none. Sources that fail are logged and skipped.
func Discover(ctx context.Context, o Options) *Found {
	o.defaults()
	for _, try := range []func(context.Context, *Options) (*Found, error){fromFwCfg, fromCmdline, fromDrive, fromMetadata} {
		if ctx.Err() != nil {
			return nil
		}
		f, err := try(ctx, &o)
		if err != nil {
			o.Logf("%v", err)
			continue
		}
		if f != nil {
			return f
		}
	}
	return nil
}

// Validate parses f and runs Options.Check. The error names the source,
// and the line, column and field of each problem.
func Validate(o Options, f *Found) (*Config, error) {
	if o.Parse == nil {
		return nil, errors.New("provision: no parser")
	}
	if len(f.Data) > MaxConfigSize {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", f.Source, len(f.Data), MaxConfigSize)
	}
	if isCloudConfig(f.Data) {
		return nil, fmt.Errorf("%s:1: a #cloud-config document; cloud-init is not supported, only a Cairn machine config (YAML: hostname, network, services, files)", f.Source)
	}
	m, err := o.Parse(f.Source.Name, f.Data)
	if err != nil {
		return nil, err
	}
	if o.Check != nil {
		if err := o.Check(m); err != nil {
			var se schema.Errors
			if errors.As(err, &se) {
				return nil, err // names the file, line and field itself
			}
			return nil, fmt.Errorf("%s: %w", f.Source, err)
		}
	}
	return &Config{Machine: m, Source: f.Source, Data: f.Data, SHA256: f.SHA256()}, nil
}

func isCloudConfig(b []byte) bool {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	return bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("#cloud-config"))
}

// Load returns the config to use: the stored one if there is one (unless
// cairn.config.replace is set), else the first valid one found, which it
// stores. It returns nil if there is none. Problems (an invalid config, a
// source that failed) are logged; the caller boots with the image's config
// then. With a stored config and no replace flag, Load does not look at the
// sources at all: run CheckSources in the background to report a new one.
func Load(ctx context.Context, o Options) *Config {
	o.defaults()
	stored, err := ReadStored(o)
	if err != nil {
		o.Logf("%v; ignoring the stored config", err)
	}
	if stored != nil && !o.Replace() {
		o.Logf("using the stored config (from %s, sha256 %.12s)", stored.Source, stored.SHA256)
		return stored
	}
	f := Discover(ctx, o)
	if f == nil {
		if stored != nil {
			o.Logf("%s given but no config found; keeping the stored one (from %s)", ArgReplace, stored.Source)
			return stored
		}
		o.Logf("no machine config found; booting with the image's config")
		return nil
	}
	fallback := "booting with the image's config"
	if stored != nil {
		fallback = "keeping the stored config (from " + stored.Source.Name + ")"
	}
	c, err := Validate(o, f)
	if err != nil {
		o.Logf("%s; refused, %s", oneLine(err), fallback)
		return stored
	}
	if stored != nil {
		if stored.SHA256 == c.SHA256 {
			o.Logf("%s matches the stored config", c.Source)
			return stored
		}
		o.Logf("%s: replacing the stored config (from %s, sha256 %.12s) with sha256 %.12s (%s)", c.Source, stored.Source, stored.SHA256, c.SHA256, ArgReplace)
	} else {
		o.Logf("accepted the config from %s (sha256 %.12s)", c.Source, c.SHA256)
	}
	if err := Store(o, c); err != nil {
		o.Logf("%v; using it for this boot only", err)
	}
	return c
}

// CheckSources looks at the sources once a stored config is in use and
// logs whether what they hold matches it. It never replaces the stored
// config (that takes cairn.config.replace).
func CheckSources(ctx context.Context, o Options, stored *Config) {
	o.defaults()
	f := Discover(ctx, o)
	switch {
	case f == nil || stored == nil:
	case f.SHA256() == stored.SHA256:
		o.Logf("%s matches the stored config", f.Source)
	default:
		o.Logf("%s differs from the stored config; keeping the stored one (boot with %s to replace it)", f.Source, ArgReplace)
	}
}

// oneLine joins a multi-line error (schema.Errors lists one problem a line).
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
