// Package debtest builds synthetic .deb files and kernel-module ELF files
// for tests of the buildroot packages.
package debtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Member is one ar member.
type Member struct {
	Name string
	Data []byte
}

// Ar returns an ar archive of the members, in dpkg's format.
func Ar(members ...Member) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.Name, 0, 0, 0, "100644", len(m.Data))
		b.Write(m.Data)
		if len(m.Data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Entry is one tar entry; Body is the content of regular files.
type Entry struct {
	tar.Header
	Body []byte
}

// File, Dir, Symlink and Hardlink build common entries.
func File(name, body string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, Body: []byte(body)}
}

// Dir is a directory entry.
func Dir(name string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// Symlink is a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// Hardlink is a hard link entry.
func Hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

// Tar returns a tar stream of the entries. Size is taken from the header
// as given, so tests can write lying headers via the raw result.
func Tar(tb testing.TB, entries ...Entry) []byte {
	tb.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.Header
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatGNU
		}
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatalf("debtest: tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			tb.Fatalf("debtest: tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatalf("debtest: tar: %v", err)
	}
	return b.Bytes()
}

// Compress compresses data for a member suffix: "", ".gz", ".xz" or ".zst".
func Compress(tb testing.TB, suffix string, data []byte) []byte {
	tb.Helper()
	var b bytes.Buffer
	switch suffix {
	case "":
		return data
	case ".gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case ".xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			tb.Fatalf("debtest: %s: %v", suffix, err)
		}
		w.Write(data)
		w.Close()
	case ".zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			tb.Fatalf("debtest: %s: %v", suffix, err)
		}
		w.Write(data)
		w.Close()
	default:
		tb.Fatalf("debtest: unknown compression %q", suffix)
	}
	return b.Bytes()
}

// Deb returns a .deb whose data.tar<suffix> holds the entries.
func Deb(tb testing.TB, suffix string, entries ...Entry) []byte {
	tb.Helper()
	return Ar(
		Member{"debian-binary", []byte("2.0\n")},
		Member{"control.tar.xz", Compress(tb, ".xz", Tar(tb, File("./control", "Package: test\n")))},
		Member{"data.tar" + suffix, Compress(tb, suffix, Tar(tb, entries...))},
	)
}

// ModuleELF returns a minimal ELF64 relocatable object with a .modinfo
// section holding the given "key=value" strings (NUL-separated), which is
// all a depmod needs from a kernel module.
func ModuleELF(modinfo ...string) []byte {
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(info)
	shOff := (strOff + len(shstr) + 7) &^ 7
	out := make([]byte, shOff+3*shentsize)
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = 2, 1, 1 // 64-bit, little endian, version 1
	le := binary.LittleEndian
	le.PutUint16(out[16:], 1)  // ET_REL
	le.PutUint16(out[18:], 62) // EM_X86_64
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[40:], uint64(shOff))
	le.PutUint16(out[52:], ehsize)
	le.PutUint16(out[58:], shentsize)
	le.PutUint16(out[60:], 3) // shnum
	le.PutUint16(out[62:], 2) // shstrndx
	copy(out[infoOff:], info)
	copy(out[strOff:], shstr)
	sh := func(i int, name, typ uint32, off, size int) {
		s := out[shOff+i*shentsize:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
	}
	sh(1, 1, 1, infoOff, len(info))  // .modinfo, SHT_PROGBITS
	sh(2, 10, 3, strOff, len(shstr)) // .shstrtab, SHT_STRTAB
	return out
}
