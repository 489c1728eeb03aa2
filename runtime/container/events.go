package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// EventType names what happened to a container.
type EventType string

// Event types.
const (
	// EventStart: the container's process was released by Start.
	EventStart EventType = "start"
	// EventExit: the container's init process ended (Event.Exit is set).
	EventExit EventType = "exit"
	// EventOOM: the kernel OOM-killed a process of the container
	// (memory.events oom_kill went up; Event.OOMKills is the new count).
	EventOOM EventType = "oom"
	// EventExecExit: a process started by Exec ended (Event.Pid, Event.Exit).
	EventExecExit EventType = "exec-exit"
)

// Event is something that happened to a container created (or exec'd
// into) by this Runtime. Events of containers created by other processes
// sharing the state directory are not seen.
type Event struct {
	Type     EventType
	ID       string
	Time     time.Time
	Pid      int         // start: the container's init; exec-exit: the exec'd process
	Exit     *ExitStatus // exit, exec-exit
	OOMKills uint64      // oom
}

// events fans events out to subscribers. Each subscriber has an unbounded
// queue, so a slow reader never blocks the runtime (nor loses an exit).
type events struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	mu    sync.Mutex
	queue []Event
	wake  chan struct{} // capacity 1
}

// Events returns a channel of the events of this Runtime's containers from
// now on, in order. It is closed when ctx is done. Events queue in memory
// until read, so read the channel until ctx ends.
func (r *Runtime) Events(ctx context.Context) <-chan Event {
	s := &subscriber{wake: make(chan struct{}, 1)}
	r.ev.mu.Lock()
	if r.ev.subs == nil {
		r.ev.subs = map[*subscriber]struct{}{}
	}
	r.ev.subs[s] = struct{}{}
	r.ev.mu.Unlock()
	out := make(chan Event)
	go func() {
		defer close(out)
		defer func() {
			r.ev.mu.Lock()
			delete(r.ev.subs, s)
			r.ev.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			var next []Event
			next, s.queue = s.queue, nil
			s.mu.Unlock()
			for _, e := range next {
				select {
				case out <- e:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (r *Runtime) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	r.ev.mu.Lock()
	defer r.ev.mu.Unlock()
	for s := range r.ev.subs {
		s.mu.Lock()
		s.queue = append(s.queue, e)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// readOOMKills returns the oom_kill count of a memory.events file (0 if
// the file does not exist: no memory controller).
func readOOMKills(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if ok && string(k) == "oom_kill" {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: oom_kill: %w", path, err)
			}
			return n, nil
		}
	}
	return 0, sc.Err()
}

// oomWatch follows the oom_kill count of a memory.events file with
// inotify until stop is closed, calling report with each new count above
// the last one seen. It returns the last count it saw. Without inotify (or
// without the file) it only reads the count once at the end.
func oomWatch(path string, stop <-chan struct{}, report func(uint64)) uint64 {
	var mu sync.Mutex
	var last uint64
	check := func() {
		mu.Lock()
		defer mu.Unlock()
		if n, err := readOOMKills(path); err == nil && n > last {
			last = n
			report(n)
		}
	}
	defer check()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		<-stop
		return last
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: the Go poller waits
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		f.Close()
		<-stop
		return last
	}
	check()
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := f.Read(buf); err != nil {
				readErr <- err
				return
			}
			check()
		}
	}()
	select {
	case <-stop:
	case <-readErr:
		<-stop
	}
	f.Close() // ends the reader
	check()
	mu.Lock()
	defer mu.Unlock()
	return last
}

// watchOOM publishes oom events for container id while p runs; the final
// count check happens when p is done (before the exit event).
func (r *Runtime) watchOOM(id string, p *proc, cgRoot, cgPath string) {
	if cgPath == "" {
		close(p.oomDone)
		return
	}
	path := filepath.Join(cgRoot, cgPath, "memory.events")
	go func() {
		defer close(p.oomDone)
		oomWatch(path, p.exited, func(n uint64) {
			r.publish(Event{Type: EventOOM, ID: id, OOMKills: n})
		})
	}()
}
