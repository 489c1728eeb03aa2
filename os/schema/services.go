package schema

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"cairn.dev/cairn/os/netconf"
)

// This file holds the types of the services, onboot and update sections and
// of the machine config. Fields tagged yaml:"-" are filled by validation
// from the written ones, so that consumers (the image builder, the
// supervisor in PID 1, the update agent) never parse strings again.

// Service is one long-running container, declared with Compose's names and
// meanings where Compose has the field.
type Service struct {
	// Image is where the image comes from: "go://PKG" (a static Go package
	// built into a one-layer image), "oci-layout:DIR", "docker-archive:FILE"
	// (paths relative to the OS file), or a registry reference by tag or
	// digest. Images are fetched at build time and baked into the root,
	// except with PullPolicy "always" or "missing", and in a machine config,
	// where registry images are pulled at run time into STATE.
	Image string `yaml:"image"`
	// PullPolicy is "build" (the default in an OS file: baked into the root),
	// "missing" (pull at run time unless the store has it; the default in a
	// machine config) or "always".
	PullPolicy string `yaml:"pull_policy"`
	// Entrypoint and Command override the image's; written as a list or as a
	// string split on white space. Nil: the image's.
	Entrypoint StringList `yaml:"entrypoint"`
	Command    StringList `yaml:"command"`
	// Environment is a mapping or a list of KEY=VALUE.
	Environment Env `yaml:"environment"`
	// Ports publish container ports: "[IP:]HOST:CTR[/tcp|udp]" (Ports
	// holds them parsed).
	PortsRaw []string `yaml:"ports"`
	Ports    []Port   `yaml:"-"`
	// Volumes: "NAME:/path[:ro]" (a named volume on STATE under
	// /var/lib/cairn/volumes/NAME) or "/host/path:/path[:ro]".
	VolumesRaw []string `yaml:"volumes"`
	Volumes    []Volume `yaml:"-"`
	// Tmpfs are paths in the container that get a fresh tmpfs.
	Tmpfs []string `yaml:"tmpfs"`
	// Restart: "no" (the default), "on-failure[:N]", "always" or
	// "unless-stopped" (Restart holds it parsed).
	RestartRaw string        `yaml:"restart"`
	Restart    RestartPolicy `yaml:"-"`
	// Healthcheck, when set, decides the service's health.
	Healthcheck *Healthcheck `yaml:"healthcheck"`
	// DependsOn is a list of service names (condition service_started) or a
	// mapping name -> {condition: service_started | service_healthy |
	// service_completed_successfully}.
	DependsOn DependsOn `yaml:"depends_on"`
	// Resources are cgroup v2 limits.
	Resources Resources `yaml:"resources"`
	// StopGracePeriod is how long a stop waits after StopSignal before
	// SIGKILL (default 10s); StopSignal defaults to the image's, else
	// SIGTERM.
	// StopSignal is validated and rewritten as "SIGTERM" (a real-time
	// signal keeps its number); StopSignalNumber holds its number (0: the
	// image's, else SIGTERM).
	StopGracePeriod  Duration `yaml:"stop_grace_period"`
	StopSignal       string   `yaml:"stop_signal"`
	StopSignalNumber int      `yaml:"-"`
	// User ("name", "uid", "name:group", "uid:gid") and WorkingDir override
	// the image's.
	User       string `yaml:"user"`
	WorkingDir string `yaml:"working_dir"`
	// Hostname of the container (default: the service name).
	Hostname string `yaml:"hostname"`
	// ReadOnly makes the container's root file system read-only.
	ReadOnly bool `yaml:"read_only"`
	// NetworkMode is "bridge" (the default), "host" or "none".
	NetworkMode string `yaml:"network_mode"`
	// WaitForNetwork holds the service back until the machine's network is
	// online (an interface up with an address and a default route), for
	// services that must reach the outside as soon as they start. Pulls
	// at run time always wait for it.
	WaitForNetwork bool `yaml:"wait_for_network"`
	// Notify makes readiness come from sd_notify: PID 1 binds a notify
	// socket into the container as $NOTIFY_SOCKET, and the service counts
	// as healthy once it sends READY=1.
	Notify bool `yaml:"notify"`
	// Sockets are listeners PID 1 opens and passes as LISTEN_FDS (socket
	// activation): "tcp://[IP]:PORT", "udp://[IP]:PORT" or "unix:///path".
	// Reserved: validation refuses it until the supervisor passes them.
	Sockets []string `yaml:"sockets"`
	// CapAdd and CapDrop adjust Docker's default capability set ("ALL"
	// allowed); Sysctls are namespaced sysctls.
	CapAdd  []string          `yaml:"cap_add"`
	CapDrop []string          `yaml:"cap_drop"`
	Sysctls map[string]string `yaml:"sysctls"`
}

// Onboot is a one-shot container run to completion, in order, before the
// services start (as in LinuxKit). Name is its label on the console.
type Onboot struct {
	Name        string     `yaml:"name"`
	Image       string     `yaml:"image"`
	PullPolicy  string     `yaml:"pull_policy"`
	Entrypoint  StringList `yaml:"entrypoint"`
	Command     StringList `yaml:"command"`
	Environment Env        `yaml:"environment"`
	VolumesRaw  []string   `yaml:"volumes"`
	Volumes     []Volume   `yaml:"-"`
	User        string     `yaml:"user"`
	NetworkMode string     `yaml:"network_mode"`
	// Timeout bounds the run (default 5m); a failed or timed-out onboot
	// container is reported and the boot goes on.
	Timeout Duration `yaml:"timeout"`
}

// StringList is a command: a YAML list, or a string split on white space.
type StringList []string

// Env is an environment: a mapping, or a list of KEY=VALUE.
type Env map[string]string

// DependsOn maps a service name to the condition it must reach first.
type DependsOn map[string]Dependency

// Dependency is one depends_on entry.
type Dependency struct {
	// Condition: ConditionStarted (the default), ConditionHealthy or
	// ConditionCompleted.
	Condition string `yaml:"condition"`
}

// depends_on conditions, as Compose names them.
const (
	ConditionStarted   = "service_started"
	ConditionHealthy   = "service_healthy"
	ConditionCompleted = "service_completed_successfully"
)

// Port is one published port.
type Port struct {
	HostIP        string // "" = all addresses
	HostPort      uint16
	ContainerPort uint16
	Protocol      string // "tcp" or "udp"
}

// Volume is one volume mount.
type Volume struct {
	// Name is set for a named volume, Source for a host path.
	Name, Source string
	Target       string
	ReadOnly     bool
}

// RestartPolicy is a parsed restart field.
type RestartPolicy struct {
	// Mode: "no", "on-failure", "always" or "unless-stopped".
	Mode string
	// MaxRetries bounds on-failure restarts (0: unbounded).
	MaxRetries int
}

// Healthcheck is exactly one of Exec (a command run in the container), HTTP
// (a URL fetched from inside the container's network namespace; any 2xx or
// 3xx status is healthy) or TCP ("HOST:PORT" connected to from inside the
// container's network namespace).
type Healthcheck struct {
	Exec StringList `yaml:"exec"`
	HTTP string     `yaml:"http"`
	TCP  string     `yaml:"tcp"`
	// Interval between checks (default 30s), Timeout of one check (default
	// 30s), Retries consecutive failures before unhealthy (default 3), and
	// StartPeriod during which failures do not count (default 0).
	Interval    Duration `yaml:"interval"`
	Timeout     Duration `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod Duration `yaml:"start_period"`
}

// Resources are a service's cgroup v2 limits; zero means no limit.
type Resources struct {
	// Memory is a size such as "128M" or "1G" (MemoryBytes holds it).
	Memory      string `yaml:"memory"`
	MemoryBytes int64  `yaml:"-"`
	// CPUs is a number of CPUs, such as 0.5.
	CPUs float64 `yaml:"cpus"`
	Pids int64   `yaml:"pids"`
}

// Update configures the update agent.
type Update struct {
	// Server is the base URL of the update repository (`cairn serve`, or any
	// web server holding a `cairn publish` repository). Required.
	Server string `yaml:"server"`
	// Channel is the channel followed (default "stable").
	Channel string `yaml:"channel"`
	// Root is the path, relative to the OS file, of the repository's trusted
	// root.json; the builder bakes it into the root at UpdateRootPath.
	Root string `yaml:"root"`
	// Interval between checks (default 1h), plus up to Jitter at random
	// (default Interval/10).
	Interval Duration `yaml:"interval"`
	Jitter   Duration `yaml:"jitter"`
	// BandwidthLimit caps downloads: bytes per second as a size ("10M"); ""
	// means no limit (BandwidthBytes holds it).
	BandwidthLimit string `yaml:"bandwidth_limit"`
	BandwidthBytes int64  `yaml:"-"`
	Reboot         Reboot `yaml:"reboot"`
	Trial          Trial  `yaml:"trial"`
}

// UpdateRootPath is where the builder puts update.root in the root.
const UpdateRootPath = "/usr/share/cairn/update/root.json"

// Reboot is the reboot policy after an update was written.
type Reboot struct {
	// Strategy: "immediate" (the default), "window" or "fleetlock".
	Strategy string `yaml:"strategy"`
	// Window is a maintenance window such as "Sat,Sun 02:00-04:00" in
	// Timezone (an IANA name, default UTC), for the window strategy.
	Window   string `yaml:"window"`
	Timezone string `yaml:"timezone"`
	// FleetLock is the FleetLock server's base URL (default: Server) and
	// Group the lock group (default "default"), for the fleetlock strategy.
	FleetLock string `yaml:"fleetlock"`
	Group     string `yaml:"group"`
}

// Trial is how a trial boot of a new version is judged.
type Trial struct {
	// HealthyFor is how long every service with a health check must stay
	// healthy before the boot is blessed (default 30s); Timeout bounds the
	// whole judgement before the entry is marked bad (default 5m).
	HealthyFor Duration `yaml:"healthy_for"`
	Timeout    Duration `yaml:"timeout"`
}

// Machine is a machine config: the machine-level subset of the OS file,
// merged over the image's at first boot (see OS.Merge).
type Machine struct {
	Hostname string             `yaml:"hostname"`
	Network  *netconf.Config    `yaml:"network"`
	Services map[string]Service `yaml:"services"`
	Files    []File             `yaml:"files"`

	// Source is the path the config was read from, for error messages.
	Source string `yaml:"-"`

	// nodes are the YAML nodes by field path, for Merge's errors.
	nodes map[string]*yaml.Node
}

// Duration is a Go duration written as "10s", "1m30s" or "500ms".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses a Go duration; negative durations are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%w: not a duration such as 10s or 1m30s (a number needs a unit)", errSyntax)
	}
	if v < 0 {
		return fmt.Errorf("a duration may not be negative")
	}
	*d = Duration(v)
	return nil
}

// expectation describes what a Duration is written as, for the decoder's
// "expected ..., got ..." messages.
func (Duration) expectation() string { return "a duration such as 10s or 1m30s" }

// MarshalText writes d as a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
