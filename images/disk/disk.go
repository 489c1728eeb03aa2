// Package disk assembles Cairn's GPT disk image (host side).
//
// The layout is fixed (see the constants): ESP, ROOT-A, ROOT-B, STATE, each
// 1 MiB aligned. Partition GUIDs and the disk GUID are derived from the OS
// name and the partition label, so every image of the same OS has the same
// PARTUUIDs. The image is a sparse file; Build writes only the GPT, the ESP
// contents, the ROOT-A payload and the STATE file system metadata.
package disk

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/google/uuid"

	"cairn.dev/cairn/images/esp"
)

// Sizes and alignment of the layout.
const (
	SectorSize = 512
	Align      = 1 << 20   // partition start/size alignment
	ESPSize    = 256 << 20 // ESP (FAT32)
	RootSize   = 1 << 30   // each of ROOT-A and ROOT-B
	StateSize  = 256 << 20 // STATE (ext4), grown at first boot
)

// Partition type GUIDs (Discoverable Partitions Specification).
const (
	TypeESP       = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	TypeRootX8664 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
	TypeVar       = "4D21B016-B534-45C2-A9FB-5C16E091FD2D"
)

// Partition labels (GPT partition names).
const (
	LabelESP   = "ESP"
	LabelRootA = "ROOT-A"
	LabelRootB = "ROOT-B"
	LabelState = "STATE"
)

// namespace for the derived UUIDs (a random constant, fixed forever).
const namespace = "5c1b2f43-0d6e-4c8a-9e57-cf0a1d2b3c4d"

// Partition is one GPT entry of the layout.
type Partition struct {
	Number   int    // 1-based GPT index (/dev/vdaN)
	Label    string // GPT partition name
	Type     string // type GUID, upper case
	PartUUID string // partition GUID, lower case (as in PARTUUID= and /dev/disk/by-partuuid)
	Offset   int64  // byte offset in the image
	Size     int64  // bytes
}

// Layout is the partitioning of a Cairn disk image.
type Layout struct {
	DiskGUID   string // lower case
	Size       int64  // image size in bytes
	Partitions []Partition
}

// Partition returns the partition with the given label.
func (l Layout) Partition(label string) (Partition, bool) {
	for _, p := range l.Partitions {
		if p.Label == label {
			return p, true
		}
	}
	return Partition{}, false
}

// DeriveUUID returns the deterministic UUID for (osName, name): a
// name-based UUID (RFC 9562 version 8) over SHA-256 of osName NUL name.
func DeriveUUID(osName, name string) string {
	ns := uuid.MustParse(namespace)
	return uuid.NewHash(sha256.New(), ns, []byte(osName+"\x00"+name), 8).String()
}

// NewLayout returns the layout of the disk image of the OS named osName.
func NewLayout(osName string) Layout {
	l := Layout{DiskGUID: DeriveUUID(osName, "disk")}
	off := int64(Align)
	for i, p := range []struct {
		label, typ string
		size       int64
	}{
		{LabelESP, TypeESP, ESPSize},
		{LabelRootA, TypeRootX8664, RootSize},
		{LabelRootB, TypeRootX8664, RootSize},
		{LabelState, TypeVar, StateSize},
	} {
		l.Partitions = append(l.Partitions, Partition{
			Number: i + 1, Label: p.label, Type: p.typ,
			PartUUID: DeriveUUID(osName, p.label),
			Offset:   off, Size: p.size,
		})
		off += p.size
	}
	// Room for the backup GPT (33 sectors), keeping the size aligned.
	l.Size = off + Align
	return l
}

// Options configure Build.
type Options struct {
	OSName   string     // e.g. "cairn-demo"; determines all GUIDs
	ESPFiles []esp.File // ESP contents
	RootA    string     // path of the ROOT-A payload (erofs + verity tree), at most RootSize bytes
	MTime    time.Time  // timestamps on the ESP and STATE
}

// Build writes the disk image to path (created or truncated) and returns
// its layout. ROOT-B is left zero (sparse).
func Build(ctx context.Context, path string, o Options) (l Layout, err error) {
	if o.OSName == "" {
		return Layout{}, errors.New("disk: empty OS name")
	}
	l = NewLayout(o.OSName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("disk: close %s: %w", path, cerr)
		}
	}()
	if err := f.Truncate(l.Size); err != nil {
		return Layout{}, fmt.Errorf("disk: size %s: %w", path, err)
	}
	// GPT first: go-diskfs fsyncs after each table write, which is cheap
	// while the file holds nothing else.
	if err := writeGPT(f, l); err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	p, _ := l.Partition(LabelESP)
	if err := esp.Build(io.NewOffsetWriter(f, p.Offset), p.Size, o.ESPFiles, o.MTime); err != nil {
		return Layout{}, fmt.Errorf("disk: ESP: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	if o.RootA != "" {
		p, _ = l.Partition(LabelRootA)
		if err := copyInto(f, p, o.RootA); err != nil {
			return Layout{}, fmt.Errorf("disk: ROOT-A: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	p, _ = l.Partition(LabelState)
	if err := makeState(f, p.Offset, p.Size, o.OSName, o.MTime); err != nil {
		return Layout{}, fmt.Errorf("disk: STATE: %w", err)
	}
	return l, nil
}

func writeGPT(f *os.File, l Layout) error {
	t := &gpt.Table{
		LogicalSectorSize:  SectorSize,
		PhysicalSectorSize: SectorSize,
		ProtectiveMBR:      true,
		GUID:               l.DiskGUID,
	}
	for _, p := range l.Partitions {
		start := uint64(p.Offset / SectorSize)
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: p.Number,
			Start: start,
			End:   start + uint64(p.Size/SectorSize) - 1,
			Size:  uint64(p.Size),
			Type:  gpt.Type(p.Type),
			Name:  p.Label,
			GUID:  p.PartUUID,
		})
	}
	w, err := file.New(f, false).Writable()
	if err != nil {
		return fmt.Errorf("GPT: %w", err)
	}
	if err := t.Write(w, l.Size); err != nil {
		return fmt.Errorf("GPT: %w", err)
	}
	return nil
}

// copyInto copies the file at src to partition p of f (copy_file_range
// where the kernel supports it, which keeps holes cheap).
func copyInto(f *os.File, p Partition, src string) error {
	s, err := os.Open(src)
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.Stat()
	if err != nil {
		return err
	}
	if st.Size() > p.Size {
		return fmt.Errorf("%s is %d bytes, larger than the %d-byte partition", src, st.Size(), p.Size)
	}
	if _, err := f.Seek(p.Offset, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(f, s)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if n != st.Size() {
		return fmt.Errorf("copy %s: copied %d of %d bytes", src, n, st.Size())
	}
	return nil
}

// ReadLayout reads the GPT of an image (or disk) and returns its layout.
// Labels, types and GUIDs come from the table, not from the constants.
func ReadLayout(path string) (Layout, error) {
	f, err := os.Open(path)
	if err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Layout{}, fmt.Errorf("disk: %w", err)
	}
	t, err := gpt.Read(file.New(f, true), SectorSize, SectorSize)
	if err != nil {
		return Layout{}, fmt.Errorf("disk: read GPT of %s: %w", path, err)
	}
	l := Layout{DiskGUID: strings.ToLower(t.GUID), Size: st.Size()}
	for _, p := range t.Partitions {
		if p.Type == gpt.Unused {
			continue
		}
		l.Partitions = append(l.Partitions, Partition{
			Number:   p.Index,
			Label:    p.Name,
			Type:     strings.ToUpper(string(p.Type)),
			PartUUID: strings.ToLower(p.GUID),
			Offset:   int64(p.Start) * SectorSize,
			Size:     int64(p.End-p.Start+1) * SectorSize,
		})
	}
	return l, nil
}
