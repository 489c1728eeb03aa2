package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"cairn.dev/cairn/init/cmdline"
)

// Limits of ReadUKI: a UKI on the ESP is outside input (anything may have
// put a file there), so every offset and size is checked before use.
const (
	peHeaderLimit  = 64 << 10 // the PE headers and section table must lie in the first 64 KiB
	maxPESections  = 96       // the PE loader limit in the specification
	maxSectionRead = 64 << 10 // .cmdline and .osrel are small; more is not a Cairn UKI
)

// UKIInfo is what the agent needs from a UKI: its command line (which
// names the root slot and the dm-verity parameters) and its os-release.
type UKIInfo struct {
	Cmdline *cmdline.Params
	// VersionID is VERSION_ID from .osrel ("" if absent).
	VersionID string
}

// ReadUKI reads the .cmdline and .osrel sections of the PE image r of the
// given size, without reading the kernel or the initramfs. It requires a
// PE32+ image with a .linux section and a .cmdline that init/cmdline
// accepts.
func ReadUKI(r io.ReaderAt, size int64) (UKIInfo, error) {
	var info UKIInfo
	hdr := make([]byte, min(size, peHeaderLimit))
	if n, err := r.ReadAt(hdr, 0); n != len(hdr) {
		return info, fmt.Errorf("uki: read headers: %w", orEOF(err))
	}
	if len(hdr) < 0x40 || hdr[0] != 'M' || hdr[1] != 'Z' {
		return info, errors.New("uki: not a PE image (no MZ header)")
	}
	le := binary.LittleEndian
	lfanew := uint64(le.Uint32(hdr[0x3c:]))
	const coffSize = 20
	if lfanew+4+coffSize > uint64(len(hdr)) {
		return info, fmt.Errorf("uki: PE header at %#x outside the first %d bytes", lfanew, len(hdr))
	}
	if !bytes.Equal(hdr[lfanew:lfanew+4], []byte("PE\x00\x00")) {
		return info, errors.New("uki: not a PE image (no PE signature)")
	}
	coff := lfanew + 4
	nsec := uint64(le.Uint16(hdr[coff+2:]))
	optSize := uint64(le.Uint16(hdr[coff+16:]))
	if nsec == 0 || nsec > maxPESections {
		return info, fmt.Errorf("uki: %d sections (want 1..%d)", nsec, maxPESections)
	}
	opt := coff + coffSize
	if optSize < 2 || opt+optSize > uint64(len(hdr)) {
		return info, fmt.Errorf("uki: optional header of %d bytes outside the headers", optSize)
	}
	if m := le.Uint16(hdr[opt:]); m != 0x20b {
		return info, fmt.Errorf("uki: optional header magic %#x, want PE32+ 0x20b", m)
	}
	table := opt + optSize
	if table+nsec*40 > uint64(len(hdr)) {
		return info, fmt.Errorf("uki: section table (%d sections) outside the headers", nsec)
	}
	sections := map[string][]byte{}
	hasLinux := false
	for i := range nsec {
		s := hdr[table+i*40 : table+(i+1)*40]
		name := string(bytes.TrimRight(s[:8], "\x00"))
		vsize, rsize, ptr := le.Uint32(s[8:]), le.Uint32(s[16:]), le.Uint32(s[20:])
		n := uint64(min(vsize, rsize))
		switch name {
		case ".linux":
			if n == 0 || uint64(ptr)+n > uint64(size) {
				return info, fmt.Errorf("uki: .linux (%#x+%#x) outside the file of %d bytes", ptr, n, size)
			}
			hasLinux = true
			continue
		case ".cmdline", ".osrel":
		default:
			continue
		}
		if _, dup := sections[name]; dup {
			return info, fmt.Errorf("uki: duplicate section %s", name)
		}
		if n > maxSectionRead {
			return info, fmt.Errorf("uki: section %s of %d bytes, limit %d", name, n, maxSectionRead)
		}
		if uint64(ptr)+n > uint64(size) {
			return info, fmt.Errorf("uki: section %s (%#x+%#x) outside the file of %d bytes", name, ptr, n, size)
		}
		data := make([]byte, n)
		if got, err := r.ReadAt(data, int64(ptr)); got != len(data) {
			return info, fmt.Errorf("uki: read %s: %w", name, orEOF(err))
		}
		sections[name] = data
	}
	if !hasLinux {
		return info, errors.New("uki: no .linux section")
	}
	raw, ok := sections[".cmdline"]
	if !ok {
		return info, errors.New("uki: no .cmdline section")
	}
	p, err := cmdline.Parse(strings.TrimRight(string(raw), "\x00"))
	if err != nil {
		return info, fmt.Errorf("uki: %w", err)
	}
	info.Cmdline = p
	info.VersionID = osrelValue(sections[".osrel"], "VERSION_ID")
	return info, nil
}

// osrelValue returns key's value from os-release text, unquoted.
func osrelValue(data []byte, key string) string {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && k == key {
			if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}
