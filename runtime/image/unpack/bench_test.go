package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"testing"

	"cairn.dev/cairn/internal/testhost"
)

// BenchmarkUnpack unpacks a 64 MiB layer of 2048 files of 32 KiB in 64
// directories (uncompressed tar, so it measures the unpacker, not gzip).
func BenchmarkUnpack(b *testing.B) {
	testhost.Root(b)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := bytes.Repeat([]byte("cairn!"), 32<<10/6)
	for d := 0; d < 64; d++ {
		_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", d), Typeflag: tar.TypeDir, Mode: 0o755})
		for f := 0; f < 32; f++ {
			_ = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/f%d", d, f), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
			_, _ = tw.Write(body)
		}
	}
	_ = tw.Close()
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		if _, err := Unpack(context.Background(), bytes.NewReader(data), dir, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
