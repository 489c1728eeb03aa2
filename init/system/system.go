//go:build linux

// Package system is PID 1 in the real root: it generates /etc, mounts
// /tmp and cgroup2, collects logs, reaps zombies, loads the root's modules in
// the background, announces CAIRN-READY, blesses the boot and handles
// shutdown. It never returns.
package system

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/bootinfo"
	"cairn.dev/cairn/init/cmdline"
	"cairn.dev/cairn/init/early"
	"cairn.dev/cairn/init/etc"
	"cairn.dev/cairn/init/kmod"
	"cairn.dev/cairn/init/logring"
	"cairn.dev/cairn/init/mount"
	"cairn.dev/cairn/init/network"
	"cairn.dev/cairn/init/shutdown"
	"cairn.dev/cairn/os/schema"
)

// Paths of the system stage.
const (
	MachineIDPath = "/var/lib/cairn/machine-id"
	LogPath       = "/var/log/cairn/cairn.log"
	LogMaxBytes   = 4 << 20
	Skeleton      = "/usr/share/cairn/etc"
	ESPMount      = "/efi"
	Efivars       = "/sys/firmware/efi/efivars"
	// OSFile is where the image builder puts the OS file in the root, and
	// CompiledOSFile the same OS parsed and validated, as JSON: PID 1 reads
	// the latter (no YAML parsing at boot) and falls back to the former.
	OSFile         = schema.RootFile
	CompiledOSFile = schema.RootCompiled
)

// pid1 holds the state of the running system stage.
type pid1 struct {
	log     *logring.Logger
	logf    func(string, ...any)
	persist *logring.Persister
	info    bootinfo.Info
	os      *schema.OS
	modules *kmod.Set
	reqs    chan shutdown.Request
	debug   bool
	// modsDone is closed when the deferred module loading finished.
	modsDone chan struct{}
	// network is the machine's network config, from the OS file's network
	// section: nil is the default (DHCP on the first ethernet interface).
	network *network.Config
	// net runs the network after READY; netStop and netDone stop it at
	// shutdown (releasing DHCP leases). All set in start, before READY.
	net     *network.Manager
	netStop context.CancelFunc
	netDone chan struct{}
	// prov is the machine config's state (provision.go).
	prov provisionState
	// svc runs the containers: reaper, supervisor, API (services.go).
	svc *services
}

// Main runs the system stage; it never returns.
func Main() {
	ring := logring.NewRing(1 << 20)
	log := logring.NewLogger(os.Stdout, ring, bootinfo.Now)
	p := &pid1{log: log, logf: log.Func("system"), reqs: make(chan shutdown.Request, 4), modsDone: make(chan struct{}), svc: newServices()}
	ctx := context.Background()
	p.logf("start t=%.3f", bootinfo.Now().Seconds())
	p.guard("start", func() { p.start(ctx) })
	for {
		var req shutdown.Request
		p.guard("wait", func() { req = <-p.reqs })
		p.guard("shutdown", func() { p.shutdown(req) })
		// Only reached if reboot(2) failed; keep serving requests.
		time.Sleep(time.Second)
	}
}

// debugf logs a timing line when cairn.debug is on the command line.
func (p *pid1) debugf(format string, args ...any) {
	if p.debug {
		p.logf("debug t=%.3f "+format, append([]any{bootinfo.Now().Seconds()}, args...)...)
	}
}

// guard runs f, turning a panic into a log line: PID 1 must not die.
func (p *pid1) guard(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			p.logf("panic in %s: %v\n%s", what, r, debug.Stack())
		}
	}()
	f()
}

// goGuard runs f in a goroutine under guard.
func (p *pid1) goGuard(what string, f func()) {
	go p.guard(what, f)
}

// start brings the system to READY with the least work first: API mounts,
// reaper and signals, /tmp, /etc and cgroup2. Everything not needed for that
// (kernel log forwarding, module loading and coldplug, log persistence,
// machine-id persistence, power button, blessing) starts after READY.
func (p *pid1) start(ctx context.Context) {
	if err := mount.Early(); err != nil {
		p.logf("api mounts: %v", err)
	}
	p.goGuard("reaper", func() { p.svc.reaper.Loop(ctx) })
	if err := shutdown.DisableCAD(); err != nil {
		p.logf("%v", err)
	}
	p.goGuard("signals", func() { shutdown.Signals(ctx, p.reqs) })
	if b, err := os.ReadFile(early.EarlyLog); err == nil {
		for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			p.log.Ring().Add(l)
		}
	}
	var cmd *cmdline.Params
	if raw, err := os.ReadFile("/proc/cmdline"); err == nil {
		if c, err := cmdline.Parse(string(raw)); err == nil {
			cmd = c
			_, p.debug = c.Args["cairn.debug"]
		}
	}

	info, err := bootinfo.Read(bootinfo.Path)
	if err != nil {
		p.logf("%v (booted without the early stage?)", err)
		if cmd != nil {
			info.Slot, info.Version = cmd.Slot, cmd.Version
		}
	}
	p.info = info
	p.debugf("bootinfo read")
	if p.os, err = schema.LoadInstalled(CompiledOSFile, OSFile, p.logf); err != nil {
		p.logf("os file: %v", err)
		p.os = &schema.OS{Name: "cairn", Hostname: "cairn"}
	}
	// The machine config stored on STATE, merged into p.os (provision.go).
	p.loadStoredConfig(cmd)
	p.network = p.os.Network // nil: DHCP on the first ethernet interface
	version := info.Version
	if version == "" {
		version = p.os.Version
	}
	p.debugf("os file read")

	for _, m := range []struct{ src, dst, typ, data string }{
		{"tmpfs", "/tmp", "tmpfs", "mode=1777"},
		{"tmpfs", "/etc", "tmpfs", "mode=0755"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", "nsdelegate"},
	} {
		if ok, _ := mount.IsMountpoint(m.dst); ok {
			continue
		}
		if err := mount.Mount(m.src, m.dst, m.typ, unix.MS_NOSUID|unix.MS_NODEV, m.data); err != nil {
			p.logf("%v", err)
		}
	}
	p.debugf("mounts done")
	if err := enableControllers("/sys/fs/cgroup"); err != nil {
		p.logf("%v", err)
	}
	p.debugf("cgroup controllers enabled")
	saveID := p.setupEtc()
	p.debugf("etc done")

	now := bootinfo.Now()
	p.log.Line(fmt.Sprintf("CAIRN-READY version=%s slot=%s boot_ms=%d", version, info.Slot, now.Milliseconds()))
	if info.EarlyStartMs > 0 {
		p.logf("boot timing (ms, CLOCK_BOOTTIME): early start %.0f, modules done %.0f, root mounted %.0f, switch_root %.0f, ready %d (early start -> ready %.0f)",
			info.EarlyStartMs, info.ModulesDoneMs, info.RootMountedMs, info.SwitchRootMs, now.Milliseconds(), float64(now.Milliseconds())-info.EarlyStartMs)
	}

	// After READY.
	p.goGuard("kmsg", func() { p.kmsg(ctx) })
	if saveID != nil {
		p.goGuard("machine-id", saveID)
	}
	p.persist = &logring.Persister{Ring: p.log.Ring(), Path: LogPath, MaxBytes: LogMaxBytes}
	p.goGuard("log flusher", func() { p.flushLoop(ctx) })
	p.goGuard("modules", func() { p.loadModules(ctx) })
	p.provision(ctx) // finds and applies the machine config, then starts the network
	p.startServices(ctx)
	// Bless now, or let the update agent judge the boot (update.go).
	p.goGuard("bless", func() {
		<-p.modsDone
		p.blessOrUpdate(ctx)
	})
}

// setupEtc sets the hostname and fills /etc. It returns the function that
// persists a newly created machine id (nil if it was already stored), to be
// run after READY: the first write to a just-grown STATE can wait for ext4
// for a second under TCG.
func (p *pid1) setupEtc() (saveID func()) {
	if err := unix.Sethostname([]byte(p.os.Hostname)); err != nil {
		p.logf("sethostname: %v", err)
	}
	id, ok := etc.LoadMachineID(MachineIDPath)
	if !ok {
		var err error
		if id, err = etc.NewMachineID(bootRandom{}); err != nil {
			p.logf("%v", err)
		}
		saveID = func() {
			if err := etc.SaveMachineID(MachineIDPath, id); err != nil {
				p.logf("%v (not persisted)", err)
				return
			}
			p.logf("machine-id %s created", id)
		}
	}
	if err := etc.Populate(etc.Config{Dir: "/etc", Hostname: p.os.Hostname, MachineID: id, Skeleton: Skeleton}); err != nil {
		p.logf("%v", err)
	}
	return saveID
}

// bootRandom reads getrandom(GRND_INSECURE): it never blocks. Under TCG
// without virtio-rng the kernel CRNG takes about a second to initialise, and
// crypto/rand would wait for it before READY. A machine id must be unique,
// not secret.
type bootRandom struct{}

func (bootRandom) Read(b []byte) (int, error) {
	n, err := unix.Getrandom(b, unix.GRND_INSECURE)
	if err != nil {
		return n, fmt.Errorf("getrandom: %w", err)
	}
	return n, nil
}

// enableControllers enables every available controller for the children of
// the cgroup2 root.
func enableControllers(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	var errs []error
	for _, c := range strings.Fields(string(b)) {
		if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil {
			errs = append(errs, fmt.Errorf("cgroup: enable %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

// loadModules loads the root's cairn.load set and runs coldplug, after
// READY. It closes p.modsDone when finished.
func (p *pid1) loadModules(ctx context.Context) {
	defer close(p.modsDone)
	start := bootinfo.Now()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		p.logf("uname: %v", err)
		return
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:]))
	set, err := p.svc.modSet() // shared with the modules loaded ahead (services.go)
	if err != nil {
		p.logf("modules: %v", err)
		return
	}
	p.modules = set

	// The power key first, so that a press soon after READY is not lost:
	// the ACPI button driver and evdev, then the watcher (which rescans for
	// input devices that appear later).
	if _, err := p.modules.Load(ctx, powerKeyModules); err != nil {
		p.log.Printf("modules", "power key: %v", err)
	}
	pb := &shutdown.PowerButton{SysInput: "/sys/class/input", DevInput: "/dev/input", Logf: p.log.Func("shutdown")}
	p.goGuard("power button", func() { pb.Watch(ctx, 2*time.Second, p.reqs) })

	if err := p.loadListAndColdplug(ctx, filepath.Join(dir, "cairn.load")); err != nil {
		p.log.Printf("modules", "%v", err)
	}
	p.log.Printf("modules", "done: %d modules in %dms", p.modules.Count(), (bootinfo.Now() - start).Milliseconds())
}

// powerKeyModules are loaded before anything else after READY.
var powerKeyModules = []string{"button", "evdev"}

// loadListAndColdplug loads the modules named in list (the OS file's
// kernel.modules) and, alongside, every driver that coldplug matches.
func (p *pid1) loadListAndColdplug(ctx context.Context, list string) error {
	logf := p.log.Func("modules")
	names, err := kmod.ReadList(list)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var loadErr error
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		p.guard("module list", func() { _, loadErr = p.modules.Load(ctx, names) })
	}()
	st, cpErr := p.modules.Coldplug(ctx, "/sys")
	<-loaded
	if p.debug {
		for _, r := range p.modules.Results() {
			logf("module %s: %.3f-%.3f took %dms err=%v", r.Module, r.Start.Seconds(), (r.Start + r.Took).Seconds(), r.Took.Milliseconds(), r.Err)
		}
		logf("coldplug rounds %d, round times %v, sysfs scan times %v", st.Rounds, st.RoundTimes, st.ScanTimes)
	}
	if cpErr != nil {
		logf("coldplug (%d rounds): %v", st.Rounds, strings.ReplaceAll(cpErr.Error(), "\n", "; "))
	}
	if loadErr != nil {
		return fmt.Errorf("load %s: %w", list, loadErr)
	}
	return nil
}

// LoadModules loads extra modules by name (for example efivarfs) through
// the root's module set; it waits for the deferred loading first.
func (p *pid1) LoadModules(ctx context.Context, names ...string) error {
	<-p.modsDone
	if p.modules == nil {
		return errors.New("no module index")
	}
	_, err := p.modules.Load(ctx, names)
	return err
}

func (p *pid1) flushLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := p.persist.Flush()
			// Report each new failure once, to the console only (the log
			// file is what failed), and say when it works again.
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if msg != last {
				if err != nil {
					fmt.Fprintf(os.Stdout, "cairn: log: %v\n", err)
				} else {
					fmt.Fprintln(os.Stdout, "cairn: log: persisting again")
				}
				last = msg
			}
		}
	}
}

// kmsg copies the kernel log into the ring (the kernel prints to the
// console itself, according to its loglevel).
func (p *pid1) kmsg(ctx context.Context) {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		p.logf("kmsg: %v", err)
		return
	}
	defer f.Close()
	buf := make([]byte, 8192) // one read(2) returns one record
	for ctx.Err() == nil {
		n, err := f.Read(buf)
		if errors.Is(err, unix.EPIPE) {
			continue // overwritten records; next read resumes
		}
		if err != nil {
			p.logf("kmsg: %v", err)
			return
		}
		rec, err := logring.ParseKmsg(buf[:n])
		if err != nil {
			continue
		}
		p.log.RingOnly(fmt.Sprintf("kernel: [%d.%06d] <%d> %s", rec.Time/time.Second, (rec.Time%time.Second)/time.Microsecond, rec.Level, rec.Message))
	}
}

// Network returns the network manager (nil if its config was invalid):
// services and the update agent wait on its Online channel.
func (p *pid1) Network() *network.Manager { p.waitProvisioned(); return p.net }

// startNetwork starts the network in the background: it never delays READY.
// The link appears when virtio_net is loaded (by coldplug, or by the load
// below once the deferred module loading is done); the manager waits for it.
func (p *pid1) startNetwork(ctx context.Context) {
	logf := p.log.Func("network")
	m, err := network.New(network.Options{
		Config:     p.network,
		ResolvConf: "/etc/resolv.conf",
		Hosts:      "/etc/hosts",
		Hostname: func() string {
			h, _ := os.Hostname()
			return h
		},
		SetHostname: func(name string) error { return unix.Sethostname([]byte(name)) },
		Logf:        logf,
	})
	if err != nil {
		logf("%v", err)
		return
	}
	nctx, stop := context.WithCancel(ctx)
	p.net, p.netStop, p.netDone = m, stop, make(chan struct{})
	p.goGuard("network", func() {
		defer close(p.netDone)
		if err := m.Run(nctx); err != nil {
			logf("%v", err)
		}
	})
	p.goGuard("network driver", func() {
		if err := p.LoadModules(nctx, "virtio_net"); err != nil {
			logf("virtio_net: %v", err)
		}
	})
	p.goGuard("ntp", func() {
		select {
		case <-m.Online():
		case <-nctx.Done():
			return
		}
		logf("online t=%.3f", bootinfo.Now().Seconds())
		ts := &network.TimeSync{Servers: m.NTPServers, Logf: p.log.Func("ntp")}
		ts.Run(nctx)
	})
}

// stopNetwork stops the network (releasing DHCP leases), waiting at most
// timeout.
func (p *pid1) stopNetwork(timeout time.Duration) {
	if p.netStop == nil {
		return
	}
	p.netStop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.netDone:
	case <-t.C:
		p.log.Printf("network", "still stopping after %v; going on", timeout)
	}
}

func (p *pid1) shutdown(req shutdown.Request) {
	err := shutdown.Run(req, shutdown.Options{
		Logf:         p.log.Func("shutdown"),
		Line:         p.log.Line,
		StopServices: p.stopServices,
		// Persist runs once the processes are stopped: release the DHCP
		// leases there, so that services keep the network while they stop.
		Persist: func() error {
			p.stopNetwork(2 * time.Second)
			if p.persist == nil {
				return nil
			}
			return p.persist.Flush()
		},
		Unmount: []string{ESPMount, "/var"},
	})
	p.log.Printf("shutdown", "%v", err)
}
