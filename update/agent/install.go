package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"cairn.dev/cairn/internal/atomicfile"
	"cairn.dev/cairn/update/chunk"
	"cairn.dev/cairn/update/tuf"
)

// DefaultTries is the boot counter a new UKI starts with (cairn-<v>+3.efi).
const DefaultTries = 3

// ukiDir is where systemd-boot finds type #2 entries, below the ESP.
const ukiDir = "EFI/Linux"

// Step names the stages of Install, in order.
type Step string

// Steps of Install. A crash after any of them leaves the booted version as
// the only bootable entry until StepUKI, which adds the new one atomically.
const (
	StepCheck       Step = "check"        // inputs checked, nothing written
	StepRemoveStale Step = "remove-stale" // old UKIs of the target slot removed, ESP synced
	StepWriteRoot   Step = "write-root"   // root image in the slot, synced
	StepVerify      Step = "verify"       // dm-verity tree read back and checked
	StepUKITemp     Step = "uki-temp"     // new UKI under its temporary name, synced
	StepUKI         Step = "uki"          // new UKI renamed into place, ESP synced
)

// Target is one installation into the slot that is not booted.
type Target struct {
	Version string
	// Slot is written; Booted is the running slot, read as the first
	// source of chunks (nil: none).
	Slot, Booted *Slot
	// BootedSize limits the chunk search in Booted to its image (data and
	// hash tree; VerityImageSize); 0 searches the whole partition.
	BootedSize int64
	// ESP is the directory where the ESP is mounted (/efi).
	ESP string
	// VerityRootHash and RootLength are the signed values (TUF) of the
	// root image.
	VerityRootHash string
	RootLength     int64
	// Index is the verified chunk index (nil: full download only), and
	// FetchChunk returns a chunk's blob from the repository.
	Index      *chunk.Index
	FetchChunk chunk.FetchFunc
	// DownloadRoot streams the whole root image, verified against its
	// signed length and hashes (tuf.Client.Download); used without an
	// index or when the delta fails. nil: no fallback.
	DownloadRoot func(ctx context.Context, w io.Writer) error
	// UKIPath is the verified UKI for Slot (downloaded to STATE).
	UKIPath string
	// Tries is the boot counter of the new entry (default DefaultTries).
	Tries int
	// Progress is called with the bytes downloaded so far and the bytes
	// to download.
	Progress func(done, total int64)
	// Log receives progress lines (nil: none).
	Log func(format string, args ...any)

	// hook runs after each step; an error stops Install there (tests
	// simulate a power cut with it).
	hook func(Step) error
}

// UKIName is the ESP file name of a version's new UKI: cairn-<v>+<tries>.efi.
func UKIName(version string, tries int) string {
	return fmt.Sprintf("cairn-%s+%d.efi", version, tries)
}

func (t *Target) logf(format string, args ...any) {
	if t.Log != nil {
		t.Log(format, args...)
	}
}

func (t *Target) step(s Step) error {
	if t.hook != nil {
		return t.hook(s)
	}
	return nil
}

// Install writes a version into the slot that is not booted, in the order
// that keeps the machine bootable through a power cut at any point:
//
//  1. check everything that can be checked before writing (the UKI names
//     the target slot's PARTUUID, this version and the signed verity root
//     hash; the image fits the slot);
//  2. remove every UKI on the ESP that boots the target slot, and fsync
//     the ESP directory: from here on nothing boots the slot;
//  3. write the root image into the slot (delta from both slots' chunks,
//     or a full download) and fsync it;
//  4. drop the slot's cached pages and verify the whole dm-verity tree as
//     read back against the signed root hash;
//  5. write the UKI as EFI/Linux/.cairn-<v>.tmp, fsync, check it, rename
//     it to cairn-<v>+3.efi and fsync the directory.
//
// The booted version's UKI is never touched. Install is idempotent: after a
// crash it can simply run again (chunks already in the slot are reused).
func Install(ctx context.Context, t Target) error {
	if t.Tries <= 0 {
		t.Tries = DefaultTries
	}
	fail := func(s Step, err error) error {
		return &StepError{Step: s, Version: t.Version, Err: err}
	}
	uki, err := t.check()
	if err != nil {
		return fail(StepCheck, err)
	}
	if err := t.step(StepCheck); err != nil {
		return fail(StepCheck, err)
	}
	if err := removeStale(t.ESP, t.Slot, t.Booted, t.Version); err != nil {
		return fail(StepRemoveStale, err)
	}
	if err := t.step(StepRemoveStale); err != nil {
		return fail(StepRemoveStale, err)
	}
	if err := t.writeRoot(ctx); err != nil {
		return fail(StepWriteRoot, fmt.Errorf("slot %s: %w", t.Slot.Name, err))
	}
	if err := t.step(StepWriteRoot); err != nil {
		return fail(StepWriteRoot, err)
	}
	if err := t.Slot.Dev.Uncache(); err != nil {
		t.logf("slot %s: drop cache: %v (verifying through the cache)", t.Slot.Name, err)
	}
	salt, _ := hex.DecodeString(uki.Cmdline.VeritySalt)
	root, _ := hex.DecodeString(uki.Cmdline.VerityRootHash)
	if err := VerifyVerity(ctx, t.Slot.Dev, uki.Cmdline.VerityBlocks, salt, root); err != nil {
		return fail(StepVerify, fmt.Errorf("slot %s read back: %w", t.Slot.Name, err))
	}
	t.logf("slot %s: root image written and verified", t.Slot.Name)
	if err := t.step(StepVerify); err != nil {
		return fail(StepVerify, err)
	}
	if s, err := t.writeUKI(); err != nil {
		return fail(s, err)
	}
	return nil
}

// StepError is an Install failure and the step it happened in.
type StepError struct {
	Step    Step
	Version string
	Err     error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("install %s: %s: %v", e.Version, e.Step, e.Err)
}

func (e *StepError) Unwrap() error { return e.Err }

// check validates the target before anything is written and returns the
// parsed UKI.
func (t *Target) check() (UKIInfo, error) {
	var info UKIInfo
	if err := tuf.ValidVersion(t.Version); err != nil {
		return info, err
	}
	if t.Slot == nil || t.Slot.Dev == nil {
		return info, errors.New("no target slot")
	}
	if _, err := OtherSlot(t.Slot.Name); err != nil {
		return info, err
	}
	if t.Booted != nil && (t.Booted.Name == t.Slot.Name || t.Booted.PartUUID == t.Slot.PartUUID) {
		return info, fmt.Errorf("slot %s is the booted slot", t.Slot.Name)
	}
	if t.ESP == "" {
		return info, errors.New("no ESP directory")
	}
	f, err := os.Open(t.UKIPath)
	if err != nil {
		return info, fmt.Errorf("uki: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return info, fmt.Errorf("uki: %w", err)
	}
	if info, err = ReadUKI(f, fi.Size()); err != nil {
		return info, err
	}
	c := info.Cmdline
	switch {
	case c.Slot != t.Slot.Name:
		return info, fmt.Errorf("uki: its cairn.slot is %q, the target slot is %s", c.Slot, t.Slot.Name)
	case c.RootPARTUUID != strings.ToLower(t.Slot.PartUUID):
		return info, fmt.Errorf("uki: it boots PARTUUID %s, slot %s is %s", c.RootPARTUUID, t.Slot.Name, t.Slot.PartUUID)
	case c.Version != t.Version:
		return info, fmt.Errorf("uki: its cairn.version is %q, installing %s", c.Version, t.Version)
	case c.VerityRootHash == "" || c.VerityRootHash != strings.ToLower(t.VerityRootHash):
		return info, fmt.Errorf("uki: its verity root hash %q is not the signed %q", c.VerityRootHash, t.VerityRootHash)
	case len(c.VerityRootHash) != 2*verityDigest:
		return info, fmt.Errorf("uki: verity root hash of %d hex digits, want %d", len(c.VerityRootHash), 2*verityDigest)
	case c.VerityBlocks == 0:
		return info, errors.New("uki: no cairn.verity.blocks")
	}
	if want := VerityImageSize(c.VerityBlocks); want != t.RootLength {
		return info, fmt.Errorf("root image of %d bytes, its UKI's verity parameters need %d", t.RootLength, want)
	}
	if t.RootLength > t.Slot.Dev.Size() {
		return info, fmt.Errorf("root image of %d bytes does not fit slot %s of %d bytes", t.RootLength, t.Slot.Name, t.Slot.Dev.Size())
	}
	if t.Index != nil && t.Index.Size != t.RootLength {
		return info, fmt.Errorf("chunk index describes %d bytes, root image is %d", t.Index.Size, t.RootLength)
	}
	if t.Index == nil && t.DownloadRoot == nil {
		return info, errors.New("neither a chunk index nor a full download")
	}
	return info, nil
}

// espEntry is a cairn UKI found on the ESP.
type espEntry struct {
	name string
	info UKIInfo
	err  error
}

// scanESP reads the cmdline of every cairn-*.efi in dir.
func scanESP(dir string) ([]espEntry, []string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("ESP: %w", err)
	}
	var out []espEntry
	var temps []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if strings.HasPrefix(n, ".cairn-") && strings.HasSuffix(n, ".tmp") {
			temps = append(temps, n)
			continue
		}
		if !strings.HasPrefix(n, "cairn-") || !strings.EqualFold(filepath.Ext(n), ".efi") {
			continue
		}
		ent := espEntry{name: n}
		f, err := os.Open(filepath.Join(dir, n))
		if err == nil {
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil {
				ent.info, err = ReadUKI(f, fi.Size())
			}
			f.Close()
		}
		ent.err = err
		out = append(out, ent)
	}
	return out, temps, nil
}

// bootsSlot reports whether a UKI's cmdline boots slot s.
func bootsSlot(info UKIInfo, s *Slot) bool {
	return s != nil && info.Cmdline != nil &&
		(info.Cmdline.Slot == s.Name || info.Cmdline.RootPARTUUID == strings.ToLower(s.PartUUID))
}

// removeStale removes the UKIs that boot slot (and temporary files of an
// interrupted install), then fsyncs the directory. A UKI that also names
// the booted slot, or that is for version but boots another slot, is an
// error: something is wrong with the ESP, and nothing is removed.
func removeStale(esp string, slot, booted *Slot, version string) error {
	dir := filepath.Join(esp, filepath.FromSlash(ukiDir))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	ents, temps, err := scanESP(dir)
	if err != nil {
		return err
	}
	var remove []string
	for _, e := range ents {
		if e.err != nil {
			// Unreadable: not something systemd-boot can start into our
			// slot either; leave it for a human.
			continue
		}
		if bootsSlot(e.info, slot) {
			if bootsSlot(e.info, booted) {
				return fmt.Errorf("ESP: %s names both slots (%s, PARTUUID %s)", e.name, e.info.Cmdline.Slot, e.info.Cmdline.RootPARTUUID)
			}
			remove = append(remove, e.name)
			continue
		}
		if e.info.Cmdline.Version == version {
			return fmt.Errorf("ESP: %s is version %s for slot %s: refusing to install the same version into slot %s", e.name, version, e.info.Cmdline.Slot, slot.Name)
		}
	}
	remove = append(remove, temps...)
	if len(remove) == 0 {
		return nil
	}
	for _, n := range remove {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ESP: remove stale %s: %w", n, err)
		}
	}
	return atomicfile.SyncDir(dir)
}

// writeRoot writes the image into the slot: delta first, full download as
// the fallback.
func (t *Target) writeRoot(ctx context.Context) error {
	if t.Index != nil {
		err := t.writeDelta(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || t.DownloadRoot == nil {
			return err
		}
		t.logf("delta update failed (%v); downloading the whole image", err)
	}
	w := &seqWriter{w: t.Slot.Dev, progress: t.Progress, total: t.RootLength}
	if err := t.DownloadRoot(ctx, w); err != nil {
		return fmt.Errorf("full download: %w", err)
	}
	if w.off != t.RootLength {
		return fmt.Errorf("full download: %d bytes, signed length %d", w.off, t.RootLength)
	}
	if err := t.Slot.Dev.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

func (t *Target) writeDelta(ctx context.Context) error {
	var sources []chunk.Source
	if t.Booted != nil && t.Booted.Dev != nil {
		n := t.Booted.Dev.Size()
		if t.BootedSize > 0 && t.BootedSize < n {
			n = t.BootedSize
		}
		sources = append(sources, io.NewSectionReader(t.Booted.Dev, 0, n))
	}
	sources = append(sources, io.NewSectionReader(t.Slot.Dev, 0, min(t.Index.Size, t.Slot.Dev.Size())))
	d, err := chunk.Plan(ctx, t.Index, sources...)
	if err != nil {
		return err
	}
	t.logf("delta: %d of %d bytes found locally, %d bytes in %d chunks to download",
		d.LocalBytes, t.Index.Size, d.FetchBytes, len(d.Fetch))
	sizes := make(map[string]int64, len(d.Fetch))
	for _, c := range d.Fetch {
		sizes[c.SHA256] = c.Size
	}
	var mu sync.Mutex
	var done int64
	if t.Progress != nil {
		t.Progress(0, d.FetchBytes)
	}
	fetch := func(ctx context.Context, sum string) (io.ReadCloser, error) {
		if t.FetchChunk == nil {
			return nil, errors.New("no chunk fetcher")
		}
		rc, err := t.FetchChunk(ctx, sum)
		if err == nil && t.Progress != nil {
			// Assemble fetches concurrently: report in order, one at a time.
			mu.Lock()
			done += sizes[sum]
			t.Progress(min(done, d.FetchBytes), d.FetchBytes)
			mu.Unlock()
		}
		return rc, err
	}
	st, err := chunk.Assemble(ctx, t.Index, d, fetch, t.Slot.Dev)
	if err != nil {
		return err
	}
	t.logf("delta: wrote %d bytes from local slots, %d fetched in %d chunks (%d refetched)",
		st.LocalBytes, st.FetchedBytes, st.FetchedBlobs, st.Refetched)
	// Assemble syncs a writer with a Sync method; sync again for a
	// Device that hides it behind an interface value it cannot see.
	return t.Slot.Dev.Sync()
}

// seqWriter turns a WriterAt into a sequential writer from offset 0.
type seqWriter struct {
	w        io.WriterAt
	off      int64
	total    int64
	progress func(done, total int64)
}

func (s *seqWriter) Write(p []byte) (int, error) {
	n, err := s.w.WriteAt(p, s.off)
	s.off += int64(n)
	if s.progress != nil {
		s.progress(min(s.off, s.total), s.total)
	}
	return n, err
}

// writeUKI copies the UKI to a temporary name on the ESP, syncs and checks
// it, renames it into place and syncs the directory.
func (t *Target) writeUKI() (Step, error) {
	dir := filepath.Join(t.ESP, filepath.FromSlash(ukiDir))
	tmp := filepath.Join(dir, ".cairn-"+t.Version+".tmp")
	final := filepath.Join(dir, UKIName(t.Version, t.Tries))
	src, err := os.Open(t.UKIPath)
	if err != nil {
		return StepUKITemp, fmt.Errorf("uki: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return StepUKITemp, fmt.Errorf("uki: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), src); err != nil {
		dst.Close()
		return StepUKITemp, fmt.Errorf("uki: copy to %s: %w", tmp, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return StepUKITemp, fmt.Errorf("uki: fsync %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return StepUKITemp, fmt.Errorf("uki: %w", err)
	}
	if err := t.step(StepUKITemp); err != nil {
		return StepUKITemp, err
	}
	// Read the copy back: what systemd-boot will load must be what TUF
	// verified.
	if err := sameSHA256(tmp, h.Sum(nil)); err != nil {
		return StepUKITemp, fmt.Errorf("uki: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return StepUKI, fmt.Errorf("uki: %w", err)
	}
	if err := atomicfile.SyncRenamed(final); err != nil { // vfat: SyncDir alone leaves the entry empty
		return StepUKI, fmt.Errorf("uki: %w", err)
	}
	t.logf("wrote %s", filepath.Join(ukiDir, filepath.Base(final)))
	return StepUKI, t.step(StepUKI)
}

func sameSHA256(p string, want []byte) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_ = uncache(f, 0, 0) // best effort: vfat may keep it cached anyway
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read back %s: %w", p, err)
	}
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("%s reads back with sha256 %x, wrote %x", p, got, want)
	}
	return nil
}
