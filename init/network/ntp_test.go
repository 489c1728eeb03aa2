//go:build linux

package network

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/beevik/ntp"
)

func TestDecide(t *testing.T) {
	tests := []struct {
		off  time.Duration
		want clockAction
	}{
		{0, keep},
		{999 * time.Microsecond, keep},
		{-999 * time.Microsecond, keep},
		{2 * time.Millisecond, slew},
		{-time.Second, slew},
		{time.Second, slew},
		{time.Second + 1, step},
		{-90 * time.Second, step},
		{50 * 365 * 24 * time.Hour, step},
	}
	for _, tt := range tests {
		if got := decide(tt.off, StepThreshold); got != tt.want {
			t.Errorf("decide(%v) = %v, want %v", tt.off, got, tt.want)
		}
	}
}

type fakeClock struct {
	steps, slews []time.Duration
	err          error
}

func (c *fakeClock) Step(d time.Duration) error { c.steps = append(c.steps, d); return c.err }
func (c *fakeClock) Slew(d time.Duration) error { c.slews = append(c.slews, d); return c.err }

// goodResponse passes ntp's Validate.
func goodResponse(off time.Duration) *ntp.Response {
	now := time.Now()
	return &ntp.Response{ClockOffset: off, RTT: time.Millisecond, Stratum: 2, Version: 4, Time: now, ReferenceTime: now.Add(-time.Minute)}
}

func TestSync(t *testing.T) {
	kod := goodResponse(0)
	kod.Stratum = 0
	unsynced := goodResponse(0)
	unsynced.Leap = ntp.LeapNotInSync
	responses := map[string]*ntp.Response{
		"step": goodResponse(90 * time.Second), "slew": goodResponse(-200 * time.Millisecond), "keep": goodResponse(100 * time.Microsecond),
		"kod": kod, "unsynced": unsynced,
	}
	query := func(_ context.Context, s string) (*ntp.Response, error) {
		if r, ok := responses[s]; ok {
			return r, nil
		}
		return nil, errors.New("timeout")
	}
	tests := []struct {
		name        string
		servers     []string
		wantServer  string
		wantAction  string
		steps       int
		slews       int
		wantErr     string
		clockFailed bool
	}{
		{name: "step", servers: []string{"step"}, wantServer: "step", wantAction: "stepped", steps: 1},
		{name: "slew", servers: []string{"slew"}, wantServer: "slew", wantAction: "slewing", slews: 1},
		{name: "keep", servers: []string{"keep"}, wantServer: "keep", wantAction: "in step"},
		{name: "skips dead and invalid servers", servers: []string{"dead", "kod", "unsynced", "slew"}, wantServer: "slew", wantAction: "slewing", slews: 1},
		{name: "all bad", servers: []string{"dead", "kod"}, wantErr: "kiss of death"},
		{name: "none", wantErr: "no servers"},
		{name: "clock error", servers: []string{"step"}, wantServer: "step", wantAction: "stepped", steps: 1, clockFailed: true, wantErr: "denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{}
			if tt.clockFailed {
				c.err = errors.New("denied")
			}
			s := &TimeSync{Servers: func() []string { return tt.servers }, Query: query, Clock: c}
			res, err := s.Sync(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if res.Server != tt.wantServer || res.Action != tt.wantAction || len(c.steps) != tt.steps || len(c.slews) != tt.slews {
				t.Errorf("result %+v steps %v slews %v", res, c.steps, c.slews)
			}
			if tt.steps == 1 && c.steps[0] != responses[tt.wantServer].ClockOffset {
				t.Errorf("stepped by %v", c.steps[0])
			}
		})
	}
}

// sntpServerAt answers SNTP on addr (in the caller's netns) with a clock
// ahead by offset; it returns the address it listens on.
func sntpServerAt(t *testing.T, addr string, offset time.Duration) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ntpTime := func(tm time.Time) uint64 {
		const era = 2208988800 // 1900 -> 1970
		secs := uint64(tm.Unix() + era)
		frac := uint64(tm.Nanosecond()) << 32 / 1e9
		return secs<<32 | frac
	}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 48 {
				continue
			}
			rx := time.Now().Add(offset)
			out := make([]byte, 48)
			out[0] = 0<<6 | 4<<3 | 4 // no leap warning, v4, server
			out[1] = 2               // stratum
			out[2] = 6
			out[3] = 0xEC                                    // precision
			binary.BigEndian.PutUint32(out[12:], 0x7f000001) // reference id
			binary.BigEndian.PutUint64(out[16:], ntpTime(rx.Add(-time.Minute)))
			copy(out[24:32], buf[40:48]) // origin = client's transmit
			binary.BigEndian.PutUint64(out[32:], ntpTime(rx))
			binary.BigEndian.PutUint64(out[40:], ntpTime(time.Now().Add(offset)))
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestSyncSNTP queries a local SNTP responder 90 s ahead through beevik/ntp:
// the clock (a fake) is stepped by about 90 s. No outside traffic.
func TestSyncSNTP(t *testing.T) {
	addr := sntpServerAt(t, "127.0.0.1:0", 90*time.Second)
	c := &fakeClock{}
	s := &TimeSync{Servers: func() []string { return []string{addr} }, Clock: c}
	res, err := s.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.steps) != 1 || (c.steps[0]-90*time.Second).Abs() > time.Second {
		t.Fatalf("steps %v, result %+v", c.steps, res)
	}
}
