package deb

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"cairn.dev/cairn/buildroot/internal/debtest"
)

func readAllMembers(r io.Reader) (map[string]string, error) {
	ar, err := NewArReader(r)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for {
		h, err := ar.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(ar)
		if err != nil {
			return out, err
		}
		out[h.Name] = string(b)
	}
}

func TestArReader(t *testing.T) {
	valid := debtest.Ar(debtest.Member{Name: "debian-binary", Data: []byte("2.0\n")}, debtest.Member{Name: "odd/", Data: []byte("abc")}, debtest.Member{Name: "last", Data: []byte("xy")})
	hdr2 := 8 + 60 + 4 // offset of the second header
	oddLast := debtest.Ar(debtest.Member{Name: "a", Data: []byte("xyz")})
	oddLast = oddLast[:len(oddLast)-1] // drop the final padding byte
	tests := []struct {
		name    string
		in      []byte
		want    map[string]string
		wantErr string // substring; "" means success
	}{
		{"valid", valid, map[string]string{"debian-binary": "2.0\n", "odd": "abc", "last": "xy"}, ""},
		{"empty archive", []byte("!<arch>\n"), map[string]string{}, ""},
		{"missing final padding tolerated", oddLast, map[string]string{"a": "xyz"}, ""},
		{"bad magic", []byte("!<arch>X"), nil, "bad magic"},
		{"short magic", []byte("!<ar"), nil, "reading magic at offset 0"},
		{"truncated header", valid[:hdr2+30], nil, "truncated member header at offset 72"},
		{"truncated data", valid[:hdr2+60+1], nil, `member "odd" (header at offset 72): truncated at offset 133, 2 of 3 data bytes missing`},
		{"bad size", corrupt(valid, hdr2+48, "12x       "), nil, `member "odd" at offset 72: bad size field`},
		{"negative size", corrupt(valid, hdr2+48, "-1        "), nil, "bad size field"},
		{"bad terminator", corrupt(valid, hdr2+58, "!!"), nil, "bad member header terminator"},
		{"bad padding", corrupt(valid, hdr2+60+3, "X"), nil, `member "odd": bad padding byte 0x58 at offset 135`},
		{"slash in name", corrupt(valid, hdr2, "a/b/            "), nil, `invalid member name "a/b"`},
		{"empty name", corrupt(valid, hdr2, "                "), nil, "empty member name at offset 72"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAllMembers(bytes.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("member %q = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestArTruncationIsUnexpectedEOF(t *testing.T) {
	valid := debtest.Ar(debtest.Member{Name: "a", Data: bytes.Repeat([]byte("z"), 100)})
	for n := 9; n < len(valid); n++ {
		_, err := readAllMembers(bytes.NewReader(valid[:n]))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: err = %v, want ErrUnexpectedEOF", n, err)
		}
	}
}

func corrupt(b []byte, off int, s string) []byte {
	c := bytes.Clone(b)
	copy(c[off:], s)
	return c
}

func FuzzArReader(f *testing.F) {
	f.Add(debtest.Ar(debtest.Member{Name: "debian-binary", Data: []byte("2.0\n")}, debtest.Member{Name: "x", Data: []byte("abc")}))
	f.Add([]byte("!<arch>\n"))
	f.Add([]byte("!<arch>\nfoo             0           0     0     100644  99999999999`\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ar, err := NewArReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		total := 0
		for {
			h, err := ar.Next()
			if err != nil {
				return
			}
			if h.Size < 0 || h.Offset < 0 || h.Offset >= int64(len(b)) {
				t.Fatalf("bad header %+v for %d-byte input", h, len(b))
			}
			n, _ := io.Copy(io.Discard, ar)
			total += int(n)
			if n > h.Size || total > len(b) {
				t.Fatalf("read %d bytes of a %d-byte member from %d-byte input", n, h.Size, len(b))
			}
		}
	})
}
