//go:build linux

package shutdown

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Power button: Cairn reads KEY_POWER from the evdev node of the ACPI
// "Power Button" input device (drivers: button + evdev, loaded by coldplug:
// acpi:LNXPWRBN: and input:* aliases). This needs no netlink family lookup,
// works the same for every power-key source (ACPI button, PS/2 keyboards,
// virtio-input), and is a 24-byte fixed record.

const (
	inputEventSize = 24 // struct input_event on 64-bit: timeval(16) type(2) code(2) value(4)
	evKey          = 1
	keyPower       = 116
	keyPower2      = 0x164 // KEY_POWER2
)

// KeyEvent is the part of struct input_event the watcher needs.
type KeyEvent struct {
	Type, Code uint16
	Value      int32
}

// ParseInputEvents decodes as many whole input_event records as b holds.
func ParseInputEvents(b []byte) []KeyEvent {
	var evs []KeyEvent
	for len(b) >= inputEventSize {
		evs = append(evs, KeyEvent{
			Type:  binary.LittleEndian.Uint16(b[16:]),
			Code:  binary.LittleEndian.Uint16(b[18:]),
			Value: int32(binary.LittleEndian.Uint32(b[20:])),
		})
		b = b[inputEventSize:]
	}
	return evs
}

// IsPowerPress reports whether e is a power key press.
func IsPowerPress(e KeyEvent) bool {
	return e.Type == evKey && (e.Code == keyPower || e.Code == keyPower2) && e.Value == 1
}

// PowerButton watches every input device that can send KEY_POWER.
type PowerButton struct {
	SysInput string // /sys/class/input
	DevInput string // /dev/input
	Logf     func(format string, args ...any)
	mu       sync.Mutex
	watched  map[string]bool
}

// Watch scans for power-key devices every interval (devices appear when the
// deferred module loading brings in button/evdev) and sends a power-off
// request to out on a press.
func (p *PowerButton) Watch(ctx context.Context, interval time.Duration, out chan<- Request) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.Scan(ctx, out)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Scan starts a reader for each new power-key capable event device.
func (p *PowerButton) Scan(ctx context.Context, out chan<- Request) {
	ents, err := os.ReadDir(p.SysInput)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watched == nil {
		p.watched = map[string]bool{}
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, "event") || p.watched[n] {
			continue
		}
		keys, err := os.ReadFile(filepath.Join(p.SysInput, n, "device/capabilities/key"))
		if err != nil || !HasKey(string(keys), keyPower) {
			continue
		}
		f, err := os.Open(filepath.Join(p.DevInput, n))
		if err != nil {
			continue // devtmpfs node not there yet; next scan
		}
		p.watched[n] = true
		name, _ := os.ReadFile(filepath.Join(p.SysInput, n, "device/name"))
		p.Logf("watching %s (%s) for the power key", n, strings.TrimSpace(string(name)))
		go p.read(ctx, f, n, out)
	}
}

func (p *PowerButton) read(ctx context.Context, f *os.File, name string, out chan<- Request) {
	defer f.Close()
	// PID 1 must survive a bug here: stop watching this device, keep going.
	defer func() {
		if x := recover(); x != nil {
			p.Logf("power key %s: panic: %v", name, x)
		}
	}()
	go func() { <-ctx.Done(); f.Close() }()
	buf := make([]byte, inputEventSize*16)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.Logf("power key %s: %v", name, err)
			}
			p.mu.Lock()
			delete(p.watched, name)
			p.mu.Unlock()
			return
		}
		for _, e := range ParseInputEvents(buf[:n]) {
			if IsPowerPress(e) {
				select {
				case out <- Request{Action: PowerOff, Reason: "power button (" + name + ")"}:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// HasKey reports whether a sysfs capabilities/key bitmap (space-separated
// hex words, most significant first, each 64 bits on 64-bit kernels) has
// key code set.
func HasKey(bitmap string, code int) bool {
	words := strings.Fields(bitmap)
	idx := len(words) - 1 - code/64
	if idx < 0 || idx >= len(words) {
		return false
	}
	var w uint64
	if _, err := fmt.Sscanf(words[idx], "%x", &w); err != nil {
		return false
	}
	return w&(1<<(uint(code)%64)) != 0
}
