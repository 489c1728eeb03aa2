package schema

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"cairn.dev/cairn/update/window"
)

// Update defaults and limits.
const (
	DefaultChannel        = "stable"
	DefaultUpdateInterval = Duration(time.Hour)
	MinUpdateInterval     = Duration(time.Minute)
	DefaultHealthyFor     = Duration(30 * time.Second)
	DefaultTrialTimeout   = Duration(5 * time.Minute)
	DefaultRebootGroup    = "default"
	// maxRootSize bounds the trusted root.json read by CheckFiles.
	maxRootSize = 1 << 20
)

// Reboot strategies.
const (
	RebootImmediate = "immediate"
	RebootWindow    = "window"
	RebootFleetLock = "fleetlock"
)

func validateUpdate(u *Update, d *decoder) {
	bad := func(field, format string, args ...any) { d.bad("update"+field, format, args...) }
	switch {
	case u.Server == "":
		bad(".server", "required")
	case !httpURL(u.Server):
		bad(".server", "%q is not an http:// or https:// URL", u.Server)
	}
	if u.Channel == "" {
		u.Channel = DefaultChannel
	} else if len(u.Channel) > 64 || !allOf(u.Channel, func(c byte) bool { return isLower(c) || isDigit(c) || c == '-' }) {
		bad(".channel", "%q must be 1-64 lower-case letters, digits or dashes", u.Channel)
	}
	switch {
	case u.Root == "":
		bad(".root", "required: the path, relative to the OS file, of the repository's trusted root.json")
	case strings.IndexByte(u.Root, 0) >= 0:
		bad(".root", "contains a NUL byte")
	}
	if u.Interval == 0 {
		u.Interval = DefaultUpdateInterval
	} else if u.Interval < MinUpdateInterval {
		bad(".interval", "%s is shorter than the minimum of 1m", u.Interval.D())
	}
	if u.Jitter == 0 {
		u.Jitter = u.Interval / 10
	} else if u.Jitter > u.Interval {
		bad(".jitter", "%s is longer than the interval (%s)", u.Jitter.D(), u.Interval.D())
	}
	if u.BandwidthLimit != "" {
		b, msg := parseSize(u.BandwidthLimit)
		switch {
		case msg != "":
			bad(".bandwidth_limit", "%s (bytes per second)", msg)
		case b < 1024:
			bad(".bandwidth_limit", "%q is below the minimum of 1k bytes per second", u.BandwidthLimit)
		default:
			u.BandwidthBytes = b
		}
	}

	r := &u.Reboot
	if r.Strategy == "" {
		r.Strategy = RebootImmediate
	}
	switch r.Strategy {
	case RebootImmediate, RebootFleetLock:
		if r.Window != "" {
			bad(".reboot.window", "only for strategy window")
		}
	case RebootWindow:
		if r.Window == "" {
			bad(".reboot.window", "required for strategy window, such as \"Sat,Sun 02:00-04:00\"")
		}
	default:
		bad(".reboot.strategy", "%q is not immediate, window or fleetlock", r.Strategy)
	}
	if r.Window != "" {
		if _, err := window.Parse(r.Window); err != nil {
			bad(".reboot.window", "%s", err)
		}
	}
	if r.Timezone != "" && !validTimezone(r.Timezone) {
		bad(".reboot.timezone", "%q is not an IANA time zone name such as Europe/Paris or UTC", r.Timezone)
	}
	if r.Strategy == RebootFleetLock {
		if r.FleetLock == "" {
			r.FleetLock = u.Server
		}
		if r.Group == "" {
			r.Group = DefaultRebootGroup
		}
	}
	if r.FleetLock != "" && !httpURL(r.FleetLock) {
		bad(".reboot.fleetlock", "%q is not an http:// or https:// URL", r.FleetLock)
	}
	if r.Group != "" && (len(r.Group) > 64 || !allOf(r.Group, func(c byte) bool { return isLetter(c) || isDigit(c) || c == '.' || c == '-' })) {
		bad(".reboot.group", "%q must be 1-64 letters, digits, '.' or '-' (as FleetLock groups)", r.Group)
	}

	t := &u.Trial
	if t.HealthyFor == 0 {
		t.HealthyFor = DefaultHealthyFor
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTrialTimeout
	}
	if t.Timeout <= t.HealthyFor {
		bad(".trial.timeout", "%s must be longer than healthy_for (%s)", t.Timeout.D(), t.HealthyFor.D())
	}
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.User == nil && u.RawQuery == "" && u.Fragment == "" && !strings.ContainsAny(s, " \x00\n")
}

// validTimezone checks the syntax of an IANA zone name ("UTC",
// "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"). It does
// not load the zone: the machine's root may carry no tzdata.
func validTimezone(s string) bool {
	if s == "Local" || len(s) > 64 {
		return false
	}
	for _, el := range strings.Split(s, "/") {
		if el == "" || el == "." || el == ".." || !(isLetter(el[0]) || isDigit(el[0])) ||
			!allOf(el, func(c byte) bool { return isLetter(c) || isDigit(c) || strings.IndexByte("_+-", c) >= 0 }) {
			return false
		}
	}
	return true
}

// CheckFiles checks, on the build machine, the files the OS file names
// relative to itself: update.root must exist and be a TUF root
// ({"signed": {"_type": "root", ...}}), oci-layout: directories must hold an
// oci-layout file and docker-archive: files must exist, and files[].source
// must exist. It also loads update.reboot.timezone when the build machine
// has a time zone database. Parse and Load do not look at these files, because PID 1 loads
// the installed copy of the OS file, away from them. The error is Errors.
func (o *OS) CheckFiles() error {
	d := &decoder{file: o.Source, nodes: o.nodes}
	bad := d.bad
	dir := filepath.Dir(o.Source)
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if o.Update != nil && o.Update.Root != "" {
		if msg := checkTUFRoot(rel(o.Update.Root)); msg != "" {
			bad("update.root", "%s", msg)
		}
	}
	if o.Update != nil && o.Update.Reboot.Timezone != "" {
		// Checked only where the zone database is present (a well-known
		// zone loads), so that a build host without tzdata is no error.
		if _, err := time.LoadLocation(o.Update.Reboot.Timezone); err != nil {
			if _, known := time.LoadLocation("Europe/London"); known == nil {
				bad("update.reboot.timezone", "%q is not in this machine's time zone database", o.Update.Reboot.Timezone)
			}
		}
	}
	images := func(field, ref string) {
		switch kind, p := ImageKind(ref); kind {
		case ImageOCILayout:
			if _, err := os.Stat(filepath.Join(rel(p), "oci-layout")); err != nil {
				bad(field, "%s is not an OCI image layout: %v", p, err)
			}
		case ImageDockerArchive:
			if fi, err := os.Stat(rel(p)); err != nil || !fi.Mode().IsRegular() {
				bad(field, "%s is not a readable file (err %v)", p, err)
			}
		}
	}
	for _, n := range sortedKeys(o.Services) {
		images("services."+n+".image", o.Services[n].Image)
	}
	for i, b := range o.Onboot {
		images(fmt.Sprintf("onboot[%d].image", i), b.Image)
	}
	for i, f := range o.Files {
		if f.Source == "" {
			continue
		}
		if fi, err := os.Stat(rel(f.Source)); err != nil || !fi.Mode().IsRegular() {
			bad(fmt.Sprintf("files[%d].source", i), "%s is not a readable file (err %v)", f.Source, err)
		}
	}
	if len(d.errs) > 0 {
		return d.errs
	}
	return nil
}

func checkTUFRoot(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Sprintf("the trusted root: %v", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRootSize+1))
	if err != nil {
		return fmt.Sprintf("the trusted root: %v", err)
	}
	if len(data) > maxRootSize {
		return fmt.Sprintf("the trusted root %s is larger than %d bytes", p, maxRootSize)
	}
	var root struct {
		Signed struct {
			Type string `json:"_type"`
		} `json:"signed"`
		Signatures []json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(data, &root); err != nil {
		return fmt.Sprintf("the trusted root %s is not JSON: %v", p, err)
	}
	if root.Signed.Type != "root" || root.Signatures == nil {
		return fmt.Sprintf("%s is not TUF root metadata ({\"signed\": {\"_type\": \"root\", ...}, \"signatures\": [...]}); use the repository's root.json from `cairn keys init`", p)
	}
	return ""
}

// LoadForBuild is Load followed by CheckFiles: what `cairn build` and
// `cairn validate` need.
func LoadForBuild(path string) (*OS, error) {
	o, err := Load(path)
	if err != nil {
		return nil, err
	}
	if err := o.CheckFiles(); err != nil {
		return nil, err
	}
	return o, nil
}
