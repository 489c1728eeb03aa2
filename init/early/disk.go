//go:build linux

package early

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"cairn.dev/cairn/init/gpt"
	"cairn.dev/cairn/init/resize"
)

// diskTable is a disk with its partition table.
type diskTable struct {
	Name  string // "vda"
	Size  int64
	Table *gpt.Table
}

// notReadyError means the disk node cannot be opened yet.
type notReadyError struct{ err error }

func (e *notReadyError) Error() string { return e.err.Error() }
func (e *notReadyError) Unwrap() error { return e.err }

// skipDisk tells which /sys/block entries cannot hold the root.
func skipDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "dm-", "zram", "sr", "md", "nbd"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// readDisk reads the GPT of /dev/<name>.
func readDisk(devDir, name string) (*diskTable, error) {
	f, err := os.Open(filepath.Join(devDir, name))
	if err != nil {
		return nil, &notReadyError{err}
	}
	defer f.Close()
	size, err := resize.DiskSize(f)
	if err != nil {
		return nil, err
	}
	ss, err := resize.SectorSize(f)
	if err != nil {
		return nil, err
	}
	t, err := gpt.Read(f, ss, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &diskTable{Name: name, Size: size, Table: t}, nil
}

// findPartUUID polls the disks in sysBlock until one has a partition with
// PARTUUID uuid, or timeout. Disks are read once each (the kernel has read
// the partition table before it announces the disk).
//
// If loaded is not nil, findPartUUID scans once more as soon as it is closed
// and, if the partition is still missing then, calls missing once: the
// caller's known disk drivers are in and did not bring the root.
func findPartUUID(ctx context.Context, sysBlock, devDir string, uuid gpt.GUID, timeout time.Duration, loaded <-chan struct{}, missing func(), logf func(string, ...any)) (*diskTable, gpt.Partition, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	seen := map[string]bool{}
	afterLoad := false
	t := time.NewTicker(3 * time.Millisecond)
	defer t.Stop()
	for {
		ents, _ := os.ReadDir(sysBlock)
		for _, e := range ents {
			n := e.Name()
			if seen[n] || skipDisk(n) {
				continue
			}
			d, err := readDisk(devDir, n)
			var nr *notReadyError
			if errors.As(err, &nr) {
				continue // node not there yet, or the disk is still probing (ENXIO)
			}
			seen[n] = true
			if err != nil {
				logf("disk %s: %v", n, err)
				continue
			}
			if p, ok := d.Table.ByUUID(uuid); ok {
				return d, p, nil
			}
		}
		if afterLoad && missing != nil {
			missing()
			missing = nil
		}
		select {
		case <-ctx.Done():
			return nil, gpt.Partition{}, fmt.Errorf("no partition with PARTUUID %s after %v (disks: %v)", uuid, timeout, keys(seen))
		case <-t.C:
		case <-loaded:
			loaded, afterLoad = nil, true
		}
	}
}

func keys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}

// partitionNode returns the /dev name of partition number pno of disk,
// from sysfs (vda2, nvme0n1p2, ...).
func partitionNode(sysBlock, disk string, pno int) (string, error) {
	ents, err := os.ReadDir(filepath.Join(sysBlock, disk))
	if err != nil {
		return "", fmt.Errorf("partitions of %s: %w", disk, err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(sysBlock, disk, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n == pno {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("%s has no partition %d in sysfs", disk, pno)
}
