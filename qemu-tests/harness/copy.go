package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// SparseCopy copies the file src to dst (created or truncated, mode 0600)
// keeping holes: data ranges are found with SEEK_DATA/SEEK_HOLE and copied
// (copy_file_range where the kernel supports it); on file systems without
// SEEK_DATA, all-zero 1 MiB blocks are skipped instead. A 2.5 GiB Cairn image
// holding ~100 MiB of data copies in well under a second.
func SparseCopy(dst, src string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("sparse copy: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("sparse copy: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("sparse copy: %s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("sparse copy: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("sparse copy: %w", cerr)
		}
	}()
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("sparse copy: %w", err)
	}
	err = copyExtents(out, in, size)
	if errors.Is(err, errNoSeekData) {
		err = copySkippingZeros(out, in, size)
	}
	if err != nil {
		return fmt.Errorf("sparse copy %s to %s: %w", src, dst, err)
	}
	return nil
}

var errNoSeekData = errors.New("SEEK_DATA not supported")

func copyExtents(out, in *os.File, size int64) error {
	fd := int(in.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			if off == 0 {
				return errNoSeekData
			}
			return fmt.Errorf("seek data: %w", err)
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, size)
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return fmt.Errorf("seek: %w", err)
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return fmt.Errorf("seek: %w", err)
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return fmt.Errorf("copy %d..%d: %w", data, hole, err)
		}
		off = hole
	}
	return nil
}

func copySkippingZeros(out, in *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < size; {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	}
	return nil
}
