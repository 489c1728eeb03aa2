package figures

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestSpread(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		med, lo, hi float64
		ok          bool
	}{
		{nil, 0, 0, 0, false},
		{[]float64{7}, 7, 7, 7, true},
		{[]float64{5, 1, 3}, 3, 1, 5, true},
		{[]float64{5, 1, 3, 2}, 2.5, 1, 5, true},
	} {
		med, lo, hi, ok := Spread(tc.in)
		if med != tc.med || lo != tc.lo || hi != tc.hi || ok != tc.ok {
			t.Errorf("Spread(%v) = %v %v %v %v, want %v %v %v %v", tc.in, med, lo, hi, ok, tc.med, tc.lo, tc.hi, tc.ok)
		}
	}
	in := []float64{3, 1, 2}
	Spread(in)
	if in[0] != 3 {
		t.Error("Spread sorted its argument in place")
	}
}

func TestZstdSize(t *testing.T) {
	data := bytes.Repeat([]byte("cairn "), 100000)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := ZstdSize(p)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if want := int64(len(enc.EncodeAll(data, nil))); n <= 0 || n >= int64(len(data))/10 || n > want+64 || n < want-64 {
		t.Errorf("ZstdSize = %d, want about %d (of %d raw)", n, want, len(data))
	}
	if _, err := ZstdSize(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
