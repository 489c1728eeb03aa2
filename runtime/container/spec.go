package container

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/caps"
	"cairn.dev/cairn/runtime/seccomp"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DockerMaskedPaths are the paths Docker hides (moby oci/defaults.go).
func DockerMaskedPaths() []string {
	return []string{
		"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
	}
}

// DockerReadonlyPaths are the paths Docker mounts read-only.
func DockerReadonlyPaths() []string {
	return []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
}

// DefaultSpec returns a spec with Docker's default isolation for rootfs and
// args: mount, pid, network, ipc, uts and cgroup namespaces, Docker's
// capability set, default seccomp profile, masked and read-only paths,
// no_new_privs, a tmpfs /dev with devpts, shm and mqueue, read-only sysfs
// and cgroup2. Callers adjust it (user, env, mounts, resources) before Create.
func DefaultSpec(rootfs string, args ...string) *specs.Spec {
	capset := caps.Default()
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: rootfs},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=" + defaultPath},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  capset,
				Effective: capset,
				Permitted: capset,
			},
			NoNewPrivileges: true,
		},
		Hostname: "cairn",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup2", Source: "cgroup2", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
			},
			MaskedPaths:   DockerMaskedPaths(),
			ReadonlyPaths: DockerReadonlyPaths(),
			Seccomp:       seccomp.DefaultProfile(capset),
		},
	}
}
