//go:build linux

// Package resize grows the STATE partition and its ext4 file system online:
// the GPT is rewritten (init/gpt), the kernel is told the new partition size
// with BLKPG_RESIZE_PARTITION, and ext4 is grown with EXT4_IOC_RESIZE_FS.
package resize

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ext4IocResizeFS is _IOW('f', 16, __u64).
const ext4IocResizeFS = 0x40086610

// DiskSize returns the size in bytes of a block device.
func DiskSize(f *os.File) (int64, error) {
	var size uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
		return 0, fmt.Errorf("resize: BLKGETSIZE64 %s: %w", f.Name(), e)
	}
	return int64(size), nil
}

// SectorSize returns the logical sector size of a block device.
func SectorSize(f *os.File) (int, error) {
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, fmt.Errorf("resize: BLKSSZGET %s: %w", f.Name(), err)
	}
	return n, nil
}

// KernelPartition tells the kernel that partition pno of disk now starts at
// start and is length bytes long.
func KernelPartition(disk *os.File, pno int, start, length int64) error {
	p := unix.BlkpgPartition{Start: start, Length: length, Pno: int32(pno)}
	a := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(p)),
		Data:    (*byte)(unsafe.Pointer(&p)),
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, disk.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&a))); e != 0 {
		return fmt.Errorf("resize: BLKPG_RESIZE_PARTITION %s part %d: %w", disk.Name(), pno, e)
	}
	return nil
}

// Ext4 grows the ext4 file system mounted at mountpoint to fill sizeBytes
// and returns the old and new block counts. It does nothing if the file
// system already has that many blocks.
func Ext4(mountpoint string, sizeBytes int64) (oldBlocks, newBlocks uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return 0, 0, fmt.Errorf("resize: statfs %s: %w", mountpoint, err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		return 0, 0, fmt.Errorf("resize: %s is not ext4 (magic %#x)", mountpoint, st.Type)
	}
	if st.Bsize <= 0 {
		return 0, 0, fmt.Errorf("resize: %s: block size %d", mountpoint, st.Bsize)
	}
	// f_blocks excludes the file system overhead, so compare against the
	// block count from sysfs-free arithmetic: the kernel ignores a request
	// that does not grow the file system.
	newBlocks = uint64(sizeBytes) / uint64(st.Bsize)
	oldBlocks = st.Blocks
	d, err := os.Open(mountpoint)
	if err != nil {
		return 0, 0, fmt.Errorf("resize: %w", err)
	}
	defer d.Close()
	n := newBlocks
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, d.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&n))); e != 0 {
		return oldBlocks, newBlocks, fmt.Errorf("resize: EXT4_IOC_RESIZE_FS %s to %d blocks: %w", mountpoint, newBlocks, e)
	}
	return oldBlocks, newBlocks, nil
}
