//go:build linux

package supervise

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/logs"
	"cairn.dev/cairn/runtime/network"
	"cairn.dev/cairn/runtime/rundir"
)

// defaultGrace is the stop grace period when the service gives none.
const defaultGrace = 10 * time.Second

// runResult is how one run of a service ended.
type runResult struct {
	exit       container.ExitStatus
	err        error // setup failed or the exit is unknown
	restartNow bool  // stopped for a restart request
}

type waitResult struct {
	exit container.ExitStatus
	err  error
}

// instance is one started container and what was set up for it.
type instance struct {
	id, dir  string
	pid      int
	mode     network.Mode
	attached bool
	notify   *notifier
}

// runOnce starts the service's container and supervises it until it
// exits, ctx ends (graceful stop) or a restart is requested.
func (sv *Supervisor) runOnce(ctx context.Context, s *service) runResult {
	hasHealth := s.def.Healthcheck != nil || s.def.Notify
	sv.update(s, func(st *Status) {
		st.State, st.Message, st.PID = StateStarting, "", 0
		st.Health = HealthNone
		if hasHealth {
			st.Health = HealthStarting
		}
	})
	sv.mu.Lock()
	s.ready = false
	sv.mu.Unlock()
	if s.log == nil {
		lg, err := sv.openLog(s.name)
		if err != nil {
			sv.o.Logf("service %s: %v (logging to memory only)", s.name, err)
			lg, _ = logs.New(logs.Options{})
		}
		s.log = lg
	}
	var img *Image
	if runTimePull(s.def.PullPolicy) {
		// Outside the start semaphore: a pull may wait for the network.
		var err error
		if img, err = sv.pullImage(ctx, s, "service "+s.name, &s.def); err != nil {
			return runResult{err: err}
		}
		sv.update(s, func(st *Status) { st.State, st.Message = StateStarting, "" })
	}
	select {
	case sv.starts <- struct{}{}:
	case <-ctx.Done():
		return runResult{err: ctx.Err()}
	}
	inst, err := sv.start(ctx, s.name, &s.def, img, s.log, func(msg notifyMsg) { sv.onNotify(s, msg) })
	<-sv.starts
	if err != nil {
		return runResult{err: err}
	}
	exitCh := make(chan waitResult, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				exitCh <- waitResult{container.ExitStatus{Code: -1}, fmt.Errorf("wait: panic: %v", r)}
			}
		}()
		e, err := sv.o.Runtime.Wait(context.Background(), inst.id)
		exitCh <- waitResult{e, err}
	}()
	defer sv.teardown(inst)
	sv.update(s, func(st *Status) { st.State, st.PID = StateRunning, inst.pid })
	sv.console("service %s: running (pid %d)", s.name, inst.pid)

	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	if hc := s.def.Healthcheck; hc != nil {
		go sv.guard("health "+s.name, func() { sv.healthLoop(hctx, s, inst.pid, hc) })
	}
	grace := s.def.StopGracePeriod.D()
	if grace <= 0 {
		grace = defaultGrace
	}
	for {
		select {
		case w := <-exitCh:
			return runResult{exit: w.exit, err: w.err}
		case <-ctx.Done():
			w := sv.stop(inst, grace, exitCh)
			return runResult{exit: w.exit, err: w.err}
		case c := <-s.cmds:
			if c.restart {
				sv.console("service %s: restarting on request", s.name)
				w := sv.stop(inst, grace, exitCh)
				c.reply <- nil
				return runResult{exit: w.exit, err: w.err, restartNow: true}
			}
			c.reply <- sv.o.Runtime.Signal(context.Background(), inst.id, c.signal)
		}
	}
}

// stop stops a container gracefully and returns its exit.
func (sv *Supervisor) stop(inst *instance, grace time.Duration, exitCh <-chan waitResult) waitResult {
	ctx, cancel := context.WithTimeout(context.Background(), grace+10*time.Second)
	defer cancel()
	if _, err := sv.o.Runtime.Stop(ctx, inst.id, grace); err != nil && !errors.Is(err, container.ErrNotRunning) {
		sv.o.Logf("stop %s: %v", inst.id, err)
	}
	select {
	case w := <-exitCh:
		return w
	case <-ctx.Done():
		return waitResult{exit: container.ExitStatus{Code: -1}, err: fmt.Errorf("container %s: did not stop", inst.id)}
	}
}

func (sv *Supervisor) openLog(name string) (*logs.Log, error) {
	if sv.o.LogDir == "" {
		return logs.New(logs.Options{})
	}
	if err := os.MkdirAll(sv.o.LogDir, 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	return logs.New(logs.Options{Path: filepath.Join(sv.o.LogDir, name+".log"), MaxSize: 4 << 20, MaxFiles: 3, RingLines: 200})
}

// Logs returns the last n lines of a service's log ring.
func (sv *Supervisor) Logs(name string, n int) ([]logs.Entry, error) {
	sv.mu.Lock()
	s, ok := sv.services[name]
	var lg *logs.Log
	if ok {
		lg = s.log
	}
	sv.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("service %q: %w", name, ErrNoService)
	}
	if lg == nil {
		return nil, nil
	}
	return lg.Tail(n), nil
}

// start sets up and starts one container: image, overlay root, network,
// generated /etc files, notify socket, spec, create and start. img is the
// image pulled at run time, or nil for a baked image (sv.o.Images).
func (sv *Supervisor) start(ctx context.Context, id string, def *schema.Service, img *Image, lg *logs.Log, onNotify func(notifyMsg)) (inst *instance, err error) {
	if img == nil && runTimePull(def.PullPolicy) {
		return nil, fmt.Errorf("image %q: pull_policy %s: not pulled", def.Image, def.PullPolicy)
	}
	if img == nil && sv.o.Images == nil {
		return nil, errors.New("no image resolver")
	}
	t0 := time.Now()
	var steps []string
	step := func(name string) {
		if sv.o.Debug {
			steps = append(steps, fmt.Sprintf("%s %dms", name, time.Since(t0).Milliseconds()))
		}
	}
	defer func() {
		if sv.o.Debug && err == nil {
			sv.o.Logf("service %s: started in %dms (at: %s)", id, time.Since(t0).Milliseconds(), strings.Join(steps, ", "))
		}
	}()
	if img == nil {
		if img, err = sv.o.Images.Resolve(def.Image); err != nil {
			return nil, err
		}
	}
	step("image")
	mode := network.ModeBridge
	if def.NetworkMode != "" {
		if mode, err = network.ParseMode(def.NetworkMode); err != nil {
			return nil, err
		}
	}
	inst = &instance{id: id, dir: filepath.Join(sv.o.StateDir, id), mode: mode}
	defer func() {
		if err != nil {
			sv.teardown(inst)
		}
	}()
	// Leftovers of an earlier run (this boot) go first.
	sv.cleanDir(inst.dir)
	if err := os.MkdirAll(inst.dir, 0o700); err != nil {
		return nil, fmt.Errorf("service %s: %w", id, err)
	}
	rootfs, err := rundir.MountRootfs(inst.dir, img.Lowerdirs)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", id, err)
	}
	step("rootfs")
	for _, v := range def.Volumes {
		src := v.Source
		if v.Name != "" {
			src = filepath.Join(sv.o.VolumesDir, v.Name)
		}
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, fmt.Errorf("service %s: volume %s: %w", id, src, err)
			}
		}
	}

	// Network.
	nsPath := ""
	files := map[string]string{}
	hostname := def.Hostname
	if hostname == "" {
		hostname = hostnameFor(id)
	}
	if mode != network.ModeHost {
		nsPath = filepath.Join(inst.dir, "netns")
		if err := rundir.NewNetNS(nsPath); err != nil {
			return nil, fmt.Errorf("service %s: %w", id, err)
		}
	}
	if sv.o.Network == nil {
		if mode == network.ModeBridge {
			return nil, fmt.Errorf("service %s: bridge network unavailable", id)
		}
	} else {
		ports := make([]network.PortMapping, 0, len(def.Ports))
		for _, p := range def.Ports {
			pm := network.PortMapping{Protocol: p.Protocol, HostPort: p.HostPort, ContainerPort: p.ContainerPort}
			if p.HostIP != "" {
				if pm.HostIP, err = netip.ParseAddr(p.HostIP); err != nil {
					return nil, fmt.Errorf("service %s: port host IP %q: %w", id, p.HostIP, err)
				}
			}
			ports = append(ports, pm)
		}
		step("netns")
		res, err := sv.o.Network.AttachMode(ctx, mode, id, nsPath, ports)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", id, err)
		}
		step("attach")
		inst.attached = true
		resolv, hosts, err := sv.o.Network.Files(res, hostname)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", id, err)
		}
		for name, data := range map[string][]byte{"resolv.conf": resolv, "hosts": hosts, "hostname": []byte(hostname + "\n")} {
			p := filepath.Join(inst.dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				return nil, fmt.Errorf("service %s: %w", id, err)
			}
			files[name] = p
		}
	}
	notifySock := ""
	if def.Notify && onNotify != nil {
		if inst.notify, err = listenNotify(filepath.Join(sv.o.NotifyDir, id+".sock"), onNotify, sv.o.Logf); err != nil {
			return nil, fmt.Errorf("service %s: %w", id, err)
		}
		notifySock = inst.notify.path
	}
	spec, err := buildSpec(specInput{Name: id, Service: def, Image: img.Config, Rootfs: rootfs, VolumesDir: sv.o.VolumesDir,
		NetNS: nsPath, Mode: string(mode), Files: files, NotifySocket: notifySock})
	if err != nil {
		return nil, err
	}
	if def.Hostname == "" {
		spec.Hostname = hostname
	}
	cio := container.IO{Stdout: lg.Writer(logs.Stdout), Stderr: lg.Writer(logs.Stderr)}
	err = sv.o.Reaper.Spawn(func() ([]int, error) {
		if err := sv.o.Runtime.Create(ctx, id, spec, container.CreateOptions{IO: cio}); err != nil {
			return nil, err
		}
		st, err := sv.o.Runtime.State(ctx, id)
		if err != nil {
			return nil, err
		}
		inst.pid = st.Pid
		return []int{st.Pid}, nil
	})
	if err != nil {
		return nil, err
	}
	step("create")
	if err := sv.o.Runtime.Start(ctx, id); err != nil {
		return nil, err
	}
	step("start")
	return inst, nil
}

// teardown undoes start; every step tolerates "already gone".
func (sv *Supervisor) teardown(inst *instance) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var step atomic.Value
	step.Store("delete container")
	// A teardown that hangs says where.
	watchdog := time.AfterFunc(10*time.Second, func() {
		sv.o.Logf("service %s: teardown still at %q after 10s", inst.id, step.Load())
	})
	defer watchdog.Stop()
	if err := sv.o.Runtime.Delete(ctx, inst.id, true); err != nil && !errors.Is(err, container.ErrNotExist) {
		sv.o.Logf("service %s: delete container: %v", inst.id, err)
	}
	if inst.pid > 0 {
		sv.o.Reaper.Release(inst.pid)
	}
	step.Store("detach network")
	if inst.attached && inst.mode != network.ModeHost && sv.o.Network != nil {
		if err := sv.o.Network.Detach(ctx, inst.id); err != nil {
			sv.o.Logf("service %s: detach network: %v", inst.id, err)
		}
	}
	step.Store("close notify socket")
	if inst.notify != nil {
		inst.notify.Close()
	}
	step.Store("unmount")
	sv.cleanDir(inst.dir)
}

// cleanDir unmounts what a run mounted in dir and removes its scratch
// state (the overlay's upper and work directories, the netns file).
func (sv *Supervisor) cleanDir(dir string) {
	for _, p := range []string{"rootfs", "netns"} {
		if err := rundir.UnmountAll(filepath.Join(dir, p)); err != nil {
			sv.o.Logf("%v", err)
			return // never remove below a mount
		}
	}
	for _, p := range []string{"upper", "work", "netns"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			sv.o.Logf("clean %s: %v", dir, err)
		}
	}
}

// runOnboot runs one onboot container to completion (bounded by its
// timeout); failures are reported and the boot goes on.
func (sv *Supervisor) runOnboot(ctx context.Context, ob *schema.Onboot) {
	name := ob.Name
	if name == "" {
		name = hostnameFor(ob.Image)
	}
	id := "onboot-" + name
	def := schema.Service{Image: ob.Image, PullPolicy: ob.PullPolicy, Entrypoint: ob.Entrypoint, Command: ob.Command,
		Environment: ob.Environment, Volumes: ob.Volumes, User: ob.User, NetworkMode: ob.NetworkMode}
	lg, err := sv.openLog(id)
	if err != nil {
		sv.o.Logf("onboot %s: %v (logging to memory only)", name, err)
		lg, _ = logs.New(logs.Options{})
	}
	defer lg.Close()
	timeout := ob.Timeout.D()
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var img *Image
	if runTimePull(def.PullPolicy) {
		if img, err = sv.pullImage(tctx, nil, "onboot "+name, &def); err != nil {
			sv.console("onboot %s: failed to pull %s: %v", name, def.Image, err)
			return
		}
	}
	sv.console("onboot %s: starting", name)
	inst, err := sv.start(tctx, id, &def, img, lg, nil)
	if err != nil {
		sv.console("onboot %s: failed to start: %v", name, err)
		return
	}
	defer sv.teardown(inst)
	exit, err := sv.o.Runtime.Wait(tctx, id)
	if err != nil && tctx.Err() != nil {
		exit, _ = sv.o.Runtime.Stop(context.Background(), id, 2*time.Second)
		sv.console("onboot %s: timed out after %v; stopped (%s)", name, timeout, describeExit("exited", exit))
		return
	}
	if err != nil {
		sv.console("onboot %s: %v", name, err)
		return
	}
	sv.console("onboot %s: %s", name, describeExit("exited", exit))
}
