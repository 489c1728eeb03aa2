// Package logs records a container's stdout and stderr: every line gets a
// timestamp, goes into an in-memory ring and, through a bounded queue, to
// size-rotated files in the CRI log format
// ("2006-01-02T15:04:05.999999999Z stdout F text"). Writers never block on
// the disk: when the queue is full the entry is dropped from the file (it
// stays in the ring) and counted.
package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Stream names a container output stream.
type Stream string

// Streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Entry is one (possibly partial) line.
type Entry struct {
	Time    time.Time
	Stream  Stream
	Line    []byte // without the newline
	Partial bool   // the line continues in the next entry
}

// Options configures a Log. Zero values take the defaults.
type Options struct {
	Path      string    // file path; empty: ring only (or Sink)
	MaxSize   int64     // rotate when the file exceeds this (default 10 MiB)
	MaxFiles  int       // files kept including the live one (default 3)
	RingLines int       // entries kept in memory (default 1000)
	MaxLine   int       // longer lines are split into partial entries (default 16 KiB)
	QueueLen  int       // entries waiting for the file writer (default 4096)
	Sink      io.Writer // if set, formatted entries go here instead of Path
	Now       func() time.Time
}

// Log is the log of one container. It is safe for concurrent use.
type Log struct {
	opts    Options
	queue   chan Entry
	done    chan struct{}
	dropped atomic.Uint64
	werr    atomic.Pointer[error]

	mu      sync.Mutex
	ring    []Entry
	next    int
	full    bool
	partial map[Stream][]byte
	closed  bool

	file *os.File
	size int64
}

// New opens (or creates) the log. The file writer runs until Close.
func New(opts Options) (*Log, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = 10 << 20
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = 3
	}
	if opts.RingLines <= 0 {
		opts.RingLines = 1000
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = 16 << 10
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	l := &Log{
		opts:    opts,
		queue:   make(chan Entry, opts.QueueLen),
		done:    make(chan struct{}),
		ring:    make([]Entry, opts.RingLines),
		partial: map[Stream][]byte{},
	}
	if opts.Sink == nil && opts.Path != "" {
		f, err := os.OpenFile(opts.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("logs: open %s: %w", opts.Path, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("logs: stat %s: %w", opts.Path, err)
		}
		l.file, l.size = f, st.Size()
	}
	go l.writer()
	return l, nil
}

// Writer returns an io.Writer for one stream. Write never blocks on I/O and
// always reports len(p) written.
func (l *Log) Writer(s Stream) io.Writer { return streamWriter{l, s} }

type streamWriter struct {
	l *Log
	s Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.l.write(w.s, p)
	return len(p), nil
}

func (l *Log) write(s Stream, p []byte) {
	now := l.opts.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.dropped.Add(1)
		return
	}
	buf := append(l.partial[s], p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		l.emitLocked(Entry{Time: now, Stream: s, Line: bytes.Clone(buf[:i])})
		buf = buf[i+1:]
	}
	for len(buf) >= l.opts.MaxLine {
		l.emitLocked(Entry{Time: now, Stream: s, Line: bytes.Clone(buf[:l.opts.MaxLine]), Partial: true})
		buf = buf[l.opts.MaxLine:]
	}
	l.partial[s] = bytes.Clone(buf)
}

func (l *Log) emitLocked(e Entry) {
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
	if l.file == nil && l.opts.Sink == nil {
		return
	}
	select {
	case l.queue <- e:
	default:
		l.dropped.Add(1)
	}
}

// Tail returns up to n of the newest entries from the ring, oldest first
// (n <= 0: all).
func (l *Log) Tail(n int) []Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []Entry
	if l.full {
		all = append(all, l.ring[l.next:]...)
	}
	all = append(all, l.ring[:l.next]...)
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// Dropped counts entries that did not reach the file because the writer
// was behind, or that arrived after Close.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Close flushes unterminated lines, waits for the file writer and closes
// the file. It returns the first write error the file writer hit.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	now := l.opts.Now()
	for _, s := range []Stream{Stdout, Stderr} {
		if b := l.partial[s]; len(b) > 0 {
			l.emitLocked(Entry{Time: now, Stream: s, Line: b})
			l.partial[s] = nil
		}
	}
	l.closed = true
	close(l.queue)
	l.mu.Unlock()
	<-l.done
	var err error
	if l.file != nil {
		err = l.file.Close()
	}
	if p := l.werr.Load(); p != nil {
		return *p
	}
	if err != nil {
		return fmt.Errorf("logs: close: %w", err)
	}
	return nil
}

func (l *Log) writer() {
	defer close(l.done)
	var buf []byte
	for e := range l.queue {
		buf = Format(buf[:0], e)
		var err error
		if l.opts.Sink != nil {
			_, err = l.opts.Sink.Write(buf)
		} else {
			err = l.writeFile(buf)
		}
		if err != nil && l.werr.Load() == nil {
			err = fmt.Errorf("logs: write: %w", err)
			l.werr.Store(&err)
		}
	}
}

func (l *Log) writeFile(b []byte) error {
	if l.size > 0 && l.size+int64(len(b)) > l.opts.MaxSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.file.Write(b)
	l.size += int64(n)
	return err
}

// rotate shifts path.N-2 → path.N-1 … path → path.1 and starts a new file.
func (l *Log) rotate() error {
	p := l.opts.Path
	if err := l.file.Close(); err != nil {
		return err
	}
	for i := l.opts.MaxFiles - 1; i >= 1; i-- {
		src := p
		if i > 1 {
			src = p + "." + strconv.Itoa(i-1)
		}
		if err := os.Rename(src, p+"."+strconv.Itoa(i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if l.opts.MaxFiles == 1 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	l.file, l.size = f, 0
	return nil
}

// Format appends e in CRI log format to b.
func Format(b []byte, e Entry) []byte {
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, e.Stream...)
	if e.Partial {
		b = append(b, " P "...)
	} else {
		b = append(b, " F "...)
	}
	b = append(b, e.Line...)
	return append(b, '\n')
}

// Parse reads one CRI log line (without or with its newline).
func Parse(line []byte) (Entry, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	ts, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return Entry{}, errors.New("logs: missing stream")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return Entry{}, fmt.Errorf("logs: bad time: %w", err)
	}
	st, rest, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return Entry{}, errors.New("logs: missing tag")
	}
	s := Stream(st)
	if s != Stdout && s != Stderr {
		return Entry{}, fmt.Errorf("logs: bad stream %q", st)
	}
	tag, msg, ok := bytes.Cut(rest, []byte(" "))
	if !ok && len(rest) != 1 {
		return Entry{}, errors.New("logs: missing text")
	}
	if !ok {
		tag = rest
	}
	if string(tag) != "F" && string(tag) != "P" {
		return Entry{}, fmt.Errorf("logs: bad tag %q", tag)
	}
	return Entry{Time: t, Stream: s, Line: bytes.Clone(msg), Partial: string(tag) == "P"}, nil
}
