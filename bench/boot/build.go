package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"cairn.dev/cairn/bench/internal/figures"

	"cairn.dev/cairn/images/manifest"
)

// BuildStats is what -os measures about building the image.
type BuildStats struct {
	OSFile          string    `json:"os_file"`
	Image           string    `json:"image"`
	BuildSeconds    []float64 `json:"warm_build_seconds"`
	MedianSeconds   float64   `json:"warm_build_median_seconds"`
	ImageBytes      int64     `json:"image_bytes"`
	ImageZstdBytes  int64     `json:"image_zstd_bytes"`
	RootBytes       int64     `json:"root_bytes"`
	UKIBytes        int64     `json:"uki_bytes"`
	ZstdLevelNote   string    `json:"zstd_level"`
	CompressSeconds float64   `json:"compress_seconds"`
}

// measureBuild builds osFile once to warm the cache, then n more times,
// timing each, and measures the result's sizes.
func measureBuild(ctx context.Context, cairn, osFile, out string, n int, log io.Writer) (*BuildStats, error) {
	bs := &BuildStats{OSFile: osFile, ZstdLevelNote: "zstd default level (3), like `zstd -3`"}
	for i := 0; i <= n; i++ {
		start := time.Now()
		cmd := exec.CommandContext(ctx, cairn, "build", "-o", out, osFile)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s build: %w\n%s", cairn, err, b)
		}
		if i > 0 { // the first build warms the package cache
			d := time.Since(start).Seconds()
			bs.BuildSeconds = append(bs.BuildSeconds, d)
			fmt.Fprintf(log, "build %d: %.2f s\n", i, d)
		}
	}
	if len(bs.BuildSeconds) > 0 {
		s := slices.Clone(bs.BuildSeconds)
		slices.Sort(s)
		bs.MedianSeconds = s[len(s)/2]
	}
	ms, err := filepath.Glob(filepath.Join(out, "*.manifest.json"))
	if err != nil || len(ms) == 0 {
		return nil, fmt.Errorf("no manifest in %s", out)
	}
	m, err := manifest.Read(ms[0])
	if err != nil {
		return nil, err
	}
	for _, a := range m.Artifacts {
		switch a.Kind {
		case "disk":
			bs.Image, bs.ImageBytes = filepath.Join(out, a.Name), a.Size
		case "root":
			bs.RootBytes = a.Size
		case "uki":
			bs.UKIBytes = a.Size
		}
	}
	start := time.Now()
	if bs.ImageZstdBytes, err = figures.ZstdSize(bs.Image); err != nil {
		return nil, err
	}
	bs.CompressSeconds = time.Since(start).Seconds()
	return bs, nil
}

func writeBuildMarkdown(w io.Writer, bs *BuildStats) {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "Build of `%s` (warm cache, %d builds): median %.2f s (target ≤ 10 s).\n\n", bs.OSFile, len(bs.BuildSeconds), bs.MedianSeconds)
	fmt.Fprintln(w, "| artifact | size |")
	fmt.Fprintln(w, "|---|---|")
	fmt.Fprintf(w, "| disk image (raw, sparse) | %.1f MiB |\n", mib(bs.ImageBytes))
	fmt.Fprintf(w, "| disk image, zstd -3 | %.1f MiB (target ≤ 40 MB) |\n", mib(bs.ImageZstdBytes))
	fmt.Fprintf(w, "| root file system (erofs + verity) | %.1f MiB |\n", mib(bs.RootBytes))
	fmt.Fprintf(w, "| UKI per slot | %.1f MiB |\n\n", mib(bs.UKIBytes))
}
