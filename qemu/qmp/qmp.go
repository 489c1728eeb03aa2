// Package qmp is a small client for the QEMU Machine Protocol over a unix
// socket: capability negotiation, synchronous commands, and events kept for
// the caller. Everything QEMU sends is treated as untrusted input: lines are
// length-bounded and decoded strictly.
package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// MaxMessageSize bounds one QMP message (QEMU's replies are far smaller).
const MaxMessageSize = 4 << 20

// maxEvents bounds the number of events kept by a Client.
const maxEvents = 1024

// DefaultTimeout bounds Execute (without a context).
const DefaultTimeout = 30 * time.Second

// Error is an error reply from QEMU.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// Event is an asynchronous QMP event (e.g. SHUTDOWN, RESET, POWERDOWN).
type Event struct {
	Name      string
	Data      json.RawMessage
	Timestamp time.Time
}

// Message is one decoded QMP server message. Exactly one of Greeting, Return,
// Error or Event is set.
type Message struct {
	Greeting json.RawMessage // the "QMP" object of the greeting
	Return   json.RawMessage // the "return" value of a successful command
	Error    *Error          // the "error" object of a failed command
	Event    *Event          // an asynchronous event
	ID       json.RawMessage // the "id" echoed back, if any
}

type wireMessage struct {
	QMP       json.RawMessage `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     *string         `json:"event"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// DecodeMessage decodes one QMP message (one JSON object).
func DecodeMessage(b []byte) (Message, error) {
	b = bytes.TrimSpace(b)
	if len(b) > MaxMessageSize {
		return Message{}, fmt.Errorf("qmp: message of %d bytes exceeds %d", len(b), MaxMessageSize)
	}
	if len(b) == 0 || b[0] != '{' {
		return Message{}, errors.New("qmp: message is not a JSON object")
	}
	var w wireMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		return Message{}, fmt.Errorf("qmp: decode message: %w", err)
	}
	if dec.More() {
		return Message{}, errors.New("qmp: trailing data after message")
	}
	var m Message
	m.ID = w.ID
	kinds := 0
	if w.QMP != nil {
		m.Greeting = w.QMP
		kinds++
	}
	if w.Return != nil {
		m.Return = w.Return
		kinds++
	}
	if w.Error != nil {
		m.Error = w.Error
		kinds++
	}
	if w.Event != nil {
		if *w.Event == "" {
			return Message{}, errors.New("qmp: event with an empty name")
		}
		ev := &Event{Name: *w.Event, Data: w.Data}
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			ev.Timestamp = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
		m.Event = ev
		kinds++
	}
	switch kinds {
	case 1:
		return m, nil
	case 0:
		return Message{}, errors.New("qmp: message has none of QMP/return/error/event")
	default:
		return Message{}, errors.New("qmp: message mixes QMP/return/error/event")
	}
}

// Client is a QMP connection. Its methods are safe for concurrent use;
// commands are executed one at a time.
type Client struct {
	conn   net.Conn
	r      *bufio.Reader
	mu     sync.Mutex // serialises commands
	nextID uint64

	evMu   sync.Mutex
	events []Event

	// Greeting is the server's greeting object (version, capabilities).
	Greeting json.RawMessage
}

// Dial connects to the QMP unix socket at path and negotiates capabilities.
// It retries while the socket does not exist or refuses connections (QEMU
// creates it shortly after start), until ctx ends.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c, err := NewClient(ctx, conn)
			if err != nil {
				conn.Close()
				return nil, err
			}
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connect %s: %w (last error: %v)", path, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewClient reads the greeting from conn and negotiates capabilities.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	stop := c.watch(ctx)
	defer stop()
	m, err := c.read()
	if err != nil {
		return nil, fmt.Errorf("qmp: read greeting: %w", err)
	}
	if m.Greeting == nil {
		return nil, errors.New("qmp: first message is not a greeting")
	}
	c.Greeting = m.Greeting
	if _, err := c.execLocked("qmp_capabilities", nil); err != nil {
		return nil, fmt.Errorf("qmp: negotiate capabilities: %w", err)
	}
	return c, nil
}

// watch sets the connection deadline from ctx and unblocks I/O if ctx is
// cancelled. The returned func must be called when the operation is done;
// when it returns, the watcher no longer touches the connection.
func (c *Client) watch(ctx context.Context) func() {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	} else {
		_ = c.conn.SetDeadline(time.Time{})
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
			_ = c.conn.SetDeadline(time.Unix(1, 0))
		case <-done:
		}
	}()
	// Wait for the watcher to finish: if ctx ended just as the operation
	// did, a watcher still running could otherwise set its past deadline
	// after the next operation set its own, failing that one at once.
	return func() { close(done); <-exited }
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Execute runs cmd with args (nil for none) and returns the "return" value.
// It is bounded by DefaultTimeout.
func (c *Client) Execute(cmd string, args any) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return c.ExecuteContext(ctx, cmd, args)
}

// ExecuteContext is Execute bounded by ctx. For "quit", a connection closed by
// QEMU before the reply counts as success.
func (c *Client) ExecuteContext(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stop := c.watch(ctx)
	defer stop()
	ret, err := c.execLocked(cmd, args)
	if err != nil && cmd == "quit" && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
		return json.RawMessage("{}"), nil
	}
	if err != nil && (ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
		cerr := ctx.Err()
		if cerr == nil {
			cerr = context.DeadlineExceeded
		}
		return nil, fmt.Errorf("qmp: %s: %w", cmd, cerr)
	}
	return ret, err
}

func (c *Client) execLocked(cmd string, args any) (json.RawMessage, error) {
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{cmd, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("qmp: encode %s: %w", cmd, err)
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp: send %s: %w", cmd, err)
	}
	for {
		m, err := c.read()
		if err != nil {
			return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
		}
		switch {
		case m.Event != nil:
			c.addEvent(*m.Event)
			continue
		case m.Greeting != nil:
			return nil, fmt.Errorf("qmp: %s: unexpected greeting", cmd)
		}
		if got := string(m.ID); got != strconv.Quote(id) {
			// A reply to someone else's command (cannot happen with one client); skip it.
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("qmp: %s: %w", cmd, m.Error)
		}
		return m.Return, nil
	}
}

// read reads one line-delimited message, rejecting oversized lines.
func (c *Client) read() (Message, error) {
	var buf []byte
	for {
		chunk, err := c.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > MaxMessageSize {
			return Message{}, fmt.Errorf("message exceeds %d bytes", MaxMessageSize)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return Message{}, err
		}
		if len(bytes.TrimSpace(buf)) == 0 {
			buf = buf[:0]
			continue
		}
		return DecodeMessage(buf)
	}
}

func (c *Client) addEvent(e Event) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	if len(c.events) >= maxEvents {
		c.events = c.events[1:]
	}
	c.events = append(c.events, e)
}

// Events returns the events received so far (while waiting for replies).
func (c *Client) Events() []Event {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	return append([]Event(nil), c.events...)
}
