package disk

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// seekData returns the offset of the first data at or after off, or -1 if
// only a hole follows.
func seekData(f *os.File, off int64) (int64, error) {
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return -1, nil
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return off, nil // no hole support: everything is data
	}
	return n, err
}

// seekHole returns the offset of the first hole at or after off (the file
// size if there is none).
func seekHole(f *os.File, off int64) (int64, error) {
	n, err := unix.Seek(int(f.Fd()), off, unix.SEEK_HOLE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		st, serr := f.Stat()
		if serr != nil {
			return 0, serr
		}
		return st.Size(), nil
	}
	return n, err
}
