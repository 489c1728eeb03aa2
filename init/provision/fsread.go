package provision

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// The config drive's file system is outside input read by PID 1, so it is
// read with bounded code rather than a general file system library: FAT12/16/32
// by images/esp (ReadRootFile), iso9660 here. Only the root directory is read,
// every read lies inside the device, a directory is at most maxDirBytes and
// the file at most MaxConfigSize.

// maxDirBytes bounds the root directory read from a config drive.
const maxDirBytes = 1 << 20

// errNoConfig reports that the root directory has no config.yaml.
var errNoConfig = errors.New("open " + DriveFile + ": not found in the root directory")

// device is a bounded view of a block device or image.
type device struct {
	r    io.ReaderAt
	size int64
}

// read reads n bytes at off; both must lie inside the device.
func (d device) read(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return nil, fmt.Errorf("read of %d bytes at byte offset %d outside the device (%d bytes)", n, off, d.size)
	}
	b := make([]byte, n)
	if err := readAt(d.r, b, off); err != nil {
		return nil, fmt.Errorf("read at byte offset %d: %w", off, err)
	}
	return b, nil
}

// iso9660 constants.
const (
	isoBlock    = 2048
	isoMaxVDs   = 32 // volume descriptors examined after sector 16
	isoFlagDir  = 0x02
	isoFlagMore = 0x80 // multi-extent
)

// isoRoot is a root directory extent from a volume descriptor.
type isoRoot struct {
	lba, size int64
	joliet    bool
}

// isoRoots returns the Joliet root (if any) and then the primary root.
func isoRoots(d device) ([]isoRoot, error) {
	var primary, joliet *isoRoot
	for i := int64(0); i < isoMaxVDs; i++ {
		vd, err := d.read((16+i)*isoBlock, isoBlock)
		if err != nil {
			return nil, fmt.Errorf("volume descriptor %d: %w", i, err)
		}
		if string(vd[1:6]) != "CD001" || vd[0] == 255 {
			break
		}
		if vd[0] != 1 && vd[0] != 2 {
			continue
		}
		if bs := binary.LittleEndian.Uint16(vd[128:]); bs != isoBlock {
			return nil, fmt.Errorf("iso9660 logical block size %d, not %d (byte offset %d)", bs, isoBlock, (16+i)*isoBlock+128)
		}
		rec := vd[156:190]
		r := &isoRoot{lba: int64(binary.LittleEndian.Uint32(rec[2:])), size: int64(binary.LittleEndian.Uint32(rec[10:]))}
		switch {
		case vd[0] == 1 && primary == nil:
			primary = r
		case vd[0] == 2 && joliet == nil && vd[88] == '%' && vd[89] == '/' && (vd[90] == '@' || vd[90] == 'C' || vd[90] == 'E'):
			r.joliet = true
			joliet = r
		}
	}
	var out []isoRoot
	if joliet != nil {
		out = append(out, *joliet)
	}
	if primary != nil {
		out = append(out, *primary)
	}
	if len(out) == 0 {
		return nil, errors.New("no iso9660 primary volume descriptor")
	}
	return out, nil
}

// isoName returns a directory record's name: Joliet's UCS-2, else a Rock
// Ridge NM name if there is one, else the ISO name without its version.
func isoName(rec []byte, joliet bool) string {
	nl := int(rec[32])
	raw := rec[33 : 33+nl]
	if joliet {
		u := make([]uint16, len(raw)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(raw[2*i:])
		}
		raw = []byte(string(utf16.Decode(u)))
	} else {
		su := 33 + nl
		if nl%2 == 0 {
			su++ // padding byte
		}
		var nm []byte
		found := false
		for su+4 <= len(rec) {
			l := int(rec[su+2])
			if l < 4 || su+l > len(rec) {
				break
			}
			if string(rec[su:su+2]) == "NM" && l >= 5 && rec[su+4]&0x06 == 0 {
				nm = append(nm, rec[su+5:su+l]...)
				found = true
			}
			su += l
		}
		if found && len(nm) > 0 {
			return string(nm)
		}
	}
	n, _, _ := strings.Cut(string(raw), ";")
	return strings.TrimSuffix(n, ".")
}

// findISOFile finds DriveFile in a raw iso9660 directory: its extent.
func findISOFile(dir []byte, joliet bool) (lba, size int64, err error) {
	for i := 0; i < len(dir); {
		l := int(dir[i])
		if l == 0 { // records do not cross blocks: skip to the next one
			i = (i/isoBlock + 1) * isoBlock
			continue
		}
		if l < 34 || i+l > len(dir) || 33+int(dir[i+32]) > l {
			return 0, 0, fmt.Errorf("malformed iso9660 directory record at byte %d of the root directory", i)
		}
		rec := dir[i : i+l]
		i += l
		if rec[32] == 1 && (rec[33] == 0 || rec[33] == 1) {
			continue // "." and ".."
		}
		if !strings.EqualFold(isoName(rec, joliet), DriveFile) || rec[25]&isoFlagDir != 0 {
			continue
		}
		if rec[25]&isoFlagMore != 0 || rec[26] != 0 || rec[27] != 0 {
			return 0, 0, fmt.Errorf("%s is multi-extent or interleaved; not supported", DriveFile)
		}
		return int64(binary.LittleEndian.Uint32(rec[2:])), int64(binary.LittleEndian.Uint32(rec[10:])), nil
	}
	return 0, 0, errNoConfig
}

// readISOFile reads DriveFile from the root of an iso9660 volume (Joliet
// or Rock Ridge names when present).
func readISOFile(d device) ([]byte, error) {
	pvd, err := d.read(16*isoBlock, isoBlock)
	if err != nil {
		return nil, err
	}
	if blocks := int64(binary.LittleEndian.Uint32(pvd[80:])); blocks*isoBlock > d.size {
		return nil, fmt.Errorf("iso9660 volume of %d blocks is larger than its device (%d bytes) (byte offset %d)", blocks, d.size, 16*isoBlock+80)
	}
	roots, err := isoRoots(d)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, r := range roots {
		dir, err := d.read(r.lba*isoBlock, min(r.size, maxDirBytes))
		if err != nil {
			errs = append(errs, fmt.Errorf("root directory: %w", err))
			continue
		}
		lba, size, err := findISOFile(dir, r.joliet)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if size > MaxConfigSize {
			return nil, fmt.Errorf("%s: %d bytes, more than %d", DriveFile, size, MaxConfigSize)
		}
		b, err := d.read(lba*isoBlock, size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", DriveFile, err)
		}
		return b, nil
	}
	return nil, errors.Join(errs...)
}
