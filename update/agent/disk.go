package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"cairn.dev/cairn/init/gpt"
)

// Device is a ROOT slot as the agent writes it: a partition, or a region
// of a file standing in for one in tests.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Size() int64
	// Sync makes what was written durable.
	Sync() error
	// Uncache drops cached pages of the device, so that reads after it come
	// from the medium (best effort).
	Uncache() error
}

// Region is the byte range [Off, Off+Len) of a file or block device.
type Region struct {
	F        *os.File
	Off, Len int64
}

// Size returns the length of the region.
func (r *Region) Size() int64 { return r.Len }

// ReadAt reads within the region; reading past its end returns io.EOF.
func (r *Region) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= r.Len {
		return 0, io.EOF
	}
	short := false
	if int64(len(p)) > r.Len-off {
		p, short = p[:r.Len-off], true
	}
	n, err := r.F.ReadAt(p, r.Off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// WriteAt writes within the region and refuses to write past its end.
func (r *Region) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > r.Len || int64(len(p)) > r.Len-off {
		return 0, fmt.Errorf("write of %d bytes at %d outside the slot of %d bytes", len(p), off, r.Len)
	}
	return r.F.WriteAt(p, r.Off+off)
}

// Sync fsyncs the file.
func (r *Region) Sync() error { return r.F.Sync() }

// Uncache drops the region's clean cached pages.
func (r *Region) Uncache() error { return uncache(r.F, r.Off, r.Len) }

// Slot is one ROOT partition.
type Slot struct {
	Name     string // "A" or "B"
	PartUUID string // lower-case, as in cairn.root=PARTUUID=
	Dev      Device
}

// OtherSlot returns the slot that is not name.
func OtherSlot(name string) (string, error) {
	switch name {
	case "A":
		return "B", nil
	case "B":
		return "A", nil
	}
	return "", fmt.Errorf("slot %q is not A or B", name)
}

// rootTypeX86 is the Discoverable Partitions root (x86-64) type.
const rootTypeX86 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"

// SlotsFromGPT finds ROOT-A and ROOT-B (by GPT name and root partition
// type) in the disk f of size bytes with the given sector size, and
// returns them as regions of f.
func SlotsFromGPT(f *os.File, size int64, sectorSize int) (map[string]*Slot, error) {
	t, err := gpt.Read(f, sectorSize, size)
	if err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	typ, err := gpt.ParseGUID(rootTypeX86)
	if err != nil {
		return nil, err
	}
	out := map[string]*Slot{}
	for _, p := range t.Partitions {
		name, ok := strings.CutPrefix(p.Name, "ROOT-")
		if !ok || (name != "A" && name != "B") || p.Type != typ {
			continue
		}
		if out[name] != nil {
			return nil, fmt.Errorf("slots: two partitions named ROOT-%s", name)
		}
		if p.LastLBA < p.FirstLBA {
			return nil, fmt.Errorf("slots: ROOT-%s ends before it starts", name)
		}
		ss := int64(sectorSize)
		off, n := int64(p.FirstLBA)*ss, int64(p.LastLBA-p.FirstLBA+1)*ss
		if off < 0 || n <= 0 || off+n > size {
			return nil, fmt.Errorf("slots: ROOT-%s outside the disk", name)
		}
		out[name] = &Slot{Name: name, PartUUID: p.UUID.String(), Dev: &Region{F: f, Off: off, Len: n}}
	}
	if out["A"] == nil || out["B"] == nil {
		return nil, errors.New("slots: the disk has no ROOT-A and ROOT-B partitions")
	}
	return out, nil
}
