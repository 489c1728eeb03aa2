// Package cmdline parses the kernel command line of a Cairn boot
// (/proc/cmdline): the slot, version, root PARTUUID and dm-verity parameters
// that the slot's UKI carries.
package cmdline

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Params are the cairn.* parameters of the kernel command line.
type Params struct {
	Slot    string // "A" or "B"
	Version string // OS version the UKI belongs to
	// RootPARTUUID is the lower-case PARTUUID of the root slot partition.
	RootPARTUUID string
	// VerityRootHash and VeritySalt are lower-case hex; VeritySalt may be
	// empty (no salt, "-" in the table).
	VerityRootHash string
	VeritySalt     string
	// VerityBlocks is the number of 4096-byte data blocks; the hash tree
	// starts right after them.
	VerityBlocks uint64
	// Args holds every key=value (or bare key, value "") in order of
	// appearance; later duplicates win.
	Args map[string]string
}

// maxLen bounds the input (COMMAND_LINE_SIZE is 2048 on x86; leave room).
const maxLen = 64 << 10

// Split splits a kernel command line into words the way the kernel's
// next_arg does: whitespace separates words, double quotes group (the quotes
// are removed).
func Split(s string) []string {
	var (
		words []string
		cur   strings.Builder
		inQ   bool
		have  bool
	)
	for _, r := range s {
		switch {
		case r == '"':
			inQ = !inQ
			have = true
		case !inQ && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if have {
				words = append(words, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if have {
		words = append(words, cur.String())
	}
	return words
}

// Parse parses the whole command line. It does not require the cairn.*
// parameters; use Params.ValidateRoot for the early stage.
func Parse(s string) (*Params, error) {
	if len(s) > maxLen {
		return nil, fmt.Errorf("cmdline: %d bytes, longer than %d", len(s), maxLen)
	}
	p := &Params{Args: map[string]string{}}
	for _, w := range Split(s) {
		if w == "--" {
			break // the rest belongs to init's argv
		}
		k, v, _ := strings.Cut(w, "=")
		p.Args[k] = v
	}
	p.Slot = p.Args["cairn.slot"]
	p.Version = p.Args["cairn.version"]
	if root, ok := p.Args["cairn.root"]; ok {
		u, found := strings.CutPrefix(root, "PARTUUID=")
		if !found {
			return nil, fmt.Errorf("cmdline: cairn.root=%q: only PARTUUID= is supported", root)
		}
		u = strings.ToLower(u)
		if !validUUID(u) {
			return nil, fmt.Errorf("cmdline: cairn.root: bad PARTUUID %q", u)
		}
		p.RootPARTUUID = u
	}
	if h, ok := p.Args["cairn.verity.roothash"]; ok {
		h = strings.ToLower(h)
		if err := validHex(h, 1); err != nil {
			return nil, fmt.Errorf("cmdline: cairn.verity.roothash: %w", err)
		}
		p.VerityRootHash = h
	}
	if s, ok := p.Args["cairn.verity.salt"]; ok && s != "-" && s != "" {
		s = strings.ToLower(s)
		if err := validHex(s, 1); err != nil {
			return nil, fmt.Errorf("cmdline: cairn.verity.salt: %w", err)
		}
		p.VeritySalt = s
	}
	if b, ok := p.Args["cairn.verity.blocks"]; ok {
		n, err := strconv.ParseUint(b, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("cmdline: cairn.verity.blocks: %w", err)
		}
		if n == 0 || n > 1<<40 {
			return nil, fmt.Errorf("cmdline: cairn.verity.blocks=%d out of range", n)
		}
		p.VerityBlocks = n
	}
	return p, nil
}

// ValidateRoot checks that everything the early stage needs is present.
func (p *Params) ValidateRoot() error {
	var errs []error
	if p.Slot != "A" && p.Slot != "B" {
		errs = append(errs, fmt.Errorf("cairn.slot=%q, want A or B", p.Slot))
	}
	if p.Version == "" {
		errs = append(errs, errors.New("cairn.version missing"))
	}
	if p.RootPARTUUID == "" {
		errs = append(errs, errors.New("cairn.root missing"))
	}
	if p.VerityRootHash == "" {
		errs = append(errs, errors.New("cairn.verity.roothash missing"))
	}
	if p.VerityBlocks == 0 {
		errs = append(errs, errors.New("cairn.verity.blocks missing"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cmdline: %w", err)
	}
	return nil
}

func validHex(s string, minBytes int) error {
	if len(s)%2 != 0 || len(s)/2 < minBytes || len(s) > 256 {
		return fmt.Errorf("%q: bad length", s)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	return nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
