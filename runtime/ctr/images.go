// Package ctr is the "cairn-init images" and "cairn-init ctr" command line:
// an image store front end and a small daemonless container manager on top
// of runtime/image, runtime/container, runtime/network and runtime/logs.
package ctr

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"cairn.dev/cairn/runtime/image"
)

// Default state locations (the guest's /var/lib/cairn).
const (
	DefaultImageRoot     = "/var/lib/cairn/images"
	DefaultContainerRoot = "/var/lib/cairn/containers"
	DefaultNetworkState  = "/var/lib/cairn/network"
	DefaultCgroupParent  = "cairn"
)

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (GNU style); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		n := len(args)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n-len(rest) > 0 && args[n-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// ImagesMain runs "images pull|ls|rm|gc|load|tag [--root DIR] ..." and
// returns the exit code.
func ImagesMain(args []string) int {
	return imagesMain(context.Background(), args, stdio{os.Stdin, os.Stdout, os.Stderr})
}

const imagesUsage = `usage: cairn-init images [--root DIR] COMMAND
  pull [--json] [--if-missing] REF
                           fetch an image (tag or digest) from its registry; --if-missing:
                           only if the store lacks it; --json: print what inspect prints
  inspect [--json] REF     print a stored image's config and layer directories (JSON)
  load PATH [--name REF]   add the images of an OCI layout directory or a docker-save archive
  ls                       list named images (name, digest, size)
  tag SRC DST              name an image
  rm REF...                remove names (content stays until gc)
  gc [--containers DIR]    remove content no name and no container needs
--root is the store (default /var/lib/cairn/images).
`

func imagesMain(ctx context.Context, args []string, io stdio) int {
	root := DefaultImageRoot
	containers := DefaultContainerRoot
	name := ""
	var jsonOut, ifMissing bool
	fs := newFlagSet("images")
	fs.BoolVar(&jsonOut, "json", false, "")
	fs.BoolVar(&ifMissing, "if-missing", false, "")
	fs.StringVar(&root, "root", root, "")
	fs.StringVar(&containers, "containers", containers, "")
	fs.StringVar(&name, "name", "", "")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) == 0 {
		if err == nil && len(pos) == 0 {
			fmt.Fprint(io.out, imagesUsage)
			return 0
		}
		fmt.Fprintf(io.err, "cairn-init images: %v\n%s", err, imagesUsage)
		return 2
	}
	if err := imagesCmd(ctx, root, containers, name, jsonOut, ifMissing, pos, io); err != nil {
		fmt.Fprintf(io.err, "cairn-init images: %v\n", err)
		return 1
	}
	return 0
}

func imagesCmd(ctx context.Context, root, containers, name string, jsonOut, ifMissing bool, pos []string, io stdio) error {
	cmd, pos := pos[0], pos[1:]
	want := map[string][2]int{"pull": {1, 1}, "inspect": {1, 1}, "load": {1, 1}, "ls": {0, 0}, "list": {0, 0}, "tag": {2, 2}, "rm": {1, 1 << 20}, "gc": {0, 0}}
	n, ok := want[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q\n%s", cmd, imagesUsage)
	}
	if len(pos) < n[0] || len(pos) > n[1] {
		return fmt.Errorf("%s: wrong number of arguments\n%s", cmd, imagesUsage)
	}
	if name != "" && cmd != "load" {
		return fmt.Errorf("%s: --name is only for load", cmd)
	}
	if jsonOut && cmd != "pull" && cmd != "inspect" {
		return fmt.Errorf("%s: --json is only for pull and inspect", cmd)
	}
	if ifMissing && cmd != "pull" {
		return fmt.Errorf("%s: --if-missing is only for pull", cmd)
	}
	st, err := image.Open(root)
	if err != nil {
		return err
	}
	switch cmd {
	case "inspect":
		info, err := imageInfo(ctx, st, pos[0])
		if err != nil {
			return err
		}
		return printJSON(io.out, info)
	case "pull":
		if jsonOut || ifMissing {
			info, err := pullInfo(ctx, st, pos[0], ifMissing)
			if err != nil {
				return err
			}
			if jsonOut {
				return printJSON(io.out, info)
			}
			fmt.Fprintf(io.out, "%s %s\n", info.Name, info.Digest)
			return nil
		}
		img, err := st.Pull(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(io.out, "%s %s\n", img.Name, img.Digest)
	case "load":
		imgs, err := load(ctx, st, pos[0])
		if err != nil {
			return err
		}
		if name != "" {
			if len(imgs) != 1 {
				return fmt.Errorf("load: --name needs exactly one image, %s has %d", pos[0], len(imgs))
			}
			if err := st.Tag(ctx, name, imgs[0].Digest); err != nil {
				return err
			}
			if imgs[0].Name, err = image.NormalizeName(name); err != nil {
				return err
			}
		}
		for _, img := range imgs {
			n := img.Name
			if n == "" {
				n = "<none>"
			}
			fmt.Fprintf(io.out, "%s %s\n", n, img.Digest)
		}
	case "ls", "list":
		imgs, err := st.List()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(io.out, 8, 1, 2, ' ', 0)
		fmt.Fprint(tw, "NAME\tDIGEST\tSIZE\n")
		for _, img := range imgs {
			size, err := imageSize(ctx, st, img.Digest)
			sz := humanSize(size)
			if err != nil {
				sz = "?"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", img.Name, img.Digest, sz)
		}
		return tw.Flush()
	case "tag":
		img, err := resolveImage(ctx, st, pos[0])
		if err != nil {
			return err
		}
		return st.Tag(ctx, pos[1], img.Digest)
	case "rm":
		for _, ref := range pos {
			if err := st.Untag(ctx, ref); err != nil {
				return err
			}
			fmt.Fprintf(io.out, "untagged %s\n", ref)
		}
	case "gc":
		inUse, err := imagesInUse(containers)
		if err != nil {
			return err
		}
		stats, err := st.GC(ctx, inUse...)
		if err != nil {
			return err
		}
		fmt.Fprintf(io.out, "removed %d blobs (%s) and %d snapshots\n", stats.Blobs, humanSize(stats.BytesRemoved), stats.Snapshots)
	}
	return nil
}

func load(ctx context.Context, st *image.Store, path string) ([]image.Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if fi.IsDir() {
		return st.LoadOCILayout(ctx, path)
	}
	return st.LoadDockerArchive(ctx, path)
}

// resolveImage finds an image by name or by manifest digest ("sha256:...").
func resolveImage(ctx context.Context, st *image.Store, ref string) (image.Image, error) {
	if strings.HasPrefix(ref, "sha256:") {
		h, err := v1.NewHash(ref)
		if err != nil {
			return image.Image{}, fmt.Errorf("image %s: %w", ref, err)
		}
		if _, err := st.Config(ctx, h); err != nil {
			return image.Image{}, err
		}
		return image.Image{Digest: h}, nil
	}
	return st.Get(ref)
}

// imageSize is the stored (compressed) size: config plus layers.
func imageSize(ctx context.Context, st *image.Store, d v1.Hash) (int64, error) {
	img, err := st.Image(ctx, d)
	if err != nil {
		return 0, err
	}
	m, err := img.Manifest()
	if err != nil {
		return 0, fmt.Errorf("image %s: %w", d, err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n), 0
	for f >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGT"[i-1])
}

// imagesInUse returns the images of the containers under root.
func imagesInUse(root string) ([]v1.Hash, error) {
	metas, err := listMetas(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]v1.Hash, 0, len(metas))
	for _, m := range metas {
		out = append(out, m.Digest)
	}
	return out, nil
}
