// Package ociruntime is the runc-compatible command line of Cairn's
// container runtime. The guest binary runs it when invoked as
// "cairn-runtime" (argv[0]), so that podman, containerd or conmon can use
// Cairn as their OCI runtime in place of runc.
//
// Supported: global --root, --log, --log-format (text|json),
// --systemd-cgroup (refused when true), --debug/--rootless/--criu
// (accepted, ignored when harmless); commands create, start, state, kill,
// delete, run, exec, spec, list and --version. A terminal
// (process.terminal, exec --tty) needs --console-socket: the pty master is
// sent over it as runc does.
//
// Like runc the creating process exits after create: the container
// process is reparented to the caller's subreaper (containerd-shim,
// conmon) or to init; state derives the status from the process itself
// (PID plus start time) and delete removes the cgroup and the state.
package ociruntime

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"syscall"

	"cairn.dev/cairn/internal/signame"
)

// DefaultRoot is the state directory when --root is not given.
const DefaultRoot = "/run/cairn-runtime"

// globalOpts are the flags before the command.
type globalOpts struct {
	Root          string
	Log           string
	LogFormat     string
	SystemdCgroup bool
	CgroupParent  string
	Debug         bool
	Version       bool
}

// invocation is a parsed command line.
type invocation struct {
	Global globalOpts
	Cmd    string // create start state kill delete run spec list version help
	ID     string

	Bundle        string
	PidFile       string
	ConsoleSocket string
	PreserveFDs   int
	Detach        bool
	Force         bool
	All           bool
	Signal        syscall.Signal
	Format        string
	Quiet         bool
	Rootless      bool

	// exec
	ProcessFile string   // --process: a runtime-spec process JSON
	Args        []string // the command after the container ID
	Env         []string
	Cwd         string
	User        string // uid[:gid] (names are resolved in the container's /etc/passwd)
	AddGids     []string
	Caps        []string
	NoNewPrivs  bool
	Tty         bool
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// usageError is a command-line error.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseArgs parses args (without argv[0]). It never touches the system.
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{}
	g := &inv.Global
	fs := newFlagSet("cairn-runtime")
	fs.StringVar(&g.Root, "root", DefaultRoot, "state directory")
	fs.StringVar(&g.Log, "log", "", "log file")
	fs.StringVar(&g.LogFormat, "log-format", "text", "text or json")
	fs.BoolVar(&g.SystemdCgroup, "systemd-cgroup", false, "systemd cgroup driver (not supported)")
	fs.StringVar(&g.CgroupParent, "cgroup-parent", "", "cgroup (below the cgroup2 root) for containers without linux.cgroupsPath")
	fs.BoolVar(&g.Debug, "debug", false, "ignored")
	rootless := fs.String("rootless", "auto", "rootless mode (only auto/false)")
	fs.String("criu", "", "ignored")
	fs.BoolVar(&g.Version, "version", false, "print the version")
	fs.BoolVar(&g.Version, "v", false, "print the version")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, usagef("%v", err)
	}
	switch g.LogFormat {
	case "text", "json":
	default:
		return inv, usagef("invalid --log-format %q (want text or json)", g.LogFormat)
	}
	if g.Root == "" {
		return inv, usagef("--root must not be empty")
	}
	switch *rootless {
	case "auto", "false":
	default:
		return inv, usagef("--rootless=%s: rootless mode is not supported", *rootless)
	}
	if g.SystemdCgroup {
		return inv, usagef("--systemd-cgroup: the systemd cgroup driver is not supported; use the cgroupfs manager (e.g. podman --cgroup-manager=cgroupfs)")
	}
	if g.Version {
		inv.Cmd = "version"
		return inv, nil
	}
	rest := fs.Args()
	if *help || len(rest) == 0 {
		inv.Cmd = "help"
		return inv, nil
	}
	inv.Cmd = rest[0]
	rest = rest[1:]
	cfs := newFlagSet(inv.Cmd)
	var nargs []string // names of the positional arguments
	minArgs := 1
	switch inv.Cmd {
	case "create", "run":
		cfs.StringVar(&inv.Bundle, "bundle", ".", "bundle directory")
		cfs.StringVar(&inv.Bundle, "b", ".", "bundle directory")
		cfs.StringVar(&inv.PidFile, "pid-file", "", "write the container PID here")
		cfs.StringVar(&inv.ConsoleSocket, "console-socket", "", "terminal (not supported)")
		cfs.IntVar(&inv.PreserveFDs, "preserve-fds", 0, "extra fds (not supported)")
		cfs.Bool("no-pivot", false, "ignored: pivot_root is always used")
		cfs.Bool("no-new-keyring", false, "ignored: no session keyring is created")
		cfs.Bool("no-subreaper", false, "ignored")
		if inv.Cmd == "run" {
			cfs.BoolVar(&inv.Detach, "detach", false, "do not wait for the container")
			cfs.BoolVar(&inv.Detach, "d", false, "do not wait for the container")
			cfs.Bool("keep", false, "ignored")
		}
		nargs = []string{"container-id"}
	case "exec":
		cfs.StringVar(&inv.ProcessFile, "process", "", "process.json")
		cfs.StringVar(&inv.ProcessFile, "p", "", "process.json")
		cfs.StringVar(&inv.PidFile, "pid-file", "", "write the process PID here")
		cfs.StringVar(&inv.ConsoleSocket, "console-socket", "", "terminal (not supported)")
		cfs.IntVar(&inv.PreserveFDs, "preserve-fds", 0, "extra fds (not supported)")
		cfs.BoolVar(&inv.Detach, "detach", false, "do not wait for the process")
		cfs.BoolVar(&inv.Detach, "d", false, "do not wait for the process")
		cfs.BoolVar(&inv.Tty, "tty", false, "terminal (not supported)")
		cfs.BoolVar(&inv.Tty, "t", false, "terminal (not supported)")
		cfs.StringVar(&inv.Cwd, "cwd", "", "working directory")
		cfs.Var((*listFlag)(&inv.Env), "env", "KEY=VALUE")
		cfs.Var((*listFlag)(&inv.Env), "e", "KEY=VALUE")
		cfs.StringVar(&inv.User, "user", "", "uid[:gid]")
		cfs.StringVar(&inv.User, "u", "", "uid[:gid]")
		cfs.Var((*listFlag)(&inv.AddGids), "additional-gids", "gid")
		cfs.Var((*listFlag)(&inv.AddGids), "g", "gid")
		cfs.Var((*listFlag)(&inv.Caps), "cap", "capability to add")
		cfs.Var((*listFlag)(&inv.Caps), "c", "capability to add")
		cfs.BoolVar(&inv.NoNewPrivs, "no-new-privs", false, "set no_new_privs")
		cfs.String("process-label", "", "ignored")
		cfs.String("apparmor", "", "ignored")
		cfs.Bool("ignore-paused", false, "ignored")
		cfs.String("cgroup", "", "refused unless empty")
		nargs = []string{"container-id", "command"}
	case "start":
		nargs = []string{"container-id"}
	case "state":
		nargs = []string{"container-id"}
	case "kill":
		cfs.BoolVar(&inv.All, "all", false, "signal every process of the container")
		cfs.BoolVar(&inv.All, "a", false, "signal every process of the container")
		nargs = []string{"container-id", "signal"}
	case "delete":
		cfs.BoolVar(&inv.Force, "force", false, "kill a running container first")
		cfs.BoolVar(&inv.Force, "f", false, "kill a running container first")
		nargs = []string{"container-id"}
	case "spec":
		cfs.StringVar(&inv.Bundle, "bundle", "", "directory for config.json")
		cfs.StringVar(&inv.Bundle, "b", "", "directory for config.json")
		cfs.BoolVar(&inv.Rootless, "rootless", false, "rootless spec (not supported)")
		minArgs = 0
	case "list":
		cfs.StringVar(&inv.Format, "format", "table", "table or json")
		cfs.StringVar(&inv.Format, "f", "table", "table or json")
		cfs.BoolVar(&inv.Quiet, "quiet", false, "IDs only")
		cfs.BoolVar(&inv.Quiet, "q", false, "IDs only")
		minArgs = 0
	case "help":
		return inv, nil
	default:
		return inv, usagef("unknown or unsupported command %q (supported: create, start, state, kill, delete, run, exec, spec, list)", inv.Cmd)
	}
	if err := cfs.Parse(rest); err != nil {
		return inv, usagef("%s: %v", inv.Cmd, err)
	}
	pos := cfs.Args()
	if len(pos) < minArgs {
		return inv, usagef("%s: missing %s", inv.Cmd, nargs[0])
	}
	if inv.Cmd == "exec" {
		inv.ID, inv.Args = pos[0], pos[1:]
		if inv.ProcessFile == "" && len(inv.Args) == 0 {
			return inv, usagef("exec: missing command (or --process FILE)")
		}
		if inv.ProcessFile != "" && len(inv.Args) > 0 {
			return inv, usagef("exec: --process and a command exclude each other")
		}
		if cg := cfs.Lookup("cgroup").Value.String(); cg != "" {
			return inv, usagef("exec: --cgroup: sub-cgroups are not supported")
		}
		if inv.PreserveFDs != 0 {
			return inv, usagef("exec: --preserve-fds is not supported")
		}
		return inv, nil
	}
	if len(pos) > len(nargs) {
		return inv, usagef("%s: unexpected arguments %q", inv.Cmd, pos[len(nargs):])
	}
	if len(pos) > 0 {
		inv.ID = pos[0]
	}
	switch inv.Cmd {
	case "kill":
		inv.Signal = syscall.SIGTERM
		if len(pos) > 1 {
			sig, err := signame.Parse(pos[1])
			if err != nil {
				return inv, usagef("kill: %v", err)
			}
			inv.Signal = sig
		}
	case "list":
		if inv.Format != "table" && inv.Format != "json" {
			return inv, usagef("list: invalid --format %q (want table or json)", inv.Format)
		}
	case "create", "run":
		if inv.PreserveFDs < 0 {
			return inv, usagef("%s: --preserve-fds must not be negative", inv.Cmd)
		}
	}
	return inv, nil
}
