//go:build linux

package supervise

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"cairn.dev/cairn/os/schema"
	"cairn.dev/cairn/runtime/container"
)

// Docker's health check defaults.
const (
	defaultInterval = 30 * time.Second
	defaultTimeout  = 30 * time.Second
	defaultRetries  = 3
)

// healthLoop runs a service's health check every interval until ctx ends:
// the first check runs after one interval; failures during start_period do
// not count, a success there makes the service healthy; retries
// consecutive failures make it unhealthy.
func (sv *Supervisor) healthLoop(ctx context.Context, s *service, pid int, hc *schema.Healthcheck) {
	interval, timeout, retries := hc.Interval.D(), hc.Timeout.D(), hc.Retries
	if interval <= 0 {
		interval = defaultInterval
	}
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if retries <= 0 {
		retries = defaultRetries
	}
	started := time.Now()
	failures := 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := sv.runCheck(cctx, s.name, pid, hc)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			sv.setHealth(s, HealthHealthy, "")
			continue
		}
		if time.Since(started) < hc.StartPeriod.D() {
			continue
		}
		failures++
		if failures >= retries {
			sv.setHealth(s, HealthUnhealthy, err.Error())
		}
	}
}

// setHealth records a health value and prints a line when it changes.
func (sv *Supervisor) setHealth(s *service, h, why string) {
	sv.mu.Lock()
	old := s.st.Health
	sv.mu.Unlock()
	sv.update(s, func(st *Status) {
		st.Health = h
		if why != "" {
			st.Message = why
		}
	})
	if old != h {
		if why != "" {
			sv.console("service %s: %s (%s)", s.name, h, why)
		} else {
			sv.console("service %s: %s", s.name, h)
		}
	}
}

// runCheck runs one check against container id, whose init is pid.
func (sv *Supervisor) runCheck(ctx context.Context, id string, pid int, hc *schema.Healthcheck) error {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return DialInNetNS(ctx, pid, network, addr)
	}
	switch {
	case hc.HTTP != "":
		client := &http.Client{
			Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // a 3xx is healthy as it is
			},
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, hc.HTTP, nil)
		if err != nil {
			return fmt.Errorf("http check: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("http check: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 399 {
			return fmt.Errorf("http check: GET %s: status %d", hc.HTTP, resp.StatusCode)
		}
		return nil
	case hc.TCP != "":
		c, err := dial(ctx, "tcp", hc.TCP)
		if err != nil {
			return fmt.Errorf("tcp check: %w", err)
		}
		c.Close()
		return nil
	case len(hc.Exec) > 0:
		return sv.execCheck(ctx, id, hc.Exec)
	}
	return errors.New("health check has no exec, http or tcp")
}

// DialInNetNS dials addr from inside the network namespace of process pid:
// the socket is created on a locked thread moved into that namespace and
// then moved back. A thread whose namespace cannot be restored stays
// locked, so the Go runtime discards it with its goroutine.
func DialInNetNS(ctx context.Context, pid int, network, addr string) (net.Conn, error) {
	return dialInNetNSPath(ctx, fmt.Sprintf("/proc/%d/ns/net", pid), network, addr)
}

// dialInNetNSPath dials addr from inside the network namespace at nsPath.
func dialInNetNSPath(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		// A panic leaves the thread locked (its namespace is unknown) and
		// is reported as an error, never across PID 1.
		defer func() {
			if r := recover(); r != nil {
				ch <- result{nil, fmt.Errorf("dial in netns: panic: %v", r)}
			}
		}()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("open netns: %w", err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread() // still in the original namespace
			ch <- result{nil, fmt.Errorf("setns %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		c, derr := d.DialContext(ctx, network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			if c != nil {
				c.Close()
			}
			ch <- result{nil, fmt.Errorf("restore netns: %w", err)}
			return
		}
		goruntime.UnlockOSThread()
		ch <- result{c, derr}
	}()
	r := <-ch
	return r.c, r.err
}

// execCheck runs cmd in the container; exit code 0 is healthy. On timeout
// the process is killed.
func (sv *Supervisor) execCheck(ctx context.Context, id string, cmd []string) error {
	var p *container.Process
	err := sv.o.Reaper.Spawn(func() ([]int, error) {
		var err error
		p, err = sv.o.Runtime.Exec(ctx, id, &specs.Process{Args: cmd}, container.IO{})
		if err != nil {
			return nil, err
		}
		return []int{p.Pid()}, nil
	})
	if err != nil {
		return fmt.Errorf("exec check: %w", err)
	}
	defer sv.o.Reaper.Release(p.Pid())
	exit, err := p.Wait(ctx)
	if err != nil {
		_ = p.Signal(syscall.SIGKILL)
		_, _ = p.Wait(context.Background())
		return fmt.Errorf("exec check %q: %w", cmd, err)
	}
	if exit.Code != 0 {
		return fmt.Errorf("exec check %q: exit code %d", cmd, exit.Code)
	}
	return nil
}
