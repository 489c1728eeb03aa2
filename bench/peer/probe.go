package peer

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (uint16, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port), nil
}

// PollHTTP starts a GET of url every 50 ms, each with its own 1 s limit and
// without waiting for the previous ones, until one answers 200, and returns
// the moment that answer arrived. QEMU's user network accepts a connection on
// a forwarded port at once and then waits for the guest: while the guest's
// network is not up, an attempt just hangs, so a sequential poll would only
// see the service at its next attempt, up to a whole time-out later.
func PollHTTP(ctx context.Context, url string) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts the attempts still pending
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	won := make(chan time.Time, 1)
	attempt := func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := c.Do(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			select {
			case won <- time.Now():
			default:
			}
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	go attempt()
	for {
		select {
		case t := <-won:
			return t, nil
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("poll %s: %w", url, ctx.Err())
		case <-tick.C:
			go attempt()
		}
	}
}

// Sizes are a file's apparent size and the bytes it occupies on disk.
type Sizes struct {
	Apparent  int64 `json:"apparent_bytes"`
	Allocated int64 `json:"allocated_bytes"`
}

// FileSizes stats p sparse-aware.
func FileSizes(p string) (Sizes, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return Sizes{}, fmt.Errorf("size: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Sizes{}, fmt.Errorf("size %s: no stat_t", p)
	}
	return Sizes{Apparent: fi.Size(), Allocated: st.Blocks * 512}, nil
}

func allocatedBytes(p string) (int64, error) {
	s, err := FileSizes(p)
	return s.Allocated, err
}
