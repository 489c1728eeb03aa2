//go:build linux

package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/beevik/ntp"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Clock is the system clock as NTP corrects it.
type Clock interface {
	// Step jumps the clock by offset.
	Step(offset time.Duration) error
	// Slew makes the kernel skew the clock gradually by offset.
	Slew(offset time.Duration) error
}

// SystemClock is CLOCK_REALTIME: clock_settime to step, adjtimex
// (ADJ_OFFSET_SINGLESHOT, as adjtime(3)) to slew.
type SystemClock struct{}

// Step implements Clock.
func (SystemClock) Step(offset time.Duration) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("ntp: clock_gettime: %w", err)
	}
	ts = unix.NsecToTimespec(ts.Nano() + int64(offset))
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("ntp: clock_settime: %w", err)
	}
	return nil
}

// adjOffsetSingleshot is ADJ_OFFSET_SINGLESHOT (old-style adjtime).
const adjOffsetSingleshot = 0x8001

// Slew implements Clock.
func (SystemClock) Slew(offset time.Duration) error {
	tx := unix.Timex{Modes: adjOffsetSingleshot, Offset: offset.Microseconds()}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("ntp: adjtimex: %w", err)
	}
	return nil
}

// Clock decisions.
type clockAction int

const (
	keep clockAction = iota
	slew
	step
)

func (a clockAction) String() string {
	return [...]string{"in step", "slewing", "stepped"}[a]
}

// Thresholds of the clock decision.
const (
	// StepThreshold: larger offsets step the clock, smaller ones slew it.
	StepThreshold = time.Second
	// keepThreshold: smaller offsets are left alone.
	keepThreshold = time.Millisecond
)

func decide(offset, stepThreshold time.Duration) clockAction {
	a := offset.Abs()
	switch {
	case a > stepThreshold:
		return step
	case a < keepThreshold:
		return keep
	default:
		return slew
	}
}

// TimeSync keeps the clock in step with NTP servers.
type TimeSync struct {
	// Servers returns the servers to ask, in order (re-read every round).
	Servers func() []string
	// Clock is corrected; nil is SystemClock.
	Clock Clock
	// Query asks one server; nil uses beevik/ntp in NetNS.
	Query func(ctx context.Context, server string) (*ntp.Response, error)
	NetNS *netns.NsHandle
	// Interval between synchronisations (default 15 min); failures retry
	// sooner, with backoff from 8 s.
	Interval time.Duration
	// StepThreshold (default StepThreshold).
	StepThreshold time.Duration
	Logf          func(format string, args ...any)
}

// Result is one synchronisation.
type Result struct {
	Server string
	Offset time.Duration
	RTT    time.Duration
	Action string
}

func (s *TimeSync) defaults() {
	if s.Clock == nil {
		s.Clock = SystemClock{}
	}
	if s.Query == nil {
		s.Query = s.query
	}
	if s.Interval <= 0 {
		s.Interval = 15 * time.Minute
	}
	if s.StepThreshold <= 0 {
		s.StepThreshold = StepThreshold
	}
	if s.Logf == nil {
		s.Logf = func(string, ...any) {}
	}
	if s.Servers == nil {
		s.Servers = func() []string { return nil }
	}
}

// ErrNoServers is returned by Sync when no server is known.
var ErrNoServers = errors.New("ntp: no servers")

// Sync asks the servers in order and corrects the clock from the first
// valid answer.
func (s *TimeSync) Sync(ctx context.Context) (Result, error) {
	s.defaults()
	servers := s.Servers()
	if len(servers) == 0 {
		return Result{}, ErrNoServers
	}
	var errs []error
	for _, srv := range servers {
		r, err := s.Query(ctx, srv)
		if err == nil {
			err = r.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", srv, err))
			continue
		}
		res := Result{Server: srv, Offset: r.ClockOffset, RTT: r.RTT}
		a := decide(r.ClockOffset, s.StepThreshold)
		res.Action = a.String()
		switch a {
		case step:
			err = s.Clock.Step(r.ClockOffset)
		case slew:
			err = s.Clock.Slew(r.ClockOffset)
		}
		return res, err
	}
	return Result{}, fmt.Errorf("ntp: %w", errors.Join(errs...))
}

// Run synchronises now and then every Interval until ctx ends. It waits
// quietly while no server is known.
func (s *TimeSync) Run(ctx context.Context) {
	s.defaults()
	const minRetry = 8 * time.Second
	retry := minRetry
	noServers := false
	for {
		res, err := s.Sync(ctx)
		wait := s.Interval
		switch {
		case errors.Is(err, ErrNoServers):
			if !noServers {
				s.Logf("no servers (none configured, none from DHCP); waiting")
				noServers = true
			}
			wait = 2 * time.Second
		case err != nil && res.Server == "":
			s.Logf("%v", err)
			wait, retry = retry, min(retry*2, s.Interval)
		default:
			noServers, retry = false, minRetry
			msg := fmt.Sprintf("%s offset %+v rtt %v: clock %s", res.Server, res.Offset.Round(time.Microsecond), res.RTT.Round(time.Microsecond), res.Action)
			if err != nil {
				msg += ": " + err.Error()
			}
			s.Logf("%s", msg)
		}
		if !sleep(ctx, wait) {
			return
		}
	}
}

// query asks server with beevik/ntp from inside NetNS.
func (s *TimeSync) query(ctx context.Context, server string) (*ntp.Response, error) {
	timeout := 3 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ntp.QueryWithOptions(server, ntp.QueryOptions{
		Timeout: timeout,
		Dialer: func(local, remote string) (net.Conn, error) {
			var c net.Conn
			err := inNetNS(s.NetNS, func() error {
				var d net.Dialer
				var err error
				c, err = d.DialContext(ctx, "udp", remote)
				return err
			})
			return c, err
		},
	})
}
