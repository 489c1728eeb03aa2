package schema

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"cairn.dev/cairn/internal/signame"
)

// Pull policies.
const (
	PullBuild   = "build"
	PullMissing = "missing"
	PullAlways  = "always"
)

// Network modes.
const (
	NetworkBridge = "bridge"
	NetworkHost   = "host"
	NetworkNone   = "none"
)

// Image kinds, as ImageKind returns them.
const (
	ImageGo            = "go"
	ImageOCILayout     = "oci-layout"
	ImageDockerArchive = "docker-archive"
	ImageRegistry      = "registry"
)

// Defaults filled in by validation.
const (
	DefaultStopGracePeriod = Duration(10 * time.Second)
	DefaultOnbootTimeout   = Duration(5 * time.Minute)
	DefaultHealthInterval  = Duration(30 * time.Second)
	DefaultHealthTimeout   = Duration(30 * time.Second)
	DefaultHealthRetries   = 3
	// MinMemoryBytes is the smallest memory limit, as Docker's.
	MinMemoryBytes = 6 << 20
)

// ImageKind returns the kind of an image reference (ImageGo,
// ImageOCILayout, ImageDockerArchive or ImageRegistry) and the part after
// the scheme ("./x" for "go://./x"; the whole reference for a registry).
func ImageKind(ref string) (kind, rest string) {
	switch {
	case strings.HasPrefix(ref, "go://"):
		return ImageGo, ref[len("go://"):]
	case strings.HasPrefix(ref, "oci-layout:"):
		return ImageOCILayout, ref[len("oci-layout:"):]
	case strings.HasPrefix(ref, "docker-archive:"):
		return ImageDockerArchive, ref[len("docker-archive:"):]
	}
	return ImageRegistry, ref
}

// checkImage checks an image reference's syntax; the message says what is
// wrong, or is "" when the reference is good.
func checkImage(ref string) string {
	kind, rest := ImageKind(ref)
	if strings.ContainsAny(ref, "\x00\n\r\t ") {
		return fmt.Sprintf("%q contains white space or control characters", ref)
	}
	switch kind {
	case ImageGo:
		if !validGoPackage(rest) {
			return fmt.Sprintf("%q: go:// takes a Go package path, such as go://example.com/cmd/x or go://./cmd/x (inside the Go module holding the OS file; no ..)", ref)
		}
	case ImageOCILayout, ImageDockerArchive:
		if rest == "" {
			return fmt.Sprintf("%q: %s: needs a path (relative to the OS file)", ref, kind)
		}
	default:
		if _, err := name.ParseReference(ref, name.StrictValidation); err != nil {
			why := strings.TrimPrefix(err.Error(), "could not parse reference: "+ref)
			if why != "" {
				why = " (" + strings.TrimPrefix(why, ": ") + ")"
			}
			return fmt.Sprintf("%q is not a full registry reference such as docker.io/library/nginx:1.27 or REGISTRY/REPO@sha256:... (registry and tag or digest required)%s", ref, why)
		}
	}
	return ""
}

// validGoPackage checks the syntax of an import path or of a package path
// relative to the Go module ("./x"). Like the image builder it refuses ".."
// (a package outside the module) and elements starting with '-'.
func validGoPackage(p string) bool {
	if p == "." {
		return true
	}
	if p == "" || len(p) > 512 {
		return false
	}
	rest, _ := strings.CutPrefix(p, "./")
	for _, el := range strings.Split(rest, "/") {
		if el == "" || el == "." || el == ".." || el[0] == '-' || !allOf(el, func(c byte) bool {
			return isLetter(c) || isDigit(c) || strings.IndexByte("._~+-", c) >= 0
		}) {
			return false
		}
	}
	return true
}

// validServiceName: a lower-case DNS label, 1-63 of [a-z0-9-], starting
// and ending with a letter or digit, so that it is also a valid container ID
// and host name.
func validServiceName(s string) bool {
	alnum := func(c byte) bool { return isLower(c) || isDigit(c) }
	return len(s) >= 1 && len(s) <= 63 && alnum(s[0]) && alnum(s[len(s)-1]) &&
		allOf(s, func(c byte) bool { return alnum(c) || c == '-' })
}

const serviceNameRule = "must be 1-63 lower-case letters, digits or dashes, starting and ending with a letter or digit (it is also the container's ID and host name)"

// validVolumeName: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64.
func validVolumeName(s string) bool {
	return len(s) >= 1 && len(s) <= 64 && (isLetter(s[0]) || isDigit(s[0])) &&
		allOf(s, func(c byte) bool { return isLetter(c) || isDigit(c) || strings.IndexByte("_.-", c) >= 0 })
}

// cleanAbs reports whether p is an absolute, clean path other than "/"
// without NUL bytes.
func cleanAbs(p string) bool {
	return p != "/" && path.IsAbs(p) && path.Clean(p) == p && strings.IndexByte(p, 0) < 0 && len(p) <= 4096
}

// validateServices checks every service, fills defaults and the parsed
// fields. machine selects the machine config's default pull policy; image
// kinds that only the build can fetch are checked by the caller then.
func validateServices(services map[string]Service, d *decoder, machine bool) {
	for _, n := range sortedKeys(services) {
		s := services[n]
		validateService(n, &s, d, machine)
		services[n] = s
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func validateService(n string, s *Service, d *decoder, machine bool) {
	f := "services." + n
	bad := func(field, format string, args ...any) { d.bad(f+field, format, args...) }
	if !validServiceName(n) {
		d.errorf(d.keys[f], f, "service name %q %s", n, serviceNameRule)
	}
	s.PullPolicy = checkImageAndPull(s.Image, s.PullPolicy, machine, bad)
	s.NetworkMode = checkNetworkMode(s.NetworkMode, bad)

	s.Ports = nil
	for i, p := range s.PortsRaw {
		fi := fmt.Sprintf(".ports[%d]", i)
		port, msg := parsePort(p)
		if msg != "" {
			bad(fi, "%s", msg)
			continue
		}
		if s.NetworkMode != NetworkBridge {
			bad(fi, "ports are published only with network_mode bridge (this service has %s)", s.NetworkMode)
		}
		s.Ports = append(s.Ports, port)
	}
	s.Volumes = parseVolumes(s.VolumesRaw, ".volumes", bad)
	for i, t := range s.Tmpfs {
		if !cleanAbs(t) {
			bad(fmt.Sprintf(".tmpfs[%d]", i), "%q must be an absolute, clean path other than / (no '..')", t)
		}
	}

	switch r, msg := parseRestart(s.RestartRaw); {
	case msg != "":
		bad(".restart", "%s", msg)
	default:
		s.Restart = r
	}

	if h := s.Healthcheck; h != nil {
		checkHealthcheck(h, bad)
	}
	for dep, c := range s.DependsOn {
		switch c.Condition {
		case ConditionStarted, ConditionHealthy, ConditionCompleted:
		default:
			bad(".depends_on."+dep+".condition", "%q is not %s, %s or %s", c.Condition, ConditionStarted, ConditionHealthy, ConditionCompleted)
		}
	}

	r := &s.Resources
	if r.Memory != "" {
		b, msg := parseSize(r.Memory)
		switch {
		case msg != "":
			bad(".resources.memory", "%s", msg)
		case b < MinMemoryBytes:
			bad(".resources.memory", "%q is below the minimum of 6M", r.Memory)
		default:
			r.MemoryBytes = b
		}
	}
	if r.CPUs != 0 && !(r.CPUs > 0 && r.CPUs <= 1024) {
		bad(".resources.cpus", "%v must be more than 0 and at most 1024", r.CPUs)
	}
	if r.Pids < 0 {
		bad(".resources.pids", "%d may not be negative (0: no limit)", r.Pids)
	}

	if s.StopGracePeriod == 0 {
		s.StopGracePeriod = DefaultStopGracePeriod
	}
	if s.StopSignal != "" {
		name, num, ok := parseSignal(s.StopSignal)
		if !ok {
			bad(".stop_signal", "%q is not a signal name or number such as SIGTERM, TERM, 15 or SIGRTMIN+3", s.StopSignal)
		} else {
			s.StopSignal, s.StopSignalNumber = name, num
		}
	}
	checkUser(s.User, ".user", bad)
	if s.WorkingDir != "" && !(s.WorkingDir == "/" || cleanAbs(s.WorkingDir)) {
		bad(".working_dir", "%q must be an absolute, clean path", s.WorkingDir)
	}
	if s.Hostname == "" {
		s.Hostname = n
	} else if !validHostname(s.Hostname) {
		bad(".hostname", "%q is not a valid host name (dot-separated labels of letters, digits and dashes, at most 64 characters)", s.Hostname)
	}
	for i, sock := range s.Sockets {
		if msg := checkSocket(sock); msg != "" {
			bad(fmt.Sprintf(".sockets[%d]", i), "%s", msg)
		}
	}
	if len(s.Sockets) > 0 {
		// Refused rather than ignored: a service that expects LISTEN_FDS
		// would start without its listeners.
		bad(".sockets", "socket activation is not supported by this version of cairn yet; listen in the service and publish the port with ports:")
	}
	for _, l := range []struct {
		field string
		caps  []string
	}{{".cap_add", s.CapAdd}, {".cap_drop", s.CapDrop}} {
		for i, c := range l.caps {
			norm, ok := parseCapability(c)
			if !ok {
				bad(fmt.Sprintf("%s[%d]", l.field, i), "%q is not a capability name such as NET_ADMIN or CAP_NET_ADMIN, or ALL", c)
				continue
			}
			l.caps[i] = norm
		}
	}
	for _, k := range sortedKeys(s.Sysctls) {
		v := s.Sysctls[k]
		switch {
		case !namespacedSysctl(k):
			bad(".sysctls."+k, "%q is not a namespaced sysctl (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)", k)
		case strings.ContainsAny(v, "\x00\n"):
			bad(".sysctls."+k, "the value contains a NUL byte or a new line")
		}
	}
}

// checkNetworkMode checks a network_mode and returns it with the default,
// bridge, filled in.
func checkNetworkMode(mode string, bad func(string, string, ...any)) string {
	switch mode {
	case "":
		return NetworkBridge
	case NetworkBridge, NetworkHost, NetworkNone:
	default:
		bad(".network_mode", "%q is not bridge, host or none", mode)
	}
	return mode
}

// checkImageAndPull checks image and pull_policy and returns the policy
// with its default.
func checkImageAndPull(image, pull string, machine bool, bad func(string, string, ...any)) string {
	if image == "" {
		bad(".image", "required")
	} else if msg := checkImage(image); msg != "" {
		bad(".image", "%s", msg)
	}
	if pull == "" {
		pull = PullBuild
		if machine {
			pull = PullMissing
		}
	}
	switch pull {
	case PullBuild, PullMissing, PullAlways:
	default:
		bad(".pull_policy", "%q is not build, missing or always", pull)
		return pull
	}
	if kind, _ := ImageKind(image); kind != ImageRegistry && pull != PullBuild && !machine && image != "" {
		bad(".pull_policy", "%s: images are made at build time; only pull_policy build is possible", kind)
	}
	return pull
}

func parseVolumes(raw []string, field string, bad func(string, string, ...any)) []Volume {
	var out []Volume
	targets := map[string]int{}
	for i, v := range raw {
		fi := fmt.Sprintf("%s[%d]", field, i)
		vol, msg := parseVolume(v)
		if msg != "" {
			bad(fi, "%s", msg)
			continue
		}
		if j, dup := targets[vol.Target]; dup {
			bad(fi, "target %q is already mounted by %s[%d]", vol.Target, field[1:], j)
			continue
		}
		targets[vol.Target] = i
		out = append(out, vol)
	}
	return out
}

// parseVolume parses "NAME:/target[:ro|:rw]" or "/host:/target[:ro|:rw]".
func parseVolume(s string) (Volume, string) {
	var v Volume
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Sprintf("%q is not NAME:/path[:ro] or /host/path:/path[:ro]", s)
	}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return v, fmt.Sprintf("%q: mode %q is not ro or rw", s, parts[2])
		}
	}
	src, target := parts[0], parts[1]
	switch {
	case strings.HasPrefix(src, "/"):
		if !(src == "/" || cleanAbs(src)) {
			return v, fmt.Sprintf("%q: host path %q must be absolute and clean (no '..')", s, src)
		}
		v.Source = src
	case validVolumeName(src):
		v.Name = src
	default:
		return v, fmt.Sprintf("%q: %q is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64)", s, src)
	}
	if !cleanAbs(target) {
		return v, fmt.Sprintf("%q: target %q must be an absolute, clean path other than / (no '..')", s, target)
	}
	v.Target = target
	return v, ""
}

// parsePort parses "[IP:]HOST:CTR[/tcp|udp]"; an IPv6 address is written
// in brackets.
func parsePort(s string) (Port, string) {
	p := Port{Protocol: "tcp"}
	bad := func(why string) (Port, string) {
		return Port{}, fmt.Sprintf("%q is not [IP:]HOST:CONTAINER[/tcp|/udp]: %s", s, why)
	}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		p.Protocol = rest[i+1:]
		rest = rest[:i]
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return bad(fmt.Sprintf("protocol %q is not tcp or udp", p.Protocol))
		}
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("the host port is required")
	}
	ctr := rest[i+1:]
	rest = rest[:i]
	host := rest
	if j := strings.LastIndexByte(rest, ':'); j >= 0 {
		ip := rest[:j]
		host = rest[j+1:]
		if strings.HasPrefix(ip, "[") && strings.HasSuffix(ip, "]") {
			ip = ip[1 : len(ip)-1]
		} else if strings.Contains(ip, ":") {
			return bad("write an IPv6 address in brackets")
		}
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return bad(fmt.Sprintf("%q is not an IP address", ip))
		}
		if !a.IsUnspecified() {
			p.HostIP = a.String()
		}
	}
	var ok bool
	if p.HostPort, ok = parsePortNumber(host); !ok {
		return bad(fmt.Sprintf("host port %q is not a number 1-65535 (ranges are not supported)", host))
	}
	if p.ContainerPort, ok = parsePortNumber(ctr); !ok {
		return bad(fmt.Sprintf("container port %q is not a number 1-65535 (ranges are not supported)", ctr))
	}
	return p, ""
}

func parsePortNumber(s string) (uint16, bool) {
	if s == "" || len(s) > 5 || !allOf(s, isDigit) {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// parseRestart parses "no", "on-failure[:N]", "always" or "unless-stopped";
// "" is "no".
func parseRestart(s string) (RestartPolicy, string) {
	switch s {
	case "", "no":
		return RestartPolicy{Mode: "no"}, ""
	case "always", "unless-stopped", "on-failure":
		return RestartPolicy{Mode: s}, ""
	}
	if n, ok := strings.CutPrefix(s, "on-failure:"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 || v > 1_000_000 || !allOf(n, isDigit) {
			return RestartPolicy{}, fmt.Sprintf("%q: the retry count must be a whole number 0-1000000", s)
		}
		return RestartPolicy{Mode: "on-failure", MaxRetries: v}, ""
	}
	return RestartPolicy{}, fmt.Sprintf("%q is not no, on-failure[:N], always or unless-stopped", s)
}

func checkHealthcheck(h *Healthcheck, bad func(string, string, ...any)) {
	n := 0
	if h.Exec != nil {
		n++
		if len(h.Exec) == 0 {
			bad(".healthcheck.exec", "empty command")
		}
	}
	if h.HTTP != "" {
		n++
		u, err := url.Parse(h.HTTP)
		if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil {
			bad(".healthcheck.http", "%q is not an http:// URL such as http://127.0.0.1:8080/healthz", h.HTTP)
		}
	}
	if h.TCP != "" {
		n++
		host, port, err := net.SplitHostPort(h.TCP)
		if _, ok := parsePortNumber(port); err != nil || host == "" || !ok {
			bad(".healthcheck.tcp", "%q is not HOST:PORT such as 127.0.0.1:5432", h.TCP)
		}
	}
	if n != 1 {
		bad(".healthcheck", "needs exactly one of exec, http and tcp (has %d)", n)
	}
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Timeout == 0 {
		h.Timeout = DefaultHealthTimeout
	}
	switch {
	case h.Retries == 0:
		h.Retries = DefaultHealthRetries
	case h.Retries < 0 || h.Retries > 1000:
		bad(".healthcheck.retries", "%d must be 1-1000", h.Retries)
	}
}

// parseSize parses a size in bytes: a whole number optionally followed by
// b, k, m, g or t (binary multiples, case-insensitive, as Docker's).
func parseSize(s string) (int64, string) {
	num := strings.TrimRight(s, "bBkKmMgGtT")
	unit := strings.ToLower(s[len(num):])
	mult := map[string]int64{"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
		"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}[unit]
	if mult == 0 || num == "" || len(num) > 19 || !allOf(num, isDigit) {
		return 0, fmt.Sprintf("%q is not a size such as 512k, 128M or 1G (binary multiples)", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Sprintf("%q is too large", s)
	}
	return n * mult, ""
}

// parseSignal accepts a signal name or number as runc does ("SIGTERM",
// "TERM", "15", "SIGRTMIN+3") and returns its canonical name and number.
func parseSignal(s string) (string, int, bool) {
	sig, err := signame.Parse(s)
	if err != nil {
		return "", 0, false
	}
	return signame.Name(sig), int(sig), true
}

// checkUser: "name", "uid", "name:group" or "uid:gid".
func checkUser(u, field string, bad func(string, string, ...any)) {
	if u == "" {
		return
	}
	parts := strings.Split(u, ":")
	ok := len(parts) <= 2 && len(u) <= 256
	for _, p := range parts {
		if p == "" || !allOf(p, func(c byte) bool { return isLetter(c) || isDigit(c) || strings.IndexByte("_.-$", c) >= 0 }) {
			ok = false
		}
	}
	if !ok {
		bad(field, "%q is not NAME, UID, NAME:GROUP or UID:GID", u)
	}
}

// checkSocket checks "tcp://[IP]:PORT", "udp://[IP]:PORT" or
// "unix:///abs/path".
func checkSocket(s string) string {
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		if !cleanAbs(p) || len(p) > 107 {
			return fmt.Sprintf("%q: unix:// takes an absolute, clean path of at most 107 bytes", s)
		}
		return ""
	}
	addr, ok := strings.CutPrefix(s, "tcp://")
	if !ok {
		addr, ok = strings.CutPrefix(s, "udp://")
	}
	if !ok {
		return fmt.Sprintf("%q is not tcp://[IP]:PORT, udp://[IP]:PORT or unix:///path", s)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q: %q is not [IP]:PORT", s, addr)
	}
	if _, ok := parsePortNumber(port); !ok {
		return fmt.Sprintf("%q: port %q is not a number 1-65535", s, port)
	}
	if host != "" {
		if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" {
			return fmt.Sprintf("%q: %q is not an IP address", s, host)
		}
	}
	return ""
}

// capabilities are Linux's capability names without the CAP_ prefix.
var capabilities = map[string]bool{
	"CHOWN": true, "DAC_OVERRIDE": true, "DAC_READ_SEARCH": true, "FOWNER": true, "FSETID": true,
	"KILL": true, "SETGID": true, "SETUID": true, "SETPCAP": true, "LINUX_IMMUTABLE": true,
	"NET_BIND_SERVICE": true, "NET_BROADCAST": true, "NET_ADMIN": true, "NET_RAW": true,
	"IPC_LOCK": true, "IPC_OWNER": true, "SYS_MODULE": true, "SYS_RAWIO": true, "SYS_CHROOT": true,
	"SYS_PTRACE": true, "SYS_PACCT": true, "SYS_ADMIN": true, "SYS_BOOT": true, "SYS_NICE": true,
	"SYS_RESOURCE": true, "SYS_TIME": true, "SYS_TTY_CONFIG": true, "MKNOD": true, "LEASE": true,
	"AUDIT_WRITE": true, "AUDIT_CONTROL": true, "SETFCAP": true, "MAC_OVERRIDE": true,
	"MAC_ADMIN": true, "SYSLOG": true, "WAKE_ALARM": true, "BLOCK_SUSPEND": true,
	"AUDIT_READ": true, "PERFMON": true, "BPF": true, "CHECKPOINT_RESTORE": true,
}

// parseCapability accepts a capability with or without CAP_, in any case,
// or ALL, and returns it as "CAP_NET_ADMIN" or "ALL".
func parseCapability(c string) (string, bool) {
	u := strings.ToUpper(c)
	if u == "ALL" {
		return u, true
	}
	u = strings.TrimPrefix(u, "CAP_")
	return "CAP_" + u, capabilities[u]
}

// namespacedSysctl reports whether a sysctl is per network or IPC
// namespace, so a container may set it.
func namespacedSysctl(k string) bool {
	if strings.ContainsAny(k, "\x00/ \n") || strings.Contains(k, "..") || strings.HasSuffix(k, ".") {
		return false
	}
	switch {
	case strings.HasPrefix(k, "net.") && len(k) > 4,
		strings.HasPrefix(k, "fs.mqueue.") && len(k) > 10,
		k == "kernel.sem",
		k == "kernel.shmall", k == "kernel.shmmax", k == "kernel.shmmni", k == "kernel.shm_rmid_forced",
		k == "kernel.msgmax", k == "kernel.msgmnb", k == "kernel.msgmni":
		return true
	}
	return false
}

// validateOnboot checks the onboot containers: unique names (also distinct
// from the services', as they share the container ID space), images and
// defaults.
func validateOnboot(list []Onboot, services map[string]Service, d *decoder) {
	seen := map[string]int{}
	for i := range list {
		o := &list[i]
		f := fmt.Sprintf("onboot[%d]", i)
		bad := func(field, format string, args ...any) { d.bad(f+field, format, args...) }
		switch {
		case o.Name == "":
			bad(".name", "required")
		case !validServiceName(o.Name):
			bad(".name", "%q %s", o.Name, serviceNameRule)
		default:
			if j, dup := seen[o.Name]; dup {
				bad(".name", "%q is already the name of onboot[%d]", o.Name, j)
			} else if _, clash := services[o.Name]; clash {
				bad(".name", "%q is already the name of a service (they share the container IDs)", o.Name)
			}
			seen[o.Name] = i
		}
		o.PullPolicy = checkImageAndPull(o.Image, o.PullPolicy, false, bad)
		o.Volumes = parseVolumes(o.VolumesRaw, ".volumes", bad)
		checkUser(o.User, ".user", bad)
		o.NetworkMode = checkNetworkMode(o.NetworkMode, bad)
		if o.Timeout == 0 {
			o.Timeout = DefaultOnbootTimeout
		}
	}
}

// crossCheck checks what concerns several services: depends_on names,
// conditions and cycles, and host port conflicts.
func crossCheck(services map[string]Service, bad func(string, string, ...any)) {
	names := sortedKeys(services)
	for _, n := range names {
		s := services[n]
		for _, dep := range sortedKeys(s.DependsOn) {
			f := "services." + n + ".depends_on." + dep
			t, ok := services[dep]
			switch {
			case dep == n:
				bad(f, "a service cannot depend on itself")
			case !ok:
				bad(f, "no service is called %q (services: %s)", dep, strings.Join(names, ", "))
			case s.DependsOn[dep].Condition == ConditionHealthy && t.Healthcheck == nil && !t.Notify:
				bad(f+".condition", "service_healthy needs %q to have a healthcheck or notify: true", dep)
			}
		}
	}
	// Cycles: a depth-first search from every service, reporting each cycle
	// once, at the first service of it in name order.
	state := map[string]int{} // 0 new, 1 on the stack, 2 done
	var stack []string
	var visit func(n string)
	visit = func(n string) {
		state[n] = 1
		stack = append(stack, n)
		for _, dep := range sortedKeys(services[n].DependsOn) {
			if _, ok := services[dep]; !ok || dep == n {
				continue
			}
			switch state[dep] {
			case 0:
				visit(dep)
			case 1:
				i := len(stack) - 1
				for stack[i] != dep {
					i--
				}
				cycle := append(append([]string{}, stack[i:]...), dep)
				bad("services."+n+".depends_on."+dep, "dependency cycle: %s", strings.Join(cycle, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
	}
	for _, n := range names {
		if state[n] == 0 {
			visit(n)
		}
	}
	// Host ports: the same port and protocol twice conflict unless both
	// name different, specific addresses.
	type owner struct {
		field string
		ip    string
	}
	used := map[string][]owner{}
	for _, n := range names {
		for i, p := range services[n].Ports {
			key := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
			f := fmt.Sprintf("services.%s.ports[%d]", n, i)
			for _, o := range used[key] {
				if o.ip == "" || p.HostIP == "" || o.ip == p.HostIP {
					bad(f, "host port %s is already published by %s", key, o.field)
					break
				}
			}
			used[key] = append(used[key], owner{f, p.HostIP})
		}
	}
}
