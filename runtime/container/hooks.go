package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hookWaitDelay bounds how long a hook's leftover children may hold its
// output open after it exited or was killed.
const hookWaitDelay = time.Second

// hookOutputLimit bounds the output of a hook kept for its error message.
const hookOutputLimit = 4096

// validateHooks checks every hook's path and timeout.
func validateHooks(h *specs.Hooks) error {
	if h == nil {
		return nil
	}
	for kind, list := range hookLists(h) {
		for i, hk := range list {
			switch {
			case !filepath.IsAbs(hk.Path):
				return fmt.Errorf("hooks.%s[%d].path %q is not absolute", kind, i, hk.Path)
			case hk.Timeout != nil && *hk.Timeout <= 0:
				return fmt.Errorf("hooks.%s[%d].timeout must be positive, not %d", kind, i, *hk.Timeout)
			}
		}
	}
	return nil
}

func hookLists(h *specs.Hooks) map[string][]specs.Hook {
	//lint:ignore SA1019 prestart hooks are deprecated but still part of the spec
	pre := h.Prestart
	return map[string][]specs.Hook{
		"prestart": pre, "createRuntime": h.CreateRuntime, "createContainer": h.CreateContainer,
		"startContainer": h.StartContainer, "poststart": h.Poststart, "poststop": h.Poststop,
	}
}

// runtimeHooks are the hooks the parent runs while the stage waits before
// pivot_root: prestart (deprecated) then createRuntime.
func runtimeHooks(h *specs.Hooks) []specs.Hook {
	if h == nil {
		return nil
	}
	//lint:ignore SA1019 prestart hooks are deprecated but still part of the spec
	pre := h.Prestart
	return append(append([]specs.Hook(nil), pre...), h.CreateRuntime...)
}

// ociState is the runtime-spec state a hook reads on stdin.
func ociState(id, bundle string, status Status, pid int, annotations map[string]string) []byte {
	b, _ := json.Marshal(specs.State{
		Version: specs.Version, ID: id, Status: specs.ContainerState(status), Pid: pid,
		Bundle: bundle, Annotations: annotations,
	})
	return b
}

// runHooks runs hooks in order, each with state on stdin and its timeout;
// it stops at the first failure.
func runHooks(ctx context.Context, kind string, hooks []specs.Hook, state []byte) error {
	for i, h := range hooks {
		if err := runHook(ctx, h, state); err != nil {
			return fmt.Errorf("%s hook %d (%s): %w", kind, i, h.Path, err)
		}
	}
	return nil
}

// limitedBuffer keeps the first hookOutputLimit bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := hookOutputLimit - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func runHook(ctx context.Context, h specs.Hook, state []byte) error {
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			return fmt.Errorf("timeout must be positive, not %d", *h.Timeout)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin = bytes.NewReader(state)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = hookWaitDelay
	err := cmd.Run()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && h.Timeout != nil {
		err = fmt.Errorf("timed out after %d s: %w", *h.Timeout, err)
	}
	if msg := strings.TrimSpace(out.String()); msg != "" {
		err = fmt.Errorf("%w: %s", err, msg)
	}
	return err
}

// hookAck is the parent's answer to the stage's hooks message: the
// stage's PID as the runtime sees it (for the state of later hooks).
type hookAck struct {
	Pid int `json:"pid"`
}

// stageHookSync is called by the stage after its mounts, before
// pivot_root: it lets the parent run the runtime hooks (if the config asks
// for the handshake), then runs the createContainer hooks in the
// container's mount namespace with paths resolved in the runtime's view.
func stageHookSync(cfg *stageConfig) error {
	if !cfg.HookSync {
		return nil
	}
	b, _ := json.Marshal(stageMsg{Hooks: true})
	if _, err := cfg.status.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("stage: report hooks: %w", err)
	}
	// The config's encoder ended it with a newline: skip blank lines.
	br := bufio.NewReader(cfg.cfgIn)
	var line []byte
	for len(bytes.TrimSpace(line)) == 0 {
		var err error
		if line, err = br.ReadBytes('\n'); err != nil {
			return fmt.Errorf("stage: wait for runtime hooks: %w", err)
		}
	}
	var ack hookAck
	if err := json.Unmarshal(line, &ack); err != nil {
		return fmt.Errorf("stage: bad hooks answer %q: %w", line, err)
	}
	cfg.hostPid = ack.Pid
	if h := cfg.Spec.Hooks; h != nil && len(h.CreateContainer) > 0 {
		state := ociState(cfg.ID, cfg.Bundle, StatusCreating, cfg.hostPid, cfg.Spec.Annotations)
		if err := runHooks(context.Background(), "createContainer", h.CreateContainer, state); err != nil {
			return fmt.Errorf("stage: %w", err)
		}
	}
	return nil
}

// stageStartHooks runs the startContainer hooks after Start released the
// stage, before the container's program is exec'd (paths resolve in the
// container).
func stageStartHooks(cfg *stageConfig) error {
	h := cfg.Spec.Hooks
	if h == nil || len(h.StartContainer) == 0 {
		return nil
	}
	state := ociState(cfg.ID, cfg.Bundle, StatusRunning, cfg.hostPid, cfg.Spec.Annotations)
	if err := runHooks(context.Background(), "startContainer", h.StartContainer, state); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return nil
}

// parentHookSync answers the stage's hooks message: it runs prestart and
// createRuntime hooks and sends the ack.
func parentHookSync(ctx context.Context, w io.Writer, id, bundle string, spec *specs.Spec, pid int) error {
	state := ociState(id, bundle, StatusCreating, pid, spec.Annotations)
	if err := runHooks(ctx, "createRuntime", runtimeHooks(spec.Hooks), state); err != nil {
		return err
	}
	b, _ := json.Marshal(hookAck{Pid: pid})
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("answer stage hooks: %w", err)
	}
	return nil
}

// warnHooks runs poststart or poststop hooks: a failure is only logged, as
// the runtime-spec asks.
func (r *Runtime) warnHooks(ctx context.Context, kind string, hooks []specs.Hook, state []byte) {
	if len(hooks) == 0 {
		return
	}
	if err := runHooks(ctx, kind, hooks, state); err != nil {
		r.logf("warning: %v", err)
	}
}

func (r *Runtime) logf(format string, args ...any) {
	if r.opts.Logf != nil {
		r.opts.Logf(format, args...)
	}
}
