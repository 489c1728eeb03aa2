//go:build linux

// Package verity activates a read-only dm-verity target through the
// device-mapper ioctls (github.com/containerd/go-dmverity/pkg/dm), without
// udev: the /dev/dm-N node comes from devtmpfs.
package verity

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/go-dmverity/pkg/dm"
	"golang.org/x/sys/unix"
)

// BlockSize is the data and hash block size Cairn images use.
const BlockSize = 4096

// Params describe a verity device whose hash tree follows the data on the
// same block device.
type Params struct {
	Device     string // e.g. /dev/vda2
	DataBlocks uint64 // 4096-byte data blocks; the tree starts at DataBlocks*4096
	RootHash   string // hex
	Salt       string // hex, "" for none
}

// Table returns the dm target parameters (the text after "verity" in a
// dmsetup table).
func (p Params) Table() (string, error) {
	root, err := hex.DecodeString(p.RootHash)
	if err != nil || len(root) == 0 {
		return "", fmt.Errorf("verity: bad root hash %q", p.RootHash)
	}
	salt, err := hex.DecodeString(p.Salt)
	if err != nil {
		return "", fmt.Errorf("verity: bad salt %q", p.Salt)
	}
	if p.DataBlocks == 0 || p.DataBlocks > 1<<40 {
		return "", fmt.Errorf("verity: bad data block count %d", p.DataBlocks)
	}
	s, err := dm.BuildTargetParams(dm.OpenArgs{
		Version: 1, DataDevice: p.Device, HashDevice: p.Device,
		DataBlockSize: BlockSize, HashBlockSize: BlockSize, DataBlocks: p.DataBlocks,
		HashName: "sha256", RootDigest: root, Salt: salt, HashStartBytes: p.DataBlocks * BlockSize,
		// A corrupted block restarts the machine instead of failing one
		// read: a tampered root never keeps running, and boot counting
		// falls back to the other slot.
		Flags: []string{"restart_on_corruption"},
	})
	if err != nil {
		return "", fmt.Errorf("verity: %w", err)
	}
	return s, nil
}

// Activate creates the read-only dm device name for p and returns its
// /dev/dm-N path once devtmpfs has created the node.
func Activate(ctx context.Context, name string, p Params) (string, error) {
	table, err := p.Table()
	if err != nil {
		return "", err
	}
	c, err := dm.Open()
	if err != nil {
		return "", fmt.Errorf("verity: open /dev/mapper/control: %w", err)
	}
	defer c.Close()
	dev, err := c.CreateDevice(name)
	if err != nil {
		return "", fmt.Errorf("verity: %w", err)
	}
	fail := func(err error) (string, error) {
		_ = c.RemoveDevice(name)
		return "", fmt.Errorf("verity: %w", err)
	}
	if err := c.LoadTable(name, []dm.Target{{SectorStart: 0, Length: p.DataBlocks * (BlockSize / 512), Type: "verity", Params: table}}); err != nil {
		return fail(err)
	}
	if err := c.SuspendDevice(name, false); err != nil { // resume = activate the table
		return fail(err)
	}
	node := fmt.Sprintf("/dev/dm-%d", unix.Minor(dev))
	if err := WaitNode(ctx, node, unix.Major(dev), unix.Minor(dev), 2*time.Second); err != nil {
		return fail(err)
	}
	// Cross-check through sysfs that dm-N is our device.
	if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(node), "dm/name")); err == nil && strings.TrimSpace(string(b)) != name {
		return "", fmt.Errorf("verity: %s is %q, not %q", node, strings.TrimSpace(string(b)), name)
	}
	return node, nil
}

// WaitNode polls until path is a block device with the given numbers.
func WaitNode(ctx context.Context, path string, major, minor uint32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
			unix.Major(st.Rdev) == major && unix.Minor(st.Rdev) == minor {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s (%d:%d): %w", path, major, minor, ctx.Err())
		case <-t.C:
		}
	}
}
