package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ReadWriterAt is a disk opened for reading and writing.
type ReadWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// GrowResult tells what Grow did.
type GrowResult struct {
	Grown      bool
	OldLastLBA uint64
	NewLastLBA uint64
}

// Align is the granularity (in bytes) of the new end of a grown partition.
const Align = 1 << 20

// Grow extends partition index (1-based) to the end of a disk of diskSize
// bytes, moving the backup GPT to the disk's new last LBA. The partition must
// be the last one on the disk. Everything except the partition's LastLBA,
// the headers' alternate/last-usable/entries fields, their CRCs and the
// protective MBR's size field stays byte-identical. The new backup is written
// before the primary, so a power cut leaves the old, valid primary in place.
// The table t must have been read from the primary header of the same disk.
func Grow(rw ReadWriterAt, t *Table, diskSize int64, index int) (GrowResult, error) {
	var res GrowResult
	if !t.Primary {
		return res, errors.New("gpt: grow needs a valid primary header")
	}
	ss := uint64(t.SectorSize)
	h := t.Header
	var part *Partition
	for i := range t.Partitions {
		p := &t.Partitions[i]
		if p.Index == index {
			part = p
		}
	}
	if part == nil {
		return res, fmt.Errorf("gpt: no partition %d", index)
	}
	for _, p := range t.Partitions {
		if p.Index != index && p.FirstLBA > part.FirstLBA {
			return res, fmt.Errorf("gpt: partition %d is not the last one (%d follows)", index, p.Index)
		}
	}
	res.OldLastLBA, res.NewLastLBA = part.LastLBA, part.LastLBA
	lastLBA := uint64(diskSize)/ss - 1
	esec := (uint64(h.NumEntries)*uint64(h.EntrySize) + ss - 1) / ss
	if lastLBA < esec+2 {
		return res, fmt.Errorf("gpt: disk of %d bytes too small", diskSize)
	}
	backupEntries := lastLBA - esec
	lastUsable := backupEntries - 1
	if lastUsable < h.LastUsableLBA {
		return res, fmt.Errorf("gpt: disk shrank: last usable %d < %d", lastUsable, h.LastUsableLBA)
	}
	newEnd := ((lastUsable+1)*ss/Align*Align)/ss - 1
	if newEnd <= part.LastLBA || newEnd > lastUsable {
		// Nothing to gain (already at the end, maybe except < Align).
		return res, nil
	}
	entries := bytes.Clone(t.rawEntries)
	off := (index - 1) * int(h.EntrySize)
	binary.LittleEndian.PutUint64(entries[off+40:], newEnd)
	ecrc := crc32.ChecksumIEEE(entries)

	primary := bytes.Clone(t.rawHeader)
	le := binary.LittleEndian
	le.PutUint64(primary[32:], lastLBA)
	le.PutUint64(primary[48:], lastUsable)
	le.PutUint32(primary[88:], ecrc)
	setHeaderCRC(primary, h.HeaderSize)

	backup := bytes.Clone(primary)
	le.PutUint64(backup[24:], lastLBA)
	le.PutUint64(backup[32:], 1)
	le.PutUint64(backup[72:], backupEntries)
	setHeaderCRC(backup, h.HeaderSize)

	writes := []struct {
		lba  uint64
		data []byte
		what string
	}{
		{backupEntries, entries, "backup entries"},
		{lastLBA, backup, "backup header"},
		{h.EntriesLBA, entries, "primary entries"},
		{1, primary, "primary header"},
	}
	for _, w := range writes {
		if _, err := rw.WriteAt(w.data, int64(w.lba*ss)); err != nil {
			return res, fmt.Errorf("gpt: write %s: %w", w.what, err)
		}
	}
	if err := fixPMBR(rw, lastLBA); err != nil {
		return res, err
	}
	part.LastLBA = newEnd
	t.Header.AlternateLBA = lastLBA
	t.Header.LastUsableLBA = lastUsable
	t.Header.EntriesCRC = ecrc
	t.rawEntries = entries
	t.rawHeader = primary
	res.Grown, res.NewLastLBA = true, newEnd
	return res, nil
}

func setHeaderCRC(hdr []byte, size uint32) {
	clear(hdr[16:20])
	binary.LittleEndian.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:size]))
}

// fixPMBR updates the size of a protective MBR's 0xEE entry so that it covers
// the grown disk (capped at 0xFFFFFFFF), as the UEFI spec requires.
func fixPMBR(rw ReadWriterAt, lastLBA uint64) error {
	mbr := make([]byte, 512)
	if _, err := rw.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("gpt: read MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil
	}
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		if e[4] != 0xee || binary.LittleEndian.Uint32(e[8:]) != 1 {
			continue
		}
		size := uint32(0xffffffff)
		if lastLBA < 0xffffffff {
			size = uint32(lastLBA)
		}
		if binary.LittleEndian.Uint32(e[12:]) == size {
			return nil
		}
		binary.LittleEndian.PutUint32(e[12:], size)
		if _, err := rw.WriteAt(e, int64(446+16*i)); err != nil {
			return fmt.Errorf("gpt: write MBR: %w", err)
		}
		return nil
	}
	return nil
}
