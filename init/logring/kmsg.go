package logring

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// KmsgRecord is one /dev/kmsg record.
type KmsgRecord struct {
	Level    int // syslog priority (0 emerg .. 7 debug)
	Facility int
	Seq      uint64
	Time     time.Duration // since boot (monotonic)
	Message  string
}

// ParseKmsg parses one read(2) of /dev/kmsg:
// "<prio>,<seq>,<usec>,<flags>[,...];<message>\n[ KEY=value\n...]".
// Continuation (dictionary) lines are dropped.
func ParseKmsg(b []byte) (KmsgRecord, error) {
	var r KmsgRecord
	s := string(b)
	head, msg, ok := strings.Cut(s, ";")
	if !ok {
		return r, errors.New("kmsg: no ';'")
	}
	f := strings.Split(head, ",")
	if len(f) < 4 {
		return r, fmt.Errorf("kmsg: %d header fields", len(f))
	}
	prio, err := strconv.ParseUint(f[0], 10, 31)
	if err != nil {
		return r, fmt.Errorf("kmsg: prio: %w", err)
	}
	r.Level, r.Facility = int(prio&7), int(prio>>3)
	if r.Seq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return r, fmt.Errorf("kmsg: seq: %w", err)
	}
	us, err := strconv.ParseUint(f[2], 10, 63)
	if err != nil || us > uint64(1<<63-1)/uint64(time.Microsecond) {
		return r, fmt.Errorf("kmsg: time %q", f[2])
	}
	r.Time = time.Duration(us) * time.Microsecond
	msg, _, _ = strings.Cut(msg, "\n")
	r.Message = unescape(msg)
	return r, nil
}

// unescape undoes the kernel's \xNN escaping of non-printable bytes.
func unescape(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				c := byte(v)
				if c < 0x20 || c == 0x7f {
					c = '?'
				}
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
