package provision

import (
	"bytes"
	"context"
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

	"cairn.dev/cairn/images/esp"
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

// probeFAT probes a FAT boot sector with images/esp's reader.
func probeFAT(r io.ReaderAt) (string, string, error) {
	t, label, err := esp.Probe(r)
	if err != nil {
		return "", "", err
	}
	return fatTypes[t], label, nil
}

// fatTypes names esp's FAT types ("" for none).
var fatTypes = map[int]string{esp.FAT12: FAT12, esp.FAT16: FAT16, esp.FAT32: FAT32}

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
// images/esp and fsread.go (a malformed or hostile file system yields an error, never
// unbounded work).
func ReadDriveFile(r io.ReaderAt, size int64, typ string) ([]byte, error) {
	switch typ {
	case FAT12, FAT16, FAT32:
		b, err := esp.ReadRootFile(r, 0, size, DriveFile, MaxConfigSize, maxDirBytes)
		if esp.IsNotExist(err) {
			return nil, errNoConfig
		}
		return b, err
	case ISO9660:
		return readISOFile(device{r: r, size: size})
	}
	return nil, fmt.Errorf("unsupported file system %q", typ)
}
