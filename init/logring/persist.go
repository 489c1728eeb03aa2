package logring

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Persister appends new ring lines to a file and rotates it at MaxBytes
// (file -> file.1, keeping one old generation).
type Persister struct {
	Ring     *Ring
	Path     string
	MaxBytes int64
	mu       sync.Mutex
	next     uint64
}

// Flush writes the lines added since the last flush and fsyncs the file.
func (p *Persister) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines, next, missed := p.Ring.Since(p.next)
	if len(lines) == 0 && missed == 0 {
		return nil
	}
	var b strings.Builder
	if missed > 0 {
		fmt.Fprintf(&b, "cairn: log: %d lines lost (ring overflow)\n", missed)
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	if err := os.MkdirAll(filepath.Dir(p.Path), 0o755); err != nil {
		return fmt.Errorf("logring: %w", err)
	}
	if st, err := os.Stat(p.Path); err == nil && st.Size()+int64(b.Len()) > p.MaxBytes && st.Size() > 0 {
		if err := os.Rename(p.Path, p.Path+".1"); err != nil {
			return fmt.Errorf("logring: rotate: %w", err)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("logring: %w", err)
	}
	f, err := os.OpenFile(p.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("logring: %w", err)
	}
	_, werr := f.WriteString(b.String())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("logring: write %s: %w", p.Path, err)
	}
	p.next = next
	return nil
}
