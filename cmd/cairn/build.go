package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"cairn.dev/cairn/images/build"
	"cairn.dev/cairn/os/schema"
)

// buildCmd implements `cairn build [-o DIR] FILE`.
func buildCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	out := fs.String("o", "out", "output `directory`")
	initBin := fs.String("init", "", "the PID 1 build of cairn-init (/sbin/init), a static `binary` (default: cairn-init-pid1 next to this program, or $CAIRN_INIT)")
	earlyBin := fs.String("early", "", "the early-stage build of cairn-init (/init in the initramfs), a static `binary` (default: cairn-init-early next to this program)")
	toolsBin := fs.String("tools", "", "the full build of cairn-init, a static `binary` installed as /usr/bin/cairn-init (default: cairn-init next to this program; \"none\" leaves it out)")
	cache := fs.String("cache", "", "cache `directory` for Debian packages and pulled images (default: $XDG_CACHE_HOME/cairn)")
	lock := fs.String("lock", "", "Debian package lock `file` (default: the one built into cairn)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cairn build [flags] FILE\n\nBuilds FILE into DIR/<name>.img and DIR/<name>.manifest.json.\nSOURCE_DATE_EPOCH sets every timestamp in the image (default 0).\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	o, err := schema.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	bin, err := findBinary(*initBin, os.Getenv("CAIRN_INIT"), "cairn-init-pid1")
	if err != nil {
		return err
	}
	early, err := findBinary(*earlyBin, "", "cairn-init-early")
	if err != nil {
		return err
	}
	tools := ""
	if *toolsBin != "none" {
		if tools, err = findBinary(*toolsBin, "", "cairn-init"); err != nil {
			return err
		}
	}
	start := time.Now()
	res, err := build.Build(ctx, o, build.Options{
		OutDir: *out, InitBinary: bin, EarlyBinary: early, ToolsBinary: tools, CacheDir: *cache, LockFile: *lock,
		SourceDateEpoch: epoch,
		Log:             func(format string, args ...any) { fmt.Fprintf(os.Stderr, "cairn: "+format+"\n", args...) },
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", fs.Arg(0), err)
	}
	fmt.Printf("built %s (%s %s, kernel %s) in %.1fs\n  image:    %s\n  manifest: %s\n",
		o.Name, o.Name, o.Version, res.Manifest.Kernel, time.Since(start).Seconds(), res.Image, res.Path)
	return nil
}

func sourceDateEpoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a non-negative number of seconds", s)
	}
	return v, nil
}

// findBinary locates a guest binary: the flag, the environment value, or
// name in the directory of this executable (where `make build` puts them).
func findBinary(flagValue, envValue, name string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if envValue != "" {
		return envValue, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", name, err)
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s not found next to %s; build it with `make build`", name, exe)
		}
		return "", fmt.Errorf("locate %s: %w", name, err)
	}
	return p, nil
}
