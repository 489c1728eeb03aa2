package provision

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config drive labels. A vfat label holds at most 11 characters, so a vfat
// drive is labelled CAIRNCONFIG; an iso9660 drive CAIRN-CONFIG. A GPT
// partition named CAIRN-CONFIG counts too, whatever its file system label.
const (
	DriveLabel     = "CAIRN-CONFIG"
	DriveLabelVFAT = "CAIRNCONFIG"
	// DriveFile is the config's name in the drive's root directory.
	DriveFile = "config.yaml"
)

// FS types the label probe recognises.
const (
	FAT12   = "fat12"
	FAT16   = "fat16"
	FAT32   = "fat32"
	ISO9660 = "iso9660"
)

// Probe reads the file system type and label of a block device or image:
// a FAT boot sector (the root directory's volume-label entry wins over the
// boot sector's, as blkid does) or an iso9660 primary volume descriptor.
// It returns "" for anything else; err is only set for read errors.
func Probe(r io.ReaderAt) (fsType, label string, err error) {
	if t, l, ok, err := probeISO(r); err != nil || ok {
		return t, l, err
	}
	return probeFAT(r)
}

// readAt reads len(b) bytes at off; a short read at the end of the device
// counts as "not there" (io.EOF).
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return err
}

// probeISO checks the primary volume descriptor at 32768 (sector 16).
func probeISO(r io.ReaderAt) (string, string, bool, error) {
	pvd := make([]byte, 2048)
	if err := readAt(r, pvd, 16*2048); err != nil {
		if errors.Is(err, io.EOF) {
			return "", "", false, nil
		}
		return "", "", false, fmt.Errorf("read at byte offset %d: %w", 16*2048, err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" || pvd[6] != 1 {
		return "", "", false, nil
	}
	return ISO9660, cleanLabel(pvd[40:72]), true, nil
}

func cleanLabel(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimRight(string(b), " ")
	if s == "NO NAME" {
		return ""
	}
	return s
}

// maxRootScan bounds how much of a FAT root directory is read for its
// volume-label entry.
const maxRootScan = 64 << 10

// probeFAT parses the BIOS parameter block the way the FAT specification
// determines the FAT type (by the count of clusters).
func probeFAT(r io.ReaderAt) (string, string, error) {
	bs := make([]byte, 512)
	if err := readAt(r, bs, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return "", "", nil
		}
		return "", "", fmt.Errorf("read at byte offset 0: %w", err)
	}
	if (bs[0] != 0xEB && bs[0] != 0xE9) || bs[510] != 0x55 || bs[511] != 0xAA {
		return "", "", nil
	}
	le16 := func(o int) uint64 { return uint64(binary.LittleEndian.Uint16(bs[o:])) }
	le32 := func(o int) uint64 { return uint64(binary.LittleEndian.Uint32(bs[o:])) }
	bps, spc, rsvd, nfats, rootEnt := le16(11), uint64(bs[13]), le16(14), uint64(bs[16]), le16(17)
	tot, fatsz := le16(19), le16(22)
	if tot == 0 {
		tot = le32(32)
	}
	if fatsz == 0 {
		fatsz = le32(36)
	}
	pow2 := func(v uint64) bool { return v != 0 && v&(v-1) == 0 }
	if bps < 512 || bps > 4096 || !pow2(bps) || !pow2(spc) || spc > 128 || rsvd == 0 || nfats == 0 || tot == 0 || fatsz == 0 {
		return "", "", nil
	}
	rootSecs := (rootEnt*32 + bps - 1) / bps
	meta := rsvd + nfats*fatsz + rootSecs
	if meta >= tot {
		return "", "", nil
	}
	clusters := (tot - meta) / spc
	var typ string
	switch {
	case clusters < 4085:
		typ = FAT12
	case clusters < 65525:
		typ = FAT16
	default:
		typ = FAT32
	}
	if (typ == FAT32) != (rootEnt == 0) {
		return "", "", nil
	}
	label := ""
	var rootOff, rootLen uint64
	if typ == FAT32 {
		if bs[66] == 0x29 {
			label = cleanLabel(bs[71:82])
		}
		rootClus := le32(44)
		if rootClus < 2 || rootClus-2 >= clusters {
			return typ, label, nil
		}
		rootOff = (rsvd + nfats*fatsz + (rootClus-2)*spc) * bps
		rootLen = spc * bps
	} else {
		if bs[38] == 0x29 {
			label = cleanLabel(bs[43:54])
		}
		rootOff = (rsvd + nfats*fatsz) * bps
		rootLen = rootEnt * 32
	}
	rootLen = min(rootLen, maxRootScan)
	dir := make([]byte, rootLen)
	if err := readAt(r, dir, int64(rootOff)); err != nil {
		if errors.Is(err, io.EOF) {
			return typ, label, nil
		}
		return "", "", fmt.Errorf("read at byte offset %d: %w", rootOff, err)
	}
	for i := 0; i+32 <= len(dir); i += 32 {
		e := dir[i : i+32]
		if e[0] == 0 {
			break
		}
		attr := e[11]
		if e[0] == 0xE5 || attr&0x0F == 0x0F || attr&0x18 != 0x08 {
			continue // deleted, long-name part, or not a volume label
		}
		if l := cleanLabel(e[0:11]); l != "" {
			label = l
		}
		break
	}
	return typ, label, nil
}

// isConfigLabel reports whether a file system label or GPT partition name
// marks a config drive.
func isConfigLabel(label, partName string) bool {
	return strings.EqualFold(label, DriveLabel) || strings.EqualFold(label, DriveLabelVFAT) || partName == DriveLabel
}

// skipDevice names block devices never scanned for a config drive.
func skipDevice(name string) bool {
	for _, p := range []string{"ram", "zram", "loop", "dm-", "md", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// fromDrive scans sys/class/block for a config drive and reads its
// config.yaml in user space (no mount: the drive's file system is outside
// input, and neither isofs nor a loop device is needed).
func fromDrive(ctx context.Context, o *Options) (*Found, error) {
	ents, err := os.ReadDir(filepath.Join(o.Sys, "class", "block"))
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("config drive: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if skipDevice(name) {
			continue
		}
		f, err := probeDevice(ctx, o, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f != nil {
			return f, nil
		}
	}
	return nil, errors.Join(errs...)
}

// uevent reads a sysfs uevent file into a map.
func uevent(path string) map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func probeDevice(ctx context.Context, o *Options, name string) (*Found, error) {
	sysDir := filepath.Join(o.Sys, "class", "block", name)
	if b, err := os.ReadFile(filepath.Join(sysDir, "size")); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n == 0 {
			return nil, nil // no medium
		}
	}
	ue := uevent(filepath.Join(sysDir, "uevent"))
	devName := ue["DEVNAME"]
	if devName == "" || strings.Contains(devName, "..") {
		devName = name
	}
	dev := filepath.Join(o.Dev, devName)
	f, err := os.Open(dev)
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, nil
		}
		return nil, fmt.Errorf("config drive %s: %w", dev, err)
	}
	defer f.Close()
	typ, label, err := Probe(f)
	if err != nil {
		return nil, fmt.Errorf("config drive %s: %w", dev, err)
	}
	if typ == "" || !isConfigLabel(label, ue["PARTNAME"]) {
		return nil, nil
	}
	src := Source{Kind: "drive", Name: fmt.Sprintf("config drive %s (%s %q) %s", dev, typ, label, DriveFile)}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	b, err := readDriveFileBounded(ctx, f, size, typ)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return &Found{Source: src, Data: b}, nil
}

// driveReadTimeout bounds the read of config.yaml from a drive.
const driveReadTimeout = 10 * time.Second

// readDriveFileBounded runs ReadDriveFile with a time limit: the file system
// is outside input, and a hostile one must not hold up the boot. A read that
// times out is abandoned (its goroutine ends when the read does).
func readDriveFileBounded(ctx context.Context, f io.ReaderAt, size int64, typ string) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := ReadDriveFile(f, size, typ)
		ch <- result{b, err}
	}()
	t := time.NewTimer(driveReadTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-t.C:
		return nil, fmt.Errorf("reading %s took longer than %v; skipped", DriveFile, driveReadTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ReadDriveFile reads config.yaml from the root directory of a FAT12/16/32
// or iso9660 file system of size bytes in r, with the bounded readers of
// fsread.go (a malformed or hostile file system yields an error, never
// unbounded work).
func ReadDriveFile(r io.ReaderAt, size int64, typ string) ([]byte, error) {
	d := device{r: r, size: size}
	switch typ {
	case FAT12, FAT16, FAT32:
		return readFATFile(d, typ)
	case ISO9660:
		return readISOFile(d)
	}
	return nil, fmt.Errorf("unsupported file system %q", typ)
}
