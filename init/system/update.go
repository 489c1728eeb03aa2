//go:build linux

package system

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// AgentBinary is the full build of cairn-init, which runs the update agent
// as `cairn-init update-agent` (go-tuf stays out of PID 1's binary).
const AgentBinary = "/usr/bin/cairn-init"

// Supervision of the update agent.
const (
	agentOnlineWait = 30 * time.Second // wait this long for the network before starting it
	agentBackoffMin = time.Second
	agentBackoffMax = time.Minute
	agentStable     = time.Minute // a run this long resets the backoff
)

// blessOrUpdate runs once the root's modules are in. Without an update
// section PID 1 blesses the boot right away. With one, the update agent
// decides: PID 1 mounts efivarfs and the ESP for it and supervises
// `cairn-init update-agent`, which blesses a trial boot only when the
// services are healthy and the repository answers, or marks it bad and
// asks for a reboot.
func (p *pid1) blessOrUpdate(ctx context.Context) {
	if p.os == nil || p.os.Update == nil {
		if err := p.Bless(ctx); err != nil {
			p.log.Printf("bootcount", "%v", err)
		}
		return
	}
	logf := p.log.Func("update")
	if _, err := os.Stat(AgentBinary); err != nil {
		// No agent can ever judge this boot: bless it rather than let boot
		// counting throw away a version that works.
		logf("update section set but %v (built with --tools none?); no updates, blessing now", err)
		if err := p.Bless(ctx); err != nil {
			p.log.Printf("bootcount", "%v", err)
		}
		return
	}
	if _, _, err := p.mountBootEnv(ctx, false); err != nil {
		logf("boot entries: %v (the agent runs without them)", err)
	}
	if m := p.Network(); m != nil {
		t := time.NewTimer(agentOnlineWait)
		select {
		case <-m.Online():
		case <-t.C:
			logf("not online after %v; starting the agent anyway", agentOnlineWait)
		case <-ctx.Done():
		}
		t.Stop()
	}
	p.superviseAgent(ctx)
}

// superviseAgent keeps the agent running, restarting it with exponential
// backoff when it exits.
func (p *pid1) superviseAgent(ctx context.Context) {
	logf := p.log.Func("update")
	backoff := agentBackoffMin
	for ctx.Err() == nil {
		start := time.Now()
		err := p.runAgent(ctx)
		if time.Since(start) >= agentStable {
			backoff = agentBackoffMin
		}
		logf("agent exited (%v); restarting in %v", err, backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, agentBackoffMax)
	}
}

// runAgent runs the agent once, copying its output into the log, and
// returns its exit status when it exits. It is started and waited for
// through the services' reaper, so PID 1's reaping of orphans leaves it to
// Wait.
func (p *pid1) runAgent(ctx context.Context) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(AgentBinary, "update-agent")
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/sbin")
	err = p.svc.reaper.StartCmd(cmd)
	w.Close()
	if err != nil {
		return fmt.Errorf("start %s update-agent: %w", AgentBinary, err)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cairn: ") {
			line = "cairn: update-agent: " + line
		}
		p.log.Line(line)
	}
	if err := sc.Err(); err != nil {
		p.log.Printf("update", "agent output: %v; discarding the rest", err)
		_, _ = io.Copy(io.Discard, r) // the agent must not block on a full pipe
	}
	if err := p.svc.reaper.WaitCmd(cmd); err != nil {
		return fmt.Errorf("%s update-agent (pid %d): %w", AgentBinary, cmd.Process.Pid, err)
	}
	return errors.New("exit status 0")
}
