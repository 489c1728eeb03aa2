//go:build linux

package system

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"cairn.dev/cairn/init/cmdline"
	"cairn.dev/cairn/init/provision"
	"cairn.dev/cairn/internal/atomicfile"
	"cairn.dev/cairn/os/schema"
)

// Provisioning bounds.
const (
	// provisionTimeout bounds the whole search for a machine config; the
	// network and the services wait for it at most this long.
	provisionTimeout = 90 * time.Second
	// provisionOnlineWait bounds the wait for an address before the URL
	// and metadata sources give up.
	provisionOnlineWait = 30 * time.Second
)

// provisionState is the machine config's part of pid1.
type provisionState struct {
	// base is the image's own OS file; os (pid1.os) is base with the
	// machine config merged.
	base *schema.OS
	args map[string]string
	// stored is the config read from STATE before READY (nil: none).
	stored *provision.Config
	// done is closed once provisioning finished: p.os, p.network and
	// p.net are final then.
	done     chan struct{}
	doneOnce sync.Once
	// netStarted is set once the network was started (by a source that
	// needs it, or after provisioning).
	netStarted bool
	// merged is the image's OS file with a config found after READY
	// merged (nil: none; p.os holds the stored one's, merged before READY).
	// p.os itself is not changed after READY: other goroutines read it.
	merged *schema.OS
}

// provisionOptions are the options of the search.
func (p *pid1) provisionOptions() provision.Options {
	logf := p.log.Func("config")
	return provision.Options{
		Args:  p.prov.args,
		Parse: schema.ParseMachine,
		Check: func(m *schema.Machine) error {
			_, err := p.prov.base.Merge(m)
			return err
		},
		// qemu_fw_cfg alone, not after all of the deferred module loading
		// and coldplug: the services wait for provisioning.
		LoadFwCfg: func(ctx context.Context) error {
			start := time.Now()
			if err := p.loadModulesNow(ctx, "qemu_fw_cfg"); err != nil {
				logf("%v; waiting for the module loading", err)
				return p.LoadModules(ctx, "qemu_fw_cfg")
			}
			p.debugf("qemu_fw_cfg loaded in %v", time.Since(start).Round(time.Millisecond))
			return nil
		},
		Online: func(ctx context.Context) error {
			if !p.prov.netStarted {
				p.prov.netStarted = true
				p.startNetwork(ctx)
			}
			if p.net == nil {
				return fmt.Errorf("no network (invalid network config)")
			}
			t := time.NewTimer(provisionOnlineWait)
			defer t.Stop()
			select {
			case <-p.net.Online():
				return nil
			case <-t.C:
				return fmt.Errorf("not online after %v", provisionOnlineWait)
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		Logf: logf,
	}
}

// loadStoredConfig runs before READY: it merges the config stored on STATE
// (cheap: one small file) so that the host name and /etc are right from the
// start. cmd is the parsed kernel command line (nil if unreadable).
func (p *pid1) loadStoredConfig(cmd *cmdline.Params) {
	args := map[string]string{}
	if cmd != nil {
		args = cmd.Args
	}
	p.prov.base, p.prov.args, p.prov.done = p.os, args, make(chan struct{})
	o := p.provisionOptions()
	c, err := provision.ReadStored(o)
	if err != nil {
		p.log.Printf("config", "%v; ignoring the stored config", err)
		return
	}
	if c == nil {
		return
	}
	merged, err := p.prov.base.Merge(c.Machine)
	if err != nil { // Check passed when it was read; be safe anyway
		p.log.Printf("config", "stored config: %v; ignoring it", err)
		return
	}
	p.prov.stored = c
	p.os = merged
}

// provision runs after READY, in place of starting the network: it finds
// the machine config (stored, or from the sources), applies it, and starts
// the network with the result. p.prov.done is closed at the end, whatever
// happens; Network and ProvisionedOS wait for it.
func (p *pid1) provision(ctx context.Context) {
	p.goGuard("provision", func() {
		defer p.provisionDone()
		pctx, cancel := context.WithTimeout(ctx, provisionTimeout)
		defer cancel()
		o := p.provisionOptions()
		start := time.Now()
		if c := p.prov.stored; c != nil {
			o.Logf("using the stored config (from %s, sha256 %.12s)", c.Source, c.SHA256)
			p.applyFiles(c.Machine)
			if !o.Replace() {
				p.startNetworkOnce(ctx)
				p.provisionDone()
				// Report a source that holds something else, without
				// delaying anything.
				provision.CheckSources(pctx, o, c)
				return
			}
		}
		c := provision.Load(pctx, o)
		p.debugf("provisioning took %v", time.Since(start).Round(time.Millisecond))
		if c != nil && c != p.prov.stored {
			p.applyConfig(ctx, c)
		}
		p.startNetworkOnce(ctx)
	})
}

// provisionDone closes the done channel once.
func (p *pid1) provisionDone() {
	p.prov.doneOnce.Do(func() { close(p.prov.done) })
}

// waitProvisioned waits until provisioning is done; it is itself bounded
// by provisionTimeout (plus the network start).
func (p *pid1) waitProvisioned() {
	if p.prov.done != nil {
		<-p.prov.done
	}
}

// ProvisionedOS returns the OS file with the machine config merged, once
// provisioning is done (bounded by provisionTimeout): the supervisor starts
// the services of this one.
func (p *pid1) ProvisionedOS() *schema.OS {
	p.waitProvisioned()
	if p.prov.merged != nil {
		return p.prov.merged
	}
	return p.os
}

func (p *pid1) startNetworkOnce(ctx context.Context) {
	if !p.prov.netStarted {
		p.prov.netStarted = true
		p.startNetwork(ctx)
	}
}

// applyConfig applies a newly accepted config: host name, /etc files, and
// the network (restarted if a source already started it with another
// config). It runs before p.prov.done is closed.
func (p *pid1) applyConfig(ctx context.Context, c *provision.Config) {
	logf := p.log.Func("config")
	merged, err := p.prov.base.Merge(c.Machine)
	if err != nil {
		logf("%v; refused, booting with the image's config", err)
		return
	}
	old := p.os
	p.prov.merged = merged
	if merged.Hostname != old.Hostname {
		if err := setHostname("/etc", merged.Hostname); err != nil {
			logf("%v", err)
		}
	}
	if h, err := os.Hostname(); err == nil {
		logf("hostname is now %s", h)
	}
	p.applyFiles(c.Machine)
	if c.Machine.Network != nil {
		p.network = merged.Network
		if p.prov.netStarted {
			logf("restarting the network with the config's")
			p.stopNetwork(2 * time.Second)
			p.startNetwork(ctx)
		}
	}
	if n := len(c.Machine.Services); n > 0 {
		logf("%d service(s) from the config: %s", n, strings.Join(sortedNames(c.Machine.Services), ", "))
	}
}

// setHostname sets the kernel's host name and rewrites hostname and hosts
// in etcDir as init/etc generates them.
func setHostname(etcDir, name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %s: %w", name, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(etcDir, "hostname"), []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(etcDir, "hosts"), []byte("127.0.0.1\tlocalhost "+name+"\n::1\tlocalhost ip6-localhost\n"), 0o644)
}

// applyFiles writes the config's files (all under /etc/, as validated).
func (p *pid1) applyFiles(m *schema.Machine) {
	if err := writeFiles("/etc", m.Files); err != nil {
		p.log.Printf("config", "%v", err)
	}
}

// writeFiles writes files whose paths are under /etc/ into etcDir.
func writeFiles(etcDir string, files []schema.File) error {
	for _, f := range files {
		rel, ok := strings.CutPrefix(f.Path, "/etc/")
		if !ok || rel == "" || strings.Contains(rel, "..") {
			return fmt.Errorf("file %s: not under /etc/", f.Path)
		}
		dst := filepath.Join(etcDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
		mode := os.FileMode(f.FileMode())
		if f.Mode == "" {
			mode = 0o644
		}
		if err := atomicfile.WriteFile(dst, []byte(f.Content), mode); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	return nil
}

func sortedNames(m map[string]schema.Service) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
