package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"cairn.dev/cairn/update/chunk"
)

// installFixture: slot A runs 1.0 (blessed UKI on the ESP), slot B holds
// 0.9 with a UKI marked bad, and 2.0 is to be installed into slot B.
type installFixture struct {
	d                 *testDisk
	v0, v1, v2        rootImage
	idx               *chunk.Index
	chunks            string
	ukiPath           string
	bootedUKI, v2UKI  []byte
	fetched, fullRead atomic.Int64
}

const bootedName = "cairn-1.0.efi"

func newInstallFixture(t *testing.T) *installFixture {
	t.Helper()
	f := &installFixture{d: newTestDisk(t, 4<<20)}
	salt := []byte("cairn verity salt")
	base := randomData(1, 2<<20)
	f.v1 = mkRoot(t, base, salt)
	// 2.0 changes a few places, as a release that changes one service.
	next := append([]byte(nil), base...)
	copy(next[300<<10:], randomData(2, 40<<10))
	copy(next[1500<<10:], randomData(3, 10<<10))
	f.v2 = mkRoot(t, next, salt)
	f.v0 = mkRoot(t, randomData(4, 1<<20), salt)

	f.d.writeSlot(t, "A", f.v1.data)
	f.d.writeSlot(t, "B", f.v0.data)
	f.bootedUKI = mkUKI(ukiParams{"1.0", "A", uuidA, f.v1.rootHash, f.v1.salt, f.v1.blocks})
	f.write(t, bootedName, f.bootedUKI)
	f.write(t, "cairn-0.9+0-3.efi", mkUKI(ukiParams{"0.9", "B", uuidB, f.v0.rootHash, f.v0.salt, f.v0.blocks}))

	f.v2UKI = mkUKI(ukiParams{"2.0", "B", uuidB, f.v2.rootHash, f.v2.salt, f.v2.blocks})
	f.ukiPath = filepath.Join(t.TempDir(), "uki-B.efi")
	if err := os.WriteFile(f.ukiPath, f.v2UKI, 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.idx, err = chunk.BuildIndex(bytes.NewReader(f.v2.data)); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.erofs")
	if err := os.WriteFile(img, f.v2.data, 0o644); err != nil {
		t.Fatal(err)
	}
	f.chunks = t.TempDir()
	if _, err := chunk.WriteChunks(context.Background(), img, f.idx, f.chunks); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *installFixture) write(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.d.ukiDir(), name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *installFixture) target() Target {
	dir := chunk.DirFetcher(f.chunks)
	return Target{
		Version: "2.0", Slot: f.d.slots["B"], Booted: f.d.slots["A"], ESP: f.d.esp,
		VerityRootHash: f.v2.rootHash, RootLength: int64(len(f.v2.data)), Index: f.idx,
		FetchChunk: func(ctx context.Context, sum string) (io.ReadCloser, error) {
			rc, err := dir(ctx, sum)
			if err == nil {
				f.fetched.Add(1)
			}
			return rc, err
		},
		DownloadRoot: func(ctx context.Context, w io.Writer) error {
			f.fullRead.Add(1)
			_, err := w.Write(f.v2.data)
			return err
		},
		UKIPath: f.ukiPath,
	}
}

// checkInvariants is what must hold after a power cut at any point: the
// booted UKI is untouched, and every UKI that boots slot B finds a root
// there that dm-verity accepts.
func (f *installFixture) checkInvariants(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(f.d.ukiDir(), bootedName))
	if err != nil || !bytes.Equal(got, f.bootedUKI) {
		t.Fatalf("booted UKI changed or gone (%v)", err)
	}
	ents, _, err := scanESP(f.d.ukiDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.err != nil {
			t.Fatalf("%s unreadable: %v", e.name, e.err)
		}
		if !bootsSlot(e.info, f.d.slots["B"]) {
			continue
		}
		c := e.info.Cmdline
		salt, root := mustHex(t, c.VeritySalt), mustHex(t, c.VerityRootHash)
		if err := VerifyVerity(context.Background(), f.d.slots["B"].Dev, c.VerityBlocks, salt, root); err != nil {
			t.Fatalf("%s boots slot B, whose root is incomplete: %v", e.name, err)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hexDecode(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *installFixture) checkInstalled(t *testing.T) {
	t.Helper()
	f.checkInvariants(t)
	if got := f.d.slotBytes(t, "B", len(f.v2.data)); !bytes.Equal(got, f.v2.data) {
		t.Fatal("slot B does not hold 2.0")
	}
	got, err := os.ReadFile(filepath.Join(f.d.ukiDir(), "cairn-2.0+3.efi"))
	if err != nil || !bytes.Equal(got, f.v2UKI) {
		t.Fatalf("new UKI missing or different (%v)", err)
	}
	if files := f.d.espFiles(t); !slices.Equal(files, []string{bootedName, "cairn-2.0+3.efi"}) {
		t.Fatalf("ESP holds %v", files)
	}
}

func TestInstallDelta(t *testing.T) {
	f := newInstallFixture(t)
	f.write(t, ".cairn-1.5.tmp", []byte("left over"))
	var lastDone, lastTotal int64
	tg := f.target()
	tg.Progress = func(done, total int64) { lastDone, lastTotal = done, total }
	if err := Install(context.Background(), tg); err != nil {
		t.Fatal(err)
	}
	f.checkInstalled(t)
	if f.fullRead.Load() != 0 {
		t.Fatal("delta fell back to the full download")
	}
	if n := f.fetched.Load(); n == 0 || n >= int64(len(f.idx.Chunks))/2 {
		t.Fatalf("fetched %d of %d chunks: the booted slot was not used", n, len(f.idx.Chunks))
	}
	if lastDone != lastTotal || lastTotal == 0 || lastTotal >= f.idx.Size/2 {
		t.Fatalf("progress %d/%d of an image of %d", lastDone, lastTotal, f.idx.Size)
	}
	// Installing again is harmless (the new UKI is replaced by itself).
	if err := Install(context.Background(), f.target()); err != nil {
		t.Fatal(err)
	}
	f.checkInstalled(t)
}

func TestInstallFull(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Target)
	}{
		{"no index", func(tg *Target) { tg.Index = nil }},
		{"chunks unavailable", func(tg *Target) {
			tg.FetchChunk = func(context.Context, string) (io.ReadCloser, error) { return nil, errors.New("404") }
		}},
		{"chunks tampered", func(tg *Target) {
			tg.FetchChunk = func(context.Context, string) (io.ReadCloser, error) {
				return io.NopCloser(strings.NewReader("not zstd")), nil
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newInstallFixture(t)
			tg := f.target()
			tt.edit(&tg)
			if err := Install(context.Background(), tg); err != nil {
				t.Fatal(err)
			}
			f.checkInstalled(t)
			if f.fullRead.Load() != 1 {
				t.Fatalf("%d full downloads", f.fullRead.Load())
			}
		})
	}
}

// failingDev fails writes once budget bytes were written: a power cut in
// the middle of the slot write.
type failingDev struct {
	Device
	budget atomic.Int64
}

var errPowerCut = errors.New("power cut")

func (d *failingDev) WriteAt(p []byte, off int64) (int, error) {
	left := d.budget.Add(-int64(len(p)))
	if left < 0 {
		n := max(0, int(left)+len(p))
		d.Device.WriteAt(p[:n], off)
		return n, errPowerCut
	}
	return d.Device.WriteAt(p, off)
}

func TestInstallPowerCut(t *testing.T) {
	steps := []Step{StepCheck, StepRemoveStale, StepWriteRoot, StepVerify, StepUKITemp, StepUKI}
	for _, s := range steps {
		t.Run("after "+string(s), func(t *testing.T) {
			t.Parallel()
			f := newInstallFixture(t)
			f.checkInvariants(t)
			tg := f.target()
			tg.hook = func(got Step) error {
				if got == s {
					return errPowerCut
				}
				return nil
			}
			err := Install(context.Background(), tg)
			var se *StepError
			if !errors.Is(err, errPowerCut) || !errors.As(err, &se) || se.Step != s {
				t.Fatalf("err %v, want a power cut at %s", err, s)
			}
			f.checkInvariants(t)
			files := f.d.espFiles(t)
			newUKI := slices.Contains(files, "cairn-2.0+3.efi")
			if newUKI != (s == StepUKI) {
				t.Fatalf("after %s the ESP holds %v", s, files)
			}
			if stale := slices.Contains(files, "cairn-0.9+0-3.efi"); stale != (s == StepCheck) {
				t.Fatalf("after %s the ESP holds %v", s, files)
			}
			// The next attempt completes.
			if err := Install(context.Background(), f.target()); err != nil {
				t.Fatal(err)
			}
			f.checkInstalled(t)
		})
	}
	// Cuts in the middle of the root write, at spread-out offsets.
	for _, frac := range []int64{0, 1, 10, 35, 60, 90, 99} {
		t.Run(fmt.Sprintf("writing root at %d%%", frac), func(t *testing.T) {
			t.Parallel()
			f := newInstallFixture(t)
			tg := f.target()
			fd := &failingDev{Device: tg.Slot.Dev}
			fd.budget.Store(int64(len(f.v2.data)) * frac / 100)
			tg.Slot = &Slot{Name: "B", PartUUID: uuidB, Dev: fd}
			err := Install(context.Background(), tg)
			var se *StepError
			if !errors.Is(err, errPowerCut) || !errors.As(err, &se) || se.Step != StepWriteRoot {
				t.Fatalf("err %v", err)
			}
			f.checkInvariants(t)
			if files := f.d.espFiles(t); !slices.Equal(files, []string{bootedName}) {
				t.Fatalf("ESP holds %v", files)
			}
			f.fetched.Store(0)
			if err := Install(context.Background(), f.target()); err != nil {
				t.Fatal(err)
			}
			f.checkInstalled(t)
		})
	}
}

func TestInstallRefuses(t *testing.T) {
	tests := []struct {
		name string
		edit func(*installFixture, *Target)
		want string
	}{
		{"uki for slot A", func(f *installFixture, tg *Target) {
			f.setUKI(tg, ukiParams{"2.0", "A", uuidB, f.v2.rootHash, f.v2.salt, f.v2.blocks})
		}, "cairn.slot"},
		{"uki boots another partition", func(f *installFixture, tg *Target) {
			f.setUKI(tg, ukiParams{"2.0", "B", uuidA, f.v2.rootHash, f.v2.salt, f.v2.blocks})
		}, "PARTUUID"},
		{"uki of another version", func(f *installFixture, tg *Target) {
			f.setUKI(tg, ukiParams{"2.1", "B", uuidB, f.v2.rootHash, f.v2.salt, f.v2.blocks})
		}, "cairn.version"},
		{"uki with another root hash", func(f *installFixture, tg *Target) {
			f.setUKI(tg, ukiParams{"2.0", "B", uuidB, f.v1.rootHash, f.v2.salt, f.v2.blocks})
		}, "signed"},
		{"uki with other block count", func(f *installFixture, tg *Target) {
			f.setUKI(tg, ukiParams{"2.0", "B", uuidB, f.v2.rootHash, f.v2.salt, f.v2.blocks + 1})
		}, "verity parameters"},
		{"not a uki", func(f *installFixture, tg *Target) {
			os.WriteFile(tg.UKIPath, []byte("MZ not really"), 0o600)
		}, "uki"},
		{"signed hash differs", func(f *installFixture, tg *Target) { tg.VerityRootHash = f.v1.rootHash }, "signed"},
		{"target is booted", func(f *installFixture, tg *Target) { tg.Booted = f.d.slots["B"] }, "booted slot"},
		{"image too large", func(f *installFixture, tg *Target) {
			tg.Slot = &Slot{Name: "B", PartUUID: uuidB, Dev: &Region{F: f.d.f, Off: 0, Len: 1 << 20}}
		}, "does not fit"},
		{"index of another size", func(f *installFixture, tg *Target) {
			idx := *f.idx
			idx.Size++
			tg.Index = &idx
		}, "chunk index"},
		{"bad version", func(f *installFixture, tg *Target) { tg.Version = "2.0+3" }, "version"},
		{"nothing to download", func(f *installFixture, tg *Target) { tg.Index, tg.DownloadRoot = nil, nil }, "neither"},
		{"same version for the booted slot", func(f *installFixture, tg *Target) {
			f.write(t, "cairn-2.0.efi", mkUKI(ukiParams{"2.0", "A", uuidA, f.v1.rootHash, f.v1.salt, f.v1.blocks}))
		}, "same version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newInstallFixture(t)
			tg := f.target()
			tt.edit(f, &tg)
			before := f.d.espFiles(t)
			err := Install(context.Background(), tg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if got := f.d.espFiles(t); !slices.Equal(got, before) {
				t.Fatalf("ESP changed: %v -> %v", before, got)
			}
			if !bytes.Equal(f.d.slotBytes(t, "B", len(f.v0.data)), f.v0.data) {
				t.Fatal("slot B was written")
			}
		})
	}
}

// A root that passes neither the chunk nor the full download checks never
// gets a UKI.
func TestInstallTamperedRoot(t *testing.T) {
	f := newInstallFixture(t)
	tg := f.target()
	tg.FetchChunk = func(context.Context, string) (io.ReadCloser, error) { return nil, errors.New("404") }
	tg.DownloadRoot = func(ctx context.Context, w io.Writer) error {
		bad := append([]byte(nil), f.v2.data...)
		bad[12345] ^= 1
		_, err := w.Write(bad) // a Download that does not verify: Install must catch it
		return err
	}
	err := Install(context.Background(), tg)
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepVerify {
		t.Fatalf("err %v, want a verify failure", err)
	}
	f.checkInvariants(t)
	if files := f.d.espFiles(t); !slices.Equal(files, []string{bootedName}) {
		t.Fatalf("ESP holds %v", files)
	}
}

func (f *installFixture) setUKI(tg *Target, p ukiParams) {
	os.WriteFile(tg.UKIPath, mkUKI(p), 0o600)
}

func TestRemoveStale(t *testing.T) {
	a, b := &Slot{Name: "A", PartUUID: uuidA}, &Slot{Name: "B", PartUUID: uuidB}
	h := strings.Repeat("cd", 32)
	uki := func(v, slot, uuid string) []byte { return mkUKI(ukiParams{v, slot, uuid, h, "", 4}) }
	tests := []struct {
		name    string
		files   map[string][]byte
		want    []string
		wantErr string
	}{
		{"nothing stale", map[string][]byte{"cairn-1.efi": uki("1", "A", uuidA)}, []string{"cairn-1.efi"}, ""},
		{"counted, blessed and bad entries of B", map[string][]byte{
			"cairn-1.efi": uki("1", "A", uuidA), "cairn-0.9.efi": uki("0.9", "B", uuidB),
			"cairn-1.5+2-1.efi": uki("1.5", "B", uuidB), "cairn-1.6+0-3.efi": uki("1.6", "B", uuidB),
		}, []string{"cairn-1.efi"}, ""},
		{"slot named by PARTUUID only", map[string][]byte{"cairn-0.9.efi": uki("0.9", "A", uuidB)}, nil, "names both"},
		{"unreadable file kept", map[string][]byte{"cairn-x.efi": []byte("junk"), "other.efi": uki("1", "B", uuidB)},
			[]string{"cairn-x.efi", "other.efi"}, ""},
		{"temporary files", map[string][]byte{".cairn-2.tmp": []byte("x"), "cairn-1.efi": uki("1", "A", uuidA)}, []string{"cairn-1.efi"}, ""},
		{"same version for A", map[string][]byte{"cairn-2.efi": uki("2", "A", uuidA)}, nil, "same version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			esp := t.TempDir()
			dir := filepath.Join(esp, "EFI", "Linux")
			os.MkdirAll(dir, 0o755)
			for n, data := range tt.files {
				os.WriteFile(filepath.Join(dir, n), data, 0o644)
			}
			err := removeStale(esp, b, a, "2")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if ents, _ := os.ReadDir(dir); len(ents) != len(tt.files) {
					t.Fatal("files removed despite the error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("left %v, want %v", got, tt.want)
			}
		})
	}
}
