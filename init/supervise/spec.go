package supervise

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/caps"
	"cairn.dev/cairn/runtime/container"
)

// cpuPeriod is the cgroup cpu.max period used for the cpus limit.
const cpuPeriod = 100000

// specInput is what a container spec is built from.
type specInput struct {
	Name    string // service (or onboot) name
	Service *schema.Service
	Image   ImageConfig
	Rootfs  string
	// VolumesDir holds named volumes (VolumesDir/NAME).
	VolumesDir string
	// NetNS is the network namespace to join ("" with host networking
	// drops the namespace; with "none" a fresh one is made).
	NetNS string
	Mode  string // bridge, host or none
	// Files are bind-mounted read-only over /etc/<name> (resolv.conf,
	// hosts, hostname).
	Files map[string]string
	// NotifySocket, if set, is bind-mounted at /run/notify.sock.
	NotifySocket string
}

// notifyPath is where the notify socket appears in the container.
const notifyPath = "/run/notify.sock"

// commandLine merges the image's entrypoint and cmd with the service's as
// Compose does: an entrypoint given in the service drops the image's cmd.
func commandLine(svc *schema.Service, img ImageConfig) []string {
	ep, cmd := img.Entrypoint, img.Cmd
	if svc.Entrypoint != nil {
		ep, cmd = svc.Entrypoint, nil
	}
	if svc.Command != nil {
		cmd = svc.Command
	}
	return append(slices.Clone([]string(ep)), cmd...)
}

// mergeEnv returns base with the KEY=VALUE entries of over replacing or
// adding to it (over's keys in sorted order, for a stable result).
func mergeEnv(base []string, over map[string]string) []string {
	out := slices.Clone(base)
	for _, k := range slices.Sorted(maps.Keys(over)) {
		kv := k + "=" + over[k]
		replaced := false
		for i, e := range out {
			if ek, _, _ := strings.Cut(e, "="); ek == k {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// buildSpec returns the container spec of one run of a service.
func buildSpec(in specInput) (*specs.Spec, error) {
	svc := in.Service
	args := commandLine(svc, in.Image)
	if len(args) == 0 {
		return nil, fmt.Errorf("service %s: no command: the image has no entrypoint or cmd and the service gives none", in.Name)
	}
	spec := container.DefaultSpec(in.Rootfs, args...)
	if len(in.Image.Env) > 0 {
		spec.Process.Env = slices.Clone(in.Image.Env)
		if !slices.ContainsFunc(spec.Process.Env, func(e string) bool { return strings.HasPrefix(e, "PATH=") }) {
			spec.Process.Env = append(spec.Process.Env, container.DefaultSpec("/").Process.Env...)
		}
	}
	spec.Process.Env = mergeEnv(spec.Process.Env, svc.Environment)
	switch {
	case svc.WorkingDir != "":
		spec.Process.Cwd = svc.WorkingDir
	case in.Image.WorkingDir != "":
		spec.Process.Cwd = in.Image.WorkingDir
	}
	if !path.IsAbs(spec.Process.Cwd) {
		return nil, fmt.Errorf("service %s: working_dir %q is not absolute", in.Name, spec.Process.Cwd)
	}
	switch {
	case svc.User != "":
		spec.Process.User.Username = svc.User
	case in.Image.User != "":
		spec.Process.User.Username = in.Image.User
	}
	spec.Hostname = svc.Hostname
	if spec.Hostname == "" {
		spec.Hostname = hostnameFor(in.Name)
	}
	spec.Root.Readonly = svc.ReadOnly
	stop := svc.StopSignal
	if stop == "" {
		stop = in.Image.StopSignal
	}
	if stop != "" {
		spec.Annotations = map[string]string{"org.opencontainers.image.stopSignal": stop}
	}

	// Resources.
	r := svc.Resources
	if r.MemoryBytes > 0 || r.CPUs > 0 || r.Pids > 0 {
		res := &specs.LinuxResources{}
		if r.MemoryBytes > 0 {
			m := r.MemoryBytes
			res.Memory = &specs.LinuxMemory{Limit: &m}
			// No swap beyond the limit, so that the limit means what it says.
			swap := m
			res.Memory.Swap = &swap
		}
		if r.CPUs > 0 {
			q := int64(r.CPUs * cpuPeriod)
			if q < 1000 {
				q = 1000
			}
			p := uint64(cpuPeriod)
			res.CPU = &specs.LinuxCPU{Quota: &q, Period: &p}
		}
		if r.Pids > 0 {
			p := r.Pids
			res.Pids = &specs.LinuxPids{Limit: &p}
		}
		spec.Linux.Resources = res
	}

	// Capabilities.
	if len(svc.CapAdd) > 0 || len(svc.CapDrop) > 0 {
		set, err := adjustCaps(spec.Process.Capabilities.Bounding, svc.CapAdd, svc.CapDrop)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", in.Name, err)
		}
		spec.Process.Capabilities.Bounding = set
		spec.Process.Capabilities.Effective = set
		spec.Process.Capabilities.Permitted = set
	}
	if len(svc.Sysctls) > 0 {
		spec.Linux.Sysctl = maps.Clone(svc.Sysctls)
	}

	// Network.
	switch in.Mode {
	case "host":
		spec.Linux.Namespaces = slices.DeleteFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.NetworkNamespace
		})
	default:
		for i := range spec.Linux.Namespaces {
			if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path = in.NetNS
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(in.Files)) {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/etc/" + name, Type: "bind", Source: in.Files[name], Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}

	// Mounts.
	for _, t := range svc.Tmpfs {
		if !path.IsAbs(t) {
			return nil, fmt.Errorf("service %s: tmpfs %q is not an absolute path", in.Name, t)
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: t, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}})
	}
	for _, v := range svc.Volumes {
		src := v.Source
		if v.Name != "" {
			src = path.Join(in.VolumesDir, v.Name)
		}
		if !path.IsAbs(src) || !path.IsAbs(v.Target) {
			return nil, fmt.Errorf("service %s: volume %q:%q needs absolute paths", in.Name, src, v.Target)
		}
		opts := []string{"rbind", "nosuid", "nodev"}
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: v.Target, Type: "bind", Source: src, Options: opts})
	}
	if in.NotifySocket != "" {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: notifyPath, Type: "bind", Source: in.NotifySocket, Options: []string{"bind", "nosuid", "nodev", "noexec"}})
		spec.Process.Env = mergeEnv(spec.Process.Env, map[string]string{"NOTIFY_SOCKET": notifyPath})
	}
	return spec, nil
}

// adjustCaps applies Compose's cap_add and cap_drop ("ALL" allowed; names
// with or without the CAP_ prefix) to set.
func adjustCaps(set, add, drop []string) ([]string, error) {
	norm := func(n string) string {
		n = strings.ToUpper(n)
		if n != "ALL" && !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		return n
	}
	all := func() ([]string, error) {
		last, err := caps.LastCap()
		if err != nil {
			return nil, err
		}
		var out []string
		for c := 0; c <= last; c++ {
			if n := caps.Name(c); n != "" {
				out = append(out, n)
			}
		}
		return out, nil
	}
	out := slices.Clone(set)
	for _, d := range drop {
		d = norm(d)
		if d == "ALL" {
			out = nil
			continue
		}
		if _, err := caps.Value(d); err != nil {
			return nil, fmt.Errorf("cap_drop: %w", err)
		}
		out = slices.DeleteFunc(out, func(c string) bool { return c == d })
	}
	for _, a := range add {
		a = norm(a)
		if a == "ALL" {
			l, err := all()
			if err != nil {
				return nil, fmt.Errorf("cap_add: %w", err)
			}
			out = l
			continue
		}
		if _, err := caps.Value(a); err != nil {
			return nil, fmt.Errorf("cap_add: %w", err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// hostnameFor makes a valid hostname from a service name.
func hostnameFor(name string) string {
	h := strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, name), "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if h == "" {
		return "cairn"
	}
	return h
}
