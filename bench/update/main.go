// Command update measures Cairn's delta downloads: how many bytes a machine
// running one version fetches to update its root image to the next, against
// the full image.
//
// With -os FILE (default os/examples/hello.yaml) it builds two versions with
// bin/cairn: FILE as is, and a copy with the version bumped by one patch
// level and one extra file of -extra KiB of pseudo-random base64 text in
// /usr/share/x ("a release that changes one service"). With -old and -new it
// compares two existing root images instead.
//
// It then indexes the new root image, writes its chunks to a scratch
// repository, plans the update with the old root image as the booted slot
// and an all-zero inactive slot, assembles the new image from the plan
// (fetching from the scratch repository) and checks it byte for byte. It
// prints a Markdown table and JSON.
//
// It also times the agent's way of writing a slot (agent.Region, 32 KiB
// writes, one fsync) against dd of the same image to the same kind of
// file, and with -qemu one update of a VM from publish to committed.
// -results DIR writes update-DATE.json and update-DATE.md.
//
//	go run ./bench/update                       (builds both versions)
//	go run ./bench/update -old a.root.erofs -new b.root.erofs
//	go run ./bench/update -qemu -results bench/results
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"cairn.dev/cairn/update/chunk"
)

// Result is what the benchmark measured.
type Result struct {
	OldImage          string  `json:"old_image"`
	NewImage          string  `json:"new_image"`
	FullBytes         int64   `json:"full_bytes"`
	FullZstdBytes     int64   `json:"full_zstd_bytes"` // all chunk blobs of the new image
	Chunks            int     `json:"chunks"`
	IndexBytes        int     `json:"index_bytes"`
	FetchChunks       int     `json:"fetch_chunks"`
	FetchBytes        int64   `json:"fetch_bytes"`      // uncompressed
	FetchZstdBytes    int64   `json:"fetch_zstd_bytes"` // on the wire
	FetchPercent      float64 `json:"fetch_percent"`    // fetch_zstd_bytes+index_bytes / full_bytes
	FetchPercentRaw   float64 `json:"fetch_percent_uncompressed"`
	PlanMillis        int64   `json:"plan_ms"`
	AssembleMillis    int64   `json:"assemble_ms"`
	AssembleRefetched int     `json:"assemble_refetched"`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/update:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("update", flag.ContinueOnError)
	osFile := fs.String("os", "os/examples/hello.yaml", "OS file to build the two versions from")
	cairn := fs.String("cairn", "bin/cairn", "cairn binary")
	out := fs.String("out", "", "build directory (default: a temporary directory)")
	extraKiB := fs.Int("extra", 300, "KiB of random data in the extra file of the second version")
	oldImg := fs.String("old", "", "old root image (skip the builds)")
	newImg := fs.String("new", "", "new root image (skip the builds)")
	writeRuns := fs.Int("write-runs", 5, "runs of the slot write against dd (0: skip)")
	qemuRun := fs.Bool("qemu", false, "also time publish -> committed in a QEMU VM (OVMF, TCG; minutes)")
	resultsDir := fs.String("results", "", "also write update-DATE.json and .md to this `directory` (bench/results)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp("", "bench-update-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if (*oldImg == "") != (*newImg == "") {
		return errors.New("give both -old and -new, or neither")
	}
	if *oldImg == "" {
		dir := *out
		if dir == "" {
			dir = scratch
		}
		*oldImg, *newImg, err = buildVersions(ctx, *cairn, *osFile, dir, *extraKiB)
		if err != nil {
			return err
		}
	}
	res, err := measure(ctx, *oldImg, *newImg, scratch)
	if err != nil {
		return err
	}
	all := Results{Delta: res}
	if *writeRuns > 0 {
		if all.Write, err = measureWrite(ctx, *newImg, scratch, *writeRuns); err != nil {
			return fmt.Errorf("slot write: %w", err)
		}
	}
	if *qemuRun {
		qdir := filepath.Join(scratch, "qemu")
		if err := os.MkdirAll(qdir, 0o755); err != nil {
			return err
		}
		if all.QEMU, err = measureQEMU(ctx, *cairn, qdir); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	md := all.markdown()
	fmt.Print(md)
	data, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	fmt.Println(string(data))
	if *resultsDir != "" {
		base := filepath.Join(*resultsDir, "update-"+time.Now().UTC().Format("2006-01-02"))
		if err := os.WriteFile(base+".json", append(data, '\n'), 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Results are all the measurements of one run.
type Results struct {
	Delta *Result      `json:"delta"`
	Write *WriteResult `json:"slot_write,omitempty"`
	QEMU  *QEMUResult  `json:"qemu,omitempty"`
}

func (r Results) markdown() string {
	var b strings.Builder
	res := r.Delta
	fmt.Fprintf(&b, "## Delta download\n\n")
	fmt.Fprintf(&b, "| old | new | full | chunks | index | fetched chunks | fetched (zstd) | fetched / full |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d (%d raw) | %.2f %% (%.2f %% raw) |\n\n",
		filepath.Base(res.OldImage), filepath.Base(res.NewImage), res.FullBytes, res.Chunks, res.IndexBytes,
		res.FetchChunks, res.FetchZstdBytes, res.FetchBytes, res.FetchPercent, res.FetchPercentRaw)
	if w := r.Write; w != nil {
		fmt.Fprintf(&b, "## Slot write (host, median of %d, write + fsync)\n\n", w.Runs)
		fmt.Fprintf(&b, "| bytes | agent (32 KiB WriteAt + fsync) | dd bs=1M conv=fsync | agent / dd |\n")
		fmt.Fprintf(&b, "|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %d | %d ms (%.0f MiB/s) | %d ms (%.0f MiB/s) | %.2f |\n\n",
			w.Bytes, w.AgentMillis, w.AgentMiBps, w.DDMillis, w.DDMiBps, w.Ratio)
	}
	if q := r.QEMU; q != nil {
		fmt.Fprintf(&b, "## Publish to committed (QEMU TCG, OVMF, checks every %s)\n\n", q.CheckInterval)
		fmt.Fprintf(&b, "| downloading | rebooting | v2 READY | committed |\n|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %.1f s | %.1f s | %.1f s | %.1f s |\n\n",
			float64(q.PublishToDownload)/1000, float64(q.PublishToRebooting)/1000, float64(q.PublishToReady)/1000, float64(q.PublishToCommitted)/1000)
		if q.Delta != "" {
			fmt.Fprintf(&b, "Agent: %s\n\n", q.Delta)
		}
	}
	return b.String()
}

var versionRe = regexp.MustCompile(`(?m)^version:\s*(\d+)\.(\d+)\.(\d+)\s*$`)

// buildVersions builds osFile and a changed copy; it returns both root images.
func buildVersions(ctx context.Context, cairn, osFile, dir string, extraKiB int) (string, string, error) {
	src, err := os.ReadFile(osFile)
	if err != nil {
		return "", "", err
	}
	m := versionRe.FindSubmatch(src)
	if m == nil {
		return "", "", fmt.Errorf("%s: no version: X.Y.Z line", osFile)
	}
	var major, minor, patch int
	fmt.Sscanf(string(m[1])+" "+string(m[2])+" "+string(m[3]), "%d %d %d", &major, &minor, &patch)
	v2 := versionRe.ReplaceAll(src, fmt.Appendf(nil, "version: %d.%d.%d", major, minor, patch+1))
	if !bytes.Contains(v2, []byte("\nfiles:\n")) {
		v2 = append(v2, "files:\n"...)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, extraKiB<<10)
	for i := range raw {
		raw[i] = byte(rnd.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	var b strings.Builder
	b.WriteString("  - path: /usr/share/x\n    content: |\n")
	for len(enc) > 0 {
		n := min(76, len(enc))
		b.WriteString("      " + enc[:n] + "\n")
		enc = enc[n:]
	}
	v2 = append(v2, b.String()...)
	v2File := filepath.Join(dir, "v2.yaml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(v2File, v2, 0o644); err != nil {
		return "", "", err
	}
	name := strings.TrimSuffix(filepath.Base(osFile), filepath.Ext(osFile))
	for _, bld := range []struct{ file, out string }{{osFile, "v1"}, {v2File, "v2"}} {
		cmd := exec.CommandContext(ctx, cairn, "build", "-o", filepath.Join(dir, bld.out), bld.file)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("build %s: %w", bld.file, err)
		}
	}
	// The OS file's name: field names the artifacts; both builds share it.
	nm := regexp.MustCompile(`(?m)^name:\s*(\S+)`).FindSubmatch(src)
	if nm != nil {
		name = string(nm[1])
	}
	return filepath.Join(dir, "v1", name+".root.erofs"), filepath.Join(dir, "v2", name+".root.erofs"), nil
}

func measure(ctx context.Context, oldPath, newPath, scratch string) (*Result, error) {
	nf, err := os.Open(newPath)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	idx, err := chunk.BuildIndex(nf)
	if err != nil {
		return nil, err
	}
	idxData, err := idx.Marshal()
	if err != nil {
		return nil, err
	}
	chunksDir := filepath.Join(scratch, "chunks")
	ws, err := chunk.WriteChunks(ctx, newPath, idx, chunksDir)
	if err != nil {
		return nil, err
	}
	of, err := os.Open(oldPath)
	if err != nil {
		return nil, err
	}
	defer of.Close()
	ofi, err := of.Stat()
	if err != nil {
		return nil, err
	}
	booted := io.NewSectionReader(of, 0, ofi.Size())
	inactive := io.NewSectionReader(zeroReader{}, 0, idx.Size)

	t0 := time.Now()
	d, err := chunk.Plan(ctx, idx, booted, inactive)
	if err != nil {
		return nil, err
	}
	planDur := time.Since(t0)

	var wire int64
	dirFetch := chunk.DirFetcher(chunksDir)
	fetch := func(ctx context.Context, sum string) (io.ReadCloser, error) {
		rc, err := dirFetch(ctx, sum)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		wire += int64(len(data))
		return io.NopCloser(bytes.NewReader(data)), err
	}
	outPath := filepath.Join(scratch, "assembled")
	w, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	t0 = time.Now()
	ast, err := chunk.Assemble(ctx, idx, d, fetch, w)
	if err != nil {
		return nil, err
	}
	asmDur := time.Since(t0)
	got, err := os.ReadFile(outPath)
	if err != nil {
		return nil, err
	}
	want, err := os.ReadFile(newPath)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(got, want) {
		return nil, errors.New("assembled image differs from the new image")
	}
	return &Result{
		OldImage: oldPath, NewImage: newPath, FullBytes: idx.Size, FullZstdBytes: ws.CompressedBytes,
		Chunks: len(idx.Chunks), IndexBytes: len(idxData), FetchChunks: len(d.Fetch),
		FetchBytes: d.FetchBytes, FetchZstdBytes: wire,
		FetchPercent:      100 * float64(wire+int64(len(idxData))) / float64(idx.Size),
		FetchPercentRaw:   100 * float64(d.FetchBytes) / float64(idx.Size),
		PlanMillis:        planDur.Milliseconds(),
		AssembleMillis:    asmDur.Milliseconds(),
		AssembleRefetched: ast.Refetched,
	}, nil
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}
