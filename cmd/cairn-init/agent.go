//go:build !cairn_pid1 && !cairn_early

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // reboot windows name IANA time zones; the root has no zoneinfo

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/bootcount"
	"cairn.dev/cairn/init/bootinfo"
	"cairn.dev/cairn/init/cmdline"
	"cairn.dev/cairn/init/etc"
	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/update/agent"
	"cairn.dev/cairn/update/fetch"
	"cairn.dev/cairn/update/tuf"
)

// Paths of the update agent on the machine.
const (
	agentOSFile   = schema.RootCompiled
	agentDir      = "/var/lib/cairn/update"
	agentEfivars  = "/sys/firmware/efi/efivars"
	agentESP      = "/efi"
	agentIDFile   = "/etc/machine-id"
	agentCmdline  = "/proc/cmdline"
	agentStateRel = "state.json"
	// agentRebooting marks, on /run (gone after the reboot), that this
	// boot's agent asked for a reboot: an agent that PID 1 restarts while
	// it shuts down must not judge the same boot again.
	agentRebooting = "/run/cairn/update-rebooting"
)

// updateAgentMain is `cairn-init update-agent`: the update agent, started
// and supervised by PID 1 when the OS file has an update section. PID 1
// mounts efivarfs and the ESP (at /efi) before it starts the agent.
// `cairn-init update-agent status` prints the saved state.
func updateAgentMain(args []string) int {
	fs := flag.NewFlagSet("update-agent", flag.ContinueOnError)
	osFile := fs.String("os", agentOSFile, "the OS `file`: compiled (JSON), or YAML when it ends in .yaml or .yml")
	dir := fs.String("dir", agentDir, "state `directory` on STATE")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 1 && fs.Arg(0) == "status" {
		st, err := agent.LoadState(filepath.Join(*dir, agentStateRel))
		if err != nil {
			fmt.Fprintf(os.Stderr, "cairn-init update-agent: %v\n", err)
			return 1
		}
		fmt.Println(st.String())
		return 0
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: cairn-init update-agent [--os FILE] [--dir DIR] [status]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	logLine := func(s string) { fmt.Println("cairn: " + s) }
	if _, err := os.Stat(agentRebooting); err == nil {
		logLine("update: a reboot is under way; waiting for it")
		<-ctx.Done()
		return 0
	}
	rebooted, err := runAgent(ctx, *osFile, *dir, logLine)
	if err != nil && ctx.Err() == nil {
		logLine("update: " + err.Error())
		return 1
	}
	if rebooted {
		// PID 1 is shutting down: wait for its SIGTERM rather than exit
		// and be restarted meanwhile.
		<-ctx.Done()
	}
	return 0
}

// runAgent builds the agent's config from the machine and runs it.
func runAgent(ctx context.Context, osFile, dir string, logLine func(string)) (rebooted bool, err error) {
	var o *schema.OS
	if ext := filepath.Ext(osFile); ext == ".yaml" || ext == ".yml" {
		o, err = schema.Load(osFile)
	} else {
		o, err = schema.LoadInstalled(osFile, schema.RootFile, func(format string, args ...any) {
			logLine("update: " + fmt.Sprintf(format, args...))
		})
	}
	if err != nil {
		return false, err
	}
	if o.Update == nil {
		return false, fmt.Errorf("%s: no update section", osFile)
	}
	u := o.Update
	root, err := os.ReadFile(schema.UpdateRootPath)
	if err != nil {
		return false, fmt.Errorf("trusted root: %w", err)
	}
	info, err := bootinfo.Read(bootinfo.Path)
	if err != nil {
		return false, err
	}
	raw, err := os.ReadFile(agentCmdline)
	if err != nil {
		return false, err
	}
	cmd, err := cmdline.Parse(string(raw))
	if err != nil {
		return false, fmt.Errorf("%s: %w", agentCmdline, err)
	}
	machineID, ok := etc.LoadMachineID(agentIDFile)
	if !ok {
		return false, fmt.Errorf("machine id: %s is missing or not a machine id", agentIDFile)
	}
	if info.Disk == "" {
		return false, fmt.Errorf("%s names no disk", bootinfo.Path)
	}
	disk, err := os.OpenFile(info.Disk, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("open disk: %w", err)
	}
	defer disk.Close()
	size, err := disk.Seek(0, io.SeekEnd)
	if err != nil {
		return false, fmt.Errorf("disk %s: size: %w", info.Disk, err)
	}
	sector, err := unix.IoctlGetInt(int(disk.Fd()), unix.BLKSSZGET)
	if err != nil {
		sector = 512 // a regular file in place of a disk
	}
	slots, err := agent.SlotsFromGPT(disk, size, sector)
	if err != nil {
		return false, fmt.Errorf("disk %s: %w", info.Disk, err)
	}

	transport := fetch.NewTransport(nil) // HTTP(S)_PROXY, NO_PROXY from the environment
	httpc := &http.Client{Transport: transport, Timeout: 10 * time.Minute}
	channel := u.Channel
	if channel == "" {
		channel = "stable"
	}
	repo, err := tuf.New(tuf.Config{MetadataDir: filepath.Join(dir, "metadata"), TrustedRoot: root, RepoURL: u.Server, HTTPClient: httpc})
	if err != nil {
		return false, err
	}
	interval := u.Interval.D()
	if interval <= 0 {
		interval = time.Hour
	}
	jitter := u.Jitter.D()
	if jitter <= 0 {
		jitter = interval / 10
	}
	if d, ok := intervalOverride(cmd.Args); ok {
		// Test-only knob (the OS file allows no less than 1m): the QEMU
		// scenarios check every few seconds while they swap repositories.
		interval, jitter = d, 0
		logLine(fmt.Sprintf("update: check interval %v from %s", d, cmdlineInterval))
	}
	bw := u.BandwidthBytes
	if bw == 0 && u.BandwidthLimit != "" {
		if bw, err = parseRate(u.BandwidthLimit); err != nil {
			return false, fmt.Errorf("%s: update.bandwidth_limit: %w", osFile, err)
		}
	}
	group := u.Reboot.Group
	if group == "" {
		group = "default"
	}
	api := &agent.API{URL: u.Server, HTTP: httpc, ID: agent.FleetLockID(machineID), Group: group}
	policy, err := rebootPolicy(u, httpc, api)
	if err != nil {
		return false, fmt.Errorf("%s: %w", osFile, err)
	}
	var vars bootcount.Vars
	if _, err := os.Stat(agentEfivars); err == nil {
		if vars, err = bootcount.ReadVars(agentEfivars); err != nil {
			logLine("update: loader variables: " + err.Error())
		}
	}
	healthyFor, timeout := u.Trial.HealthyFor.D(), u.Trial.Timeout.D()
	if healthyFor <= 0 {
		healthyFor = 30 * time.Second
	}
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	pid1 := &agent.PID1API{}
	health := agent.Health{
		Repository: func(ctx context.Context) error { return repo.Refresh(ctx) },
	}
	if want := healthChecked(o); len(want) > 0 {
		health.Services = pid1.Healthy(want)
	}
	checkNow := make(chan struct{}, 1)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, unix.SIGUSR1) // `kill -USR1`: check now
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			select {
			case checkNow <- struct{}{}:
			default:
			}
		}
	}()
	a, err := agent.New(agent.Config{
		OS: o.Name, Channel: channel, Repo: repo, RepoURL: u.Server,
		Fetch: fetch.Options{Limit: bw, Client: httpc}, API: api, MachineID: machineID,
		BootedVersion: info.Version, BootedSlot: info.Slot, BootedSize: agent.VerityImageSize(cmd.VerityBlocks),
		Slots: slots, ESP: agentESP, StatePath: filepath.Join(dir, agentStateRel), WorkDir: filepath.Join(dir, "work"),
		Interval: interval, Jitter: jitter, Policy: policy,
		Reboot: func(ctx context.Context) error {
			rebooted = true
			if err := os.WriteFile(agentRebooting, nil, 0o644); err != nil {
				logLine("update: " + err.Error())
			}
			if err := pid1.Reboot(ctx); err != nil {
				logLine("update: " + err.Error() + "; signalling PID 1")
				return unix.Kill(1, unix.SIGUSR2)
			}
			return nil
		},
		Trial:  agent.Trial{Vars: vars, HealthyFor: healthyFor, Timeout: timeout},
		Health: health, Check: checkNow, Log: logLine,
	})
	if err != nil {
		return false, err
	}
	logLine(fmt.Sprintf("update: agent on %s %s slot %s, server %s channel %s, reboot %s", o.Name, info.Version, info.Slot, u.Server, channel, policy))
	err = a.Run(ctx)
	return rebooted, err
}

// rebootPolicy maps update.reboot to a policy.
func rebootPolicy(u *schema.Update, httpc *http.Client, api *agent.API) (agent.RebootPolicy, error) {
	switch u.Reboot.Strategy {
	case "", "immediate":
		return agent.Immediate{}, nil
	case "window":
		loc := time.UTC
		if tz := u.Reboot.Timezone; tz != "" {
			l, err := time.LoadLocation(tz)
			if err != nil {
				return nil, fmt.Errorf("update.reboot.timezone: %w", err)
			}
			loc = l
		}
		w, err := agent.ParseWindow(u.Reboot.Window, loc)
		if err != nil {
			return nil, fmt.Errorf("update.reboot.window: %w", err)
		}
		return agent.InWindow{Window: w}, nil
	case "fleetlock":
		fl := *api
		if u.Reboot.FleetLock != "" {
			fl.URL = u.Reboot.FleetLock
		}
		fl.HTTP = httpc
		return agent.FleetLock{API: &fl, Retry: 5 * time.Second}, nil
	}
	return nil, fmt.Errorf("update.reboot.strategy: %q is not immediate, window or fleetlock", u.Reboot.Strategy)
}

// healthChecked lists the OS file's services that have a health check.
func healthChecked(o *schema.OS) []string {
	var out []string
	for name, s := range o.Services {
		if s.Healthcheck != nil {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// parseRate reads a byte rate such as "512K", "10M" or "1000" (bytes per
// second; K, M, G are powers of 1024).
func parseRate(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSuffix(strings.TrimSpace(s), "B")
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K', 'k':
			mult, t = 1<<10, t[:n-1]
		case 'M', 'm':
			mult, t = 1<<20, t[:n-1]
		case 'G', 'g':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<62)/mult {
		return 0, errors.New("want a positive size such as 512K or 10M")
	}
	return v * mult, nil
}

// cmdlineInterval is the kernel command line parameter that overrides the
// check interval, for tests: cairn_test.update_interval=5s (an OS file may
// not set cairn.* arguments; the kernel keeps a dotted unknown argument out
// of init's environment).
const cmdlineInterval = "cairn_test.update_interval"

// intervalOverride reads cairn_test.update_interval= from the kernel
// command line's arguments (a Go duration of at least one second).
func intervalOverride(args map[string]string) (time.Duration, bool) {
	v, ok := args[cmdlineInterval]
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, false
	}
	return d, true
}
