package deb

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	arMagic      = "!<arch>\n"
	arHeaderSize = 60
	// maxMemberSize bounds a member's declared size: the ar size field has 10
	// decimal digits, so anything above this is malformed anyway.
	maxMemberSize = 9_999_999_999
)

// ArHeader describes one member of an ar archive.
type ArHeader struct {
	Name   string // member name, without the GNU trailing "/"
	Size   int64  // size of the member's data in bytes
	Offset int64  // byte offset of the member's header in the archive
}

// ArReader reads the members of a common (System V / GNU) ar archive, the
// container format of .deb files. It supports the subset dpkg produces:
// short names, optionally terminated by "/", no symbol table or long-name
// table (those are skipped like any other member).
type ArReader struct {
	r      io.Reader
	off    int64 // bytes consumed from r
	remain int64 // unread bytes of the current member's data
	pad    int64 // padding byte after the current member (0 or 1)
	cur    *ArHeader
	err    error // sticky error
}

// NewArReader checks the global ar magic and returns a reader positioned
// before the first member.
func NewArReader(r io.Reader) (*ArReader, error) {
	var magic [len(arMagic)]byte
	n, err := io.ReadFull(r, magic[:])
	if err != nil {
		return nil, fmt.Errorf("ar: reading magic at offset 0 (got %d of %d bytes): %w", n, len(magic), noEOF(err))
	}
	if string(magic[:]) != arMagic {
		return nil, fmt.Errorf("ar: bad magic %q at offset 0 (not an ar archive)", magic[:])
	}
	return &ArReader{r: r, off: int64(len(arMagic))}, nil
}

// Next skips the rest of the current member and returns the next header.
// It returns io.EOF at a clean end of the archive.
func (a *ArReader) Next() (*ArHeader, error) {
	if a.err != nil {
		return nil, a.err
	}
	if err := a.skip(); err != nil {
		a.err = err
		return nil, err
	}
	var hdr [arHeaderSize]byte
	start := a.off
	n, err := io.ReadFull(a.r, hdr[:])
	a.off += int64(n)
	if err == io.EOF {
		a.err = io.EOF
		return nil, io.EOF
	}
	if err != nil {
		a.err = fmt.Errorf("ar: truncated member header at offset %d (got %d of %d bytes): %w", start, n, arHeaderSize, noEOF(err))
		return nil, a.err
	}
	h, err := parseArHeader(hdr[:], start)
	if err != nil {
		a.err = err
		return nil, err
	}
	a.cur = h
	a.remain = h.Size
	a.pad = h.Size % 2
	return h, nil
}

func parseArHeader(b []byte, off int64) (*ArHeader, error) {
	if string(b[58:60]) != "`\n" {
		return nil, fmt.Errorf("ar: bad member header terminator %q at offset %d", b[58:60], off+58)
	}
	name := strings.TrimRight(string(b[0:16]), " ")
	if name != "/" && name != "//" { // GNU symbol and long-name tables keep their slashes
		name = strings.TrimSuffix(name, "/")
		if strings.ContainsAny(name, "/\x00\n") {
			return nil, fmt.Errorf("ar: invalid member name %q at offset %d", name, off)
		}
	}
	if name == "" {
		return nil, fmt.Errorf("ar: empty member name at offset %d", off)
	}
	sizeField := strings.TrimRight(string(b[48:58]), " ")
	size, err := strconv.ParseInt(sizeField, 10, 64)
	if err != nil || size < 0 || size > maxMemberSize {
		return nil, fmt.Errorf("ar: member %q at offset %d: bad size field %q", name, off, b[48:58])
	}
	return &ArHeader{Name: name, Size: size, Offset: off}, nil
}

// Read reads from the current member's data. A member whose data ends before
// its declared size yields an error naming the member and offset.
func (a *ArReader) Read(p []byte) (int, error) {
	if a.cur == nil {
		return 0, errors.New("ar: Read called before Next")
	}
	if a.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.remain {
		p = p[:a.remain]
	}
	n, err := a.r.Read(p)
	a.off += int64(n)
	a.remain -= int64(n)
	if err == io.EOF && a.remain > 0 {
		err = a.truncated()
		a.err = err
	} else if err == io.EOF {
		err = nil
	}
	return n, err
}

func (a *ArReader) truncated() error {
	return fmt.Errorf("ar: member %q (header at offset %d): truncated at offset %d, %d of %d data bytes missing: %w",
		a.cur.Name, a.cur.Offset, a.off, a.remain, a.cur.Size, io.ErrUnexpectedEOF)
}

// skip discards the unread data and padding of the current member.
func (a *ArReader) skip() error {
	if a.cur == nil {
		return nil
	}
	n, err := io.CopyN(io.Discard, a.r, a.remain)
	a.off += n
	a.remain -= n
	if err != nil {
		if err == io.EOF {
			return a.truncated()
		}
		return fmt.Errorf("ar: member %q: skipping data at offset %d: %w", a.cur.Name, a.off, err)
	}
	if a.pad > 0 {
		var b [1]byte
		n, err := io.ReadFull(a.r, b[:])
		a.off += int64(n)
		// A missing final padding byte is tolerated (some writers omit it at EOF).
		if err != nil && err != io.EOF {
			return fmt.Errorf("ar: member %q: reading padding at offset %d: %w", a.cur.Name, a.off, err)
		}
		if err == nil && b[0] != '\n' {
			return fmt.Errorf("ar: member %q: bad padding byte %#x at offset %d", a.cur.Name, b[0], a.off-1)
		}
		a.pad = 0
	}
	a.cur = nil
	return nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a structure, end of
// input is always a truncation.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
