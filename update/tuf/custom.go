package tuf

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"time"
)

// Kinds of Cairn targets.
const (
	KindRoot       = "root"
	KindUKI        = "uki"
	KindChunkIndex = "chunk-index"
)

// File names of a version's targets, below <os>/<version>/.
const (
	RootFile       = "root.erofs"
	ChunkIndexFile = "root.chunks.json"
)

// UKIFile is the file name of the UKI for slot ("A" or "B").
func UKIFile(slot string) string { return "uki-" + slot + ".efi" }

// TargetName is the TUF target name of a file of a version: <os>/<version>/<file>.
func TargetName(osName, version, file string) string {
	return path.Join(osName, version, file)
}

var (
	osNameRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	channelRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// ValidOSName reports whether name is a valid OS name (as in OS files).
func ValidOSName(name string) error {
	if !osNameRe.MatchString(name) {
		return fmt.Errorf("OS name %q must be 1-32 lower-case letters, digits or inner dashes", name)
	}
	return nil
}

// ValidChannel reports whether ch is a valid channel name.
func ValidChannel(ch string) error {
	if !channelRe.MatchString(ch) {
		return fmt.Errorf("channel %q must be 1-64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", ch)
	}
	return nil
}

// Wave is one step of a staged rollout: StartAfterHours after the version
// was published, Percent percent of the machines may install it (those
// whose seed, a number in [0,1) fixed per machine, is below Percent/100).
// Both are integers: TUF signs canonical JSON, which has no fractions.
type Wave struct {
	StartAfterHours int64 `json:"start_after_hours"`
	Percent         int64 `json:"percent"`
}

// Custom is what Cairn keeps in a TUF target's "custom" object, under the
// key "cairn":
//
//	{"cairn": {"os": "hello", "version": "1.2.0", "channel": "stable",
//	  "min_version": "", "waves": [{"start_after_hours": 0, "percent": 10}],
//	  "published": "2026-11-22T10:00:00Z", "kind": "root|uki|chunk-index",
//	  "slot": "A|B", "verity_root_hash": "<hex>", "size": 123}}
//
// Size is the target's length for root and uki targets, and the size of the
// root image it describes for a chunk index. Slot is set for UKIs only;
// VerityRootHash for root and chunk-index targets. Published (RFC 3339, UTC)
// is when the version was published: waves count from it. Unknown fields are
// ignored, so later publishers can add fields.
type Custom struct {
	OS             string    `json:"os"`
	Version        string    `json:"version"`
	Channel        string    `json:"channel"`
	MinVersion     string    `json:"min_version"`
	Waves          []Wave    `json:"waves,omitempty"`
	Published      time.Time `json:"published"`
	Kind           string    `json:"kind"`
	Slot           string    `json:"slot,omitempty"`
	VerityRootHash string    `json:"verity_root_hash,omitempty"`
	Size           int64     `json:"size"`
}

// maxWaveHours bounds a wave's start (ten years), to keep the arithmetic sane.
const maxWaveHours = 10 * 365 * 24

// maxCustomBytes bounds the custom object of one target.
const maxCustomBytes = 64 << 10

// Validate checks c's fields and their combinations.
func (c *Custom) Validate() error {
	if err := ValidOSName(c.OS); err != nil {
		return err
	}
	if err := ValidVersion(c.Version); err != nil {
		return err
	}
	if err := ValidChannel(c.Channel); err != nil {
		return err
	}
	if c.MinVersion != "" {
		if err := ValidVersion(c.MinVersion); err != nil {
			return fmt.Errorf("min_version: %w", err)
		}
	}
	if err := ValidateWaves(c.Waves); err != nil {
		return err
	}
	if c.Published.IsZero() {
		return errors.New("published time missing")
	}
	if c.Size < 0 {
		return fmt.Errorf("negative size %d", c.Size)
	}
	switch c.Kind {
	case KindUKI:
		if c.Slot != "A" && c.Slot != "B" {
			return fmt.Errorf("uki target with slot %q, want A or B", c.Slot)
		}
		if c.VerityRootHash != "" {
			return errors.New("uki target with a verity root hash")
		}
	case KindRoot, KindChunkIndex:
		if c.Slot != "" {
			return fmt.Errorf("%s target with slot %q", c.Kind, c.Slot)
		}
		if err := validHex(c.VerityRootHash); err != nil {
			return fmt.Errorf("verity_root_hash: %w", err)
		}
	default:
		return fmt.Errorf("unknown kind %q", c.Kind)
	}
	return nil
}

// File is the file name (below <os>/<version>/) a target of c's kind must have.
func (c *Custom) File() string {
	switch c.Kind {
	case KindRoot:
		return RootFile
	case KindChunkIndex:
		return ChunkIndexFile
	case KindUKI:
		return UKIFile(c.Slot)
	}
	return ""
}

func validHex(s string) error {
	if len(s) < 32 || len(s) > 128 {
		return fmt.Errorf("%d hex digits, want 32-128", len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("not lower-case hex: %q", s)
	}
	for _, r := range s {
		if r >= 'A' && r <= 'F' {
			return fmt.Errorf("not lower-case hex: %q", s)
		}
	}
	return nil
}

// ValidateWaves checks a rollout: each wave starts at a non-negative hour,
// later than the one before, and lets a larger percentage (1-100) in.
// No waves means everyone at once.
func ValidateWaves(waves []Wave) error {
	for i, w := range waves {
		if w.StartAfterHours < 0 || w.StartAfterHours > maxWaveHours {
			return fmt.Errorf("wave %d: start_after_hours %d out of range [0,%d]", i, w.StartAfterHours, maxWaveHours)
		}
		if w.Percent < 1 || w.Percent > 100 {
			return fmt.Errorf("wave %d: percent %d out of range [1,100]", i, w.Percent)
		}
		if i > 0 && (w.StartAfterHours <= waves[i-1].StartAfterHours || w.Percent <= waves[i-1].Percent) {
			return fmt.Errorf("wave %d: start and percent must both grow from wave %d", i, i-1)
		}
	}
	return nil
}

// ParseCustom reads the cairn object from a target's custom metadata. ok is
// false, with no error, when there is no "cairn" key (a target Cairn does
// not use); a cairn object that does not decode or validate is an error.
func ParseCustom(raw []byte) (c Custom, ok bool, err error) {
	if len(raw) == 0 {
		return Custom{}, false, nil
	}
	if len(raw) > maxCustomBytes {
		return Custom{}, false, fmt.Errorf("custom metadata of %d bytes, limit %d", len(raw), maxCustomBytes)
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(raw, &outer); err != nil {
		return Custom{}, false, fmt.Errorf("custom metadata: %w", err)
	}
	inner, ok := outer["cairn"]
	if !ok {
		return Custom{}, false, nil
	}
	dec := json.NewDecoder(bytes.NewReader(inner))
	if err := dec.Decode(&c); err != nil {
		return Custom{}, false, fmt.Errorf("custom metadata: cairn: %w", err)
	}
	if dec.More() {
		return Custom{}, false, errors.New("custom metadata: cairn: trailing data")
	}
	if err := c.Validate(); err != nil {
		return Custom{}, false, fmt.Errorf("custom metadata: cairn: %w", err)
	}
	if len(c.Waves) == 0 {
		c.Waves = nil // "waves": [] is no waves, as an omitted field
	}
	return c, true, nil
}

// MarshalCustom encodes c as a target's custom object: {"cairn": c}.
func MarshalCustom(c Custom) (json.RawMessage, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.Published = c.Published.UTC()
	data, err := json.Marshal(map[string]Custom{"cairn": c})
	if err != nil {
		return nil, fmt.Errorf("encode custom metadata: %w", err)
	}
	return data, nil
}
