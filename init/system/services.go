//go:build linux

package system

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/api"
	"cairn.dev/cairn/init/bootinfo"
	"cairn.dev/cairn/init/kmod"
	"cairn.dev/cairn/init/reap"
	"cairn.dev/cairn/init/shutdown"
	"cairn.dev/cairn/init/supervise"
	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/logs"
	"cairn.dev/cairn/runtime/network"
)

// Paths of the services.
const (
	ContainersState = "/run/cairn/containers"
	ServicesState   = "/var/lib/cairn/services"
	VolumesDir      = "/var/lib/cairn/volumes"
	ServicesLogDir  = "/var/log/services"
	NotifyDir       = "/run/cairn/notify"
	NetworkState    = "/var/lib/cairn/network"
	CgroupParent    = "cairn"
)

// services is PID 1's part that runs containers: the reaper that leaves
// PID 1's own children to their owners, the supervisor and the API.
type services struct {
	reaper *reap.Reaper
	// sv is nil until the supervisor runs.
	sv atomic.Pointer[supervise.Supervisor]
	// firstRun logs when the first service runs (boot timing).
	firstRun sync.Once
	// modSet is the root's module set, made once: the deferred module
	// loading and the modules loaded ahead of it (loadModulesNow) share it,
	// so that a module is never loaded twice at the same time.
	modSet func() (*kmod.Set, error)
}

func newServices() *services {
	return &services{reaper: reap.New(), modSet: sync.OnceValues(func() (*kmod.Set, error) {
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			return nil, fmt.Errorf("uname: %w", err)
		}
		ix, err := kmod.LoadIndex(filepath.Join("/lib/modules", unix.ByteSliceToString(uts.Release[:])))
		if err != nil {
			return nil, err
		}
		set := kmod.NewSet(ix, kmod.FinitLoader{})
		set.SetClock(bootinfo.Now)
		return set, nil
	})}
}

// startServices runs after READY: the API at once; the supervisor once
// provisioning has merged the machine config's services (a config found
// after READY, in fw_cfg on the first boot, included) and the container
// runtime's modules (overlay, veth, bridge, nf_tables) are loaded. The
// modules load while provisioning runs.
func (p *pid1) startServices(ctx context.Context) {
	logf := p.log.Func("services")
	s := p.svc
	p.goGuard("api", func() {
		if err := api.Serve(ctx, api.SocketPath, api.Handler(apiBackend{p})); err != nil {
			logf("%v", err)
		}
	})
	p.goGuard("supervisor", func() {
		// The runtime's modules load while provisioning looks for a config
		// only if the image has services: else they wait for one.
		early := len(p.os.Services)+len(p.os.Onboot) > 0
		modsLoaded := make(chan struct{})
		if early {
			p.goGuard("runtime modules", func() {
				defer close(modsLoaded)
				p.loadRuntimeModules(ctx, logf)
			})
		} else {
			close(modsLoaded)
		}
		// The services of the image and of the machine config, whenever
		// it was found (bounded by provisionTimeout).
		osf := p.ProvisionedOS()
		<-modsLoaded
		if len(osf.Services)+len(osf.Onboot) == 0 {
			return
		}
		rt, err := container.New(container.Options{Root: ContainersState, CgroupParent: CgroupParent, CgroupRoot: "/sys/fs/cgroup"})
		if err != nil {
			logf("%v", err)
			return
		}
		var online <-chan struct{}
		if n := p.Network(); n != nil {
			online = n.Online()
		}
		sv := supervise.New(supervise.Options{
			Services: osf.Services, Onboot: osf.Onboot,
			Runtime: rt, Images: supervise.Baked{Dir: supervise.BakedDir}, Reaper: s.reaper,
			StateDir: ServicesState, VolumesDir: VolumesDir, LogDir: ServicesLogDir, NotifyDir: NotifyDir,
			CgroupDir: "/sys/fs/cgroup/" + CgroupParent,
			Console: func(line string) {
				p.log.Line("cairn: " + line)
				if strings.Contains(line, ": running (pid ") {
					s.firstRun.Do(func() {
						logf("first service running t=%.3f", bootinfo.Now().Seconds())
						// Start-up garbage (the OS file, the images'
						// configs, netlink and nftables messages) is
						// returned to the kernel now rather than by the
						// background scavenger: ~1 MiB less memory in use
						// while the first service comes up.
						go debug.FreeOSMemory()
						if p.debug {
							time.AfterFunc(3*time.Second, func() { logf("debug: %s", memUsed()) })
						}
					})
				}
			},
			Logf:   logf,
			Debug:  p.debug,
			Online: online,
		})
		if !early { // only the machine config has services
			p.loadRuntimeModules(ctx, logf)
		}
		// The network manager is made here, not before READY: it touches
		// /var (leases) and needs the bridge and nf_tables modules.
		m, err := network.New(network.Config{StateDir: NetworkState})
		if err != nil {
			logf("container network: %v (bridge services will fail)", err)
		} else {
			// Leases of an earlier boot name containers that are gone.
			if _, err := m.GC(ctx, nil); err != nil {
				logf("%v", err)
			}
			sv.SetNetwork(m)
		}
		s.sv.Store(sv) // visible to the API and the shutdown from here on
		logf("starting %d services t=%.3f", len(osf.Services), bootinfo.Now().Seconds())
		sv.Run(ctx)
	})
}

// runtimeModules are what containers need: overlay roots, bridge
// networking, nftables NAT and port rules (images/build loads the same
// list with the OS file's modules).
var runtimeModules = []string{"overlay", "veth", "bridge", "nf_tables", "nft_chain_nat", "nft_masq", "nft_nat", "nft_ct", "nft_fib_ipv4"}

// loadRuntimeModules returns once the container runtime's modules are
// loaded: it loads them itself, alongside the deferred module loading and
// coldplug (loading a live module is a no-op), so that the services need
// not wait for all of coldplug. On any error it waits for the deferred
// loading instead.
func (p *pid1) loadRuntimeModules(ctx context.Context, logf func(string, ...any)) {
	select {
	case <-p.modsDone:
		return
	default:
	}
	if err := p.loadModulesNow(ctx, runtimeModules...); err != nil {
		logf("runtime modules: %v; waiting for the module loading", err)
		<-p.modsDone
	}
}

// loadModulesNow loads modules without waiting for the deferred module
// loading and coldplug, through the same module set (a module they load
// too is loaded once).
func (p *pid1) loadModulesNow(ctx context.Context, names ...string) error {
	set, err := p.svc.modSet()
	if err != nil {
		return fmt.Errorf("modules: %w", err)
	}
	if _, err := set.Load(ctx, names); err != nil {
		return fmt.Errorf("load %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// stopServices stops the services in reverse dependency order before the
// rest of the shutdown.
func (p *pid1) stopServices() {
	sv := p.svc.sv.Load()
	if sv == nil {
		return
	}
	start := time.Now()
	sv.StopAll(context.Background())
	p.log.Printf("services", "stopped in %dms", time.Since(start).Milliseconds())
}

// apiBackend adapts PID 1 to the API.
type apiBackend struct{ p *pid1 }

func (b apiBackend) sv() (*supervise.Supervisor, error) {
	sv := b.p.svc.sv.Load()
	if sv == nil {
		return nil, fmt.Errorf("no services are running (none configured, or not started yet): %w", supervise.ErrNoService)
	}
	return sv, nil
}

func (b apiBackend) Services() []supervise.Status {
	if sv, err := b.sv(); err == nil {
		return sv.Services()
	}
	return []supervise.Status{}
}

func (b apiBackend) Service(name string) (supervise.Status, bool) {
	if sv, err := b.sv(); err == nil {
		return sv.Service(name)
	}
	return supervise.Status{}, false
}

func (b apiBackend) Restart(ctx context.Context, name string) error {
	sv, err := b.sv()
	if err != nil {
		return err
	}
	return sv.Restart(ctx, name)
}

func (b apiBackend) Kill(ctx context.Context, name string, sig syscall.Signal) error {
	sv, err := b.sv()
	if err != nil {
		return err
	}
	return sv.Kill(ctx, name, sig)
}

func (b apiBackend) Logs(name string, n int) ([]string, error) {
	sv, err := b.sv()
	if err != nil {
		return nil, err
	}
	ents, err := sv.Logs(name, n)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(string(logs.Format(nil, e)), "\n"))
	}
	return out, nil
}

func (b apiBackend) Power(action, reason string) error {
	r := shutdown.Request{Action: shutdown.PowerOff, Reason: reason}
	if action == "reboot" {
		r.Action = shutdown.Reboot
	}
	select {
	case b.p.reqs <- r:
		return nil
	default:
		return fmt.Errorf("a shutdown is already under way")
	}
}

// memUsed reports MemTotal - MemAvailable from /proc/meminfo.
func memUsed() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return fmt.Sprintf("meminfo: %v", err)
	}
	var total, avail int64
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = n
		case "MemAvailable:":
			avail = n
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return fmt.Sprintf("memory used %d MiB (MemTotal %d MiB - MemAvailable %d MiB) t=%.3f; anonymous memory by process: %s; PID 1's Go heap: in use %d KiB, idle %d KiB (released %d KiB), stacks %d KiB, runtime %d KiB, %d GCs",
		(total-avail)>>10, total>>10, avail>>10, bootinfo.Now().Seconds(), anonByProcess(),
		ms.HeapInuse>>10, ms.HeapIdle>>10, ms.HeapReleased>>10, ms.StackSys>>10, (ms.MSpanSys+ms.MCacheSys+ms.BuckHashSys+ms.GCSys+ms.OtherSys)>>10, ms.NumGC)
}

// anonByProcess lists the processes with anonymous memory (RssAnon), largest
// first, as "name[pid] N KiB", for the cairn.debug memory line.
func anonByProcess() string {
	dirs, err := filepath.Glob("/proc/[0-9]*/status")
	if err != nil {
		return err.Error()
	}
	type proc struct {
		name string
		kib  int64
	}
	var ps []proc
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		var p proc
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) >= 2 && f[0] == "Name:":
				p.name = f[1] + "[" + strings.TrimSuffix(strings.TrimPrefix(d, "/proc/"), "/status") + "]"
			case len(f) >= 2 && f[0] == "RssAnon:":
				p.kib, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
		if p.kib > 0 {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].kib > ps[j].kib })
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%s %d KiB", p.name, p.kib)
	}
	return strings.Join(out, ", ")
}
