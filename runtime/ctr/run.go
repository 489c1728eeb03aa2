package ctr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"cairn.dev/cairn/runtime/container"
	"cairn.dev/cairn/runtime/image"
	"cairn.dev/cairn/runtime/logs"
	"cairn.dev/cairn/runtime/network"
	"cairn.dev/cairn/runtime/rundir"
)

// runIO is where a running container's output goes besides its log file.
type runIO struct {
	stdin          io.Reader // nil: /dev/null
	stdout, stderr io.Writer // nil: log file only
	// started is called once the container runs (nil) or failed to start.
	started func(error)
	// signals are forwarded to the container while it runs.
	signals <-chan os.Signal
}

// teeWriter writes to the log (never blocks) and then to w.
type teeWriter struct {
	log io.Writer
	w   io.Writer
}

func (t teeWriter) Write(p []byte) (int, error) {
	_, _ = t.log.Write(p)
	_, _ = t.w.Write(p) // a closed terminal must not stop the container
	return len(p), nil
}

// runContainer runs the container described by m (whose directory exists
// and whose lock the caller holds) until it exits, then tears down its
// network, mounts and runtime state, records the exit in meta.json and, with
// Rm, removes the directory. The error is about setting up or tearing down.
func runContainer(ctx context.Context, m *Meta, rio runIO) (exit container.ExitStatus, err error) {
	o := m.Opts
	dir := filepath.Join(o.Root, m.ID)
	startedCalled := false
	started := func(err error) {
		if !startedCalled && rio.started != nil {
			startedCalled = true
			rio.started(err)
		}
	}
	defer func() {
		if err != nil {
			m.Error = err.Error()
			started(err)
		}
		if terr := teardown(context.Background(), m); terr != nil && err == nil {
			err = terr
		}
		if m.Rm {
			if rerr := removeDir(dir); rerr != nil && err == nil {
				err = rerr
			}
			return
		}
		if werr := writeMeta(o.Root, m); werr != nil && err == nil {
			err = werr
		}
	}()

	st, err := image.Open(o.Images)
	if err != nil {
		return exit, err
	}
	cfg, err := st.Config(ctx, m.Digest)
	if err != nil {
		return exit, err
	}
	lowers, err := st.Lowerdirs(ctx, m.Digest)
	if err != nil {
		return exit, err
	}
	rootfs, err := rundir.MountRootfs(dir, lowers)
	if err != nil {
		return exit, fmt.Errorf("container %s: %w", m.ID, err)
	}

	args := append([]string{}, cfg.Config.Entrypoint...)
	if len(m.Cmd) > 0 {
		args = append(args, m.Cmd...)
	} else {
		args = append(args, cfg.Config.Cmd...)
	}
	if len(args) == 0 {
		return exit, fmt.Errorf("container %s: no command: the image has no entrypoint or cmd and none was given", m.ID)
	}
	m.Args = args
	spec := container.DefaultSpec(rootfs, args...)
	spec.Process.Env = mergeEnv(cfg.Config.Env, m.Env)
	if wd := cfg.Config.WorkingDir; wd != "" {
		spec.Process.Cwd = wd
	}
	if u := m.User; u != "" {
		spec.Process.User.Username = u
	} else if cfg.Config.User != "" {
		spec.Process.User.Username = cfg.Config.User
	}
	spec.Root.Readonly = m.ReadOnly
	spec.Hostname = hostnameFor(m.ID)
	if s := cfg.Config.StopSignal; s != "" {
		spec.Annotations = map[string]string{"org.opencontainers.image.stopSignal": s}
	}

	// Network.
	netMgr, err := network.New(network.Config{StateDir: o.NetState, NetNSPath: o.HostNetNS})
	if err != nil {
		return exit, err
	}
	defer netMgr.Close()
	nsPath := ""
	if m.Net == network.ModeHost {
		spec.Linux.Namespaces = removeNS(spec.Linux.Namespaces, specs.NetworkNamespace)
	} else {
		nsPath = filepath.Join(dir, "netns")
		if err := rundir.NewNetNS(nsPath); err != nil {
			return exit, fmt.Errorf("container %s: %w", m.ID, err)
		}
		for i := range spec.Linux.Namespaces {
			if spec.Linux.Namespaces[i].Type == specs.NetworkNamespace {
				spec.Linux.Namespaces[i].Path = nsPath
			}
		}
	}
	res, err := netMgr.AttachMode(ctx, m.Net, m.ID, nsPath, m.Ports)
	if err != nil {
		return exit, err
	}
	if res.IP.IsValid() {
		m.IP = res.IP.String()
	}
	resolv, hosts, err := netMgr.Files(res, spec.Hostname)
	if err != nil {
		return exit, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"resolv.conf", resolv}, {"hosts", hosts}, {"hostname", []byte(spec.Hostname + "\n")}} {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return exit, fmt.Errorf("container %s: %w", m.ID, err)
		}
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/etc/" + f.name, Type: "bind", Source: p, Options: []string{"bind", "nosuid", "nodev", "noexec"}})
	}

	// Logs and stdio.
	lg, err := logs.New(logs.Options{Path: filepath.Join(dir, "container.log")})
	if err != nil {
		return exit, err
	}
	defer lg.Close()
	cio := container.IO{Stdin: rio.stdin, Stdout: lg.Writer(logs.Stdout), Stderr: lg.Writer(logs.Stderr)}
	if rio.stdout != nil {
		cio.Stdout = teeWriter{lg.Writer(logs.Stdout), rio.stdout}
	}
	if rio.stderr != nil {
		cio.Stderr = teeWriter{lg.Writer(logs.Stderr), rio.stderr}
	}

	rt, err := container.New(container.Options{Root: o.runtimeRoot(), CgroupParent: o.CgroupParent})
	if err != nil {
		return exit, err
	}
	if err := writeMeta(o.Root, m); err != nil {
		return exit, err
	}
	if err := rt.Create(ctx, m.ID, spec, container.CreateOptions{IO: cio}); err != nil {
		return exit, err
	}
	if err := rt.Start(ctx, m.ID); err != nil {
		return exit, err
	}
	started(nil)
	done := make(chan struct{})
	defer close(done)
	if rio.signals != nil {
		go func() {
			for {
				select {
				case s := <-rio.signals:
					if sig, ok := s.(syscall.Signal); ok {
						_ = rt.Signal(ctx, m.ID, sig)
					}
				case <-done:
					return
				}
			}
		}()
	}
	exit, err = rt.Wait(ctx, m.ID)
	if err != nil {
		return exit, err
	}
	m.Exit = &exit
	return exit, nil
}

// teardown undoes what runContainer set up; every step tolerates "already
// gone", so it also cleans up after a monitor that died.
func teardown(ctx context.Context, m *Meta) error {
	o := m.Opts
	dir := filepath.Join(o.Root, m.ID)
	var errs []error
	if rt, err := container.New(container.Options{Root: o.runtimeRoot(), CgroupParent: o.CgroupParent}); err == nil {
		if err := rt.Delete(ctx, m.ID, true); err != nil && !errors.Is(err, container.ErrNotExist) {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, err)
	}
	if m.Net != network.ModeHost {
		if mgr, err := network.New(network.Config{StateDir: o.NetState, NetNSPath: o.HostNetNS}); err == nil {
			if err := mgr.Detach(ctx, m.ID); err != nil {
				errs = append(errs, err)
			}
			mgr.Close()
		} else {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{"netns", "rootfs"} {
		if err := rundir.UnmountAll(filepath.Join(dir, p)); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", m.ID, err))
		}
	}
	return errors.Join(errs...)
}

// removeDir deletes a container directory after checking that nothing is
// mounted in it any more (RemoveAll must never walk into a mount).
func removeDir(dir string) error {
	for _, p := range []string{"netns", "rootfs"} {
		if mounted, err := rundir.IsMountpoint(filepath.Join(dir, p)); err != nil || mounted {
			return fmt.Errorf("remove %s: %s is still mounted (%v)", dir, p, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

func removeNS(nss []specs.LinuxNamespace, typ specs.LinuxNamespaceType) []specs.LinuxNamespace {
	out := nss[:0]
	for _, ns := range nss {
		if ns.Type != typ {
			out = append(out, ns)
		}
	}
	return out
}

// mergeEnv returns base with the KEY=VALUE entries of over replacing or
// adding to it.
func mergeEnv(base, over []string) []string {
	out := append([]string{}, base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
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

func hostnameFor(id string) string {
	h := id
	if len(h) > 63 {
		h = h[:63]
	}
	h = strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, h), "-")
	if network.ValidHostname(h) != nil {
		return "cairn"
	}
	return h
}
