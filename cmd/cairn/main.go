// Command cairn builds Cairn OS images and boots them under QEMU.
//
//	cairn build [-o DIR] FILE      build FILE into DIR/<name>.img and DIR/<name>.manifest.json
//	cairn validate FILE...         check OS files and print every problem
//	cairn run [flags] IMAGE        boot an image under QEMU (see cairn run -h)
//	cairn keys init DIR            create update signing keys
//	cairn publish [flags] MANIFEST add a version to an update repository
//	cairn serve --repo DIR         serve a repository, FleetLock and reports
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: cairn <command> [arguments]

commands:
  build     build an OS file into a bootable disk image
  validate  check OS files and print every problem with its line
  run       boot an image under QEMU with the serial console on stdout
  keys      create or rotate the signing keys of an update repository
  publish   add a built version to a static, signed (TUF) update repository
  serve     serve an update repository with fleet reboot leases (FleetLock)

Run 'cairn <command> -h' for the flags of a command.
`

// errUsage marks an error already explained to the user by a flag set.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:])
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "cairn:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "build":
		return buildCmd(ctx, args[1:])
	case "validate":
		return validateCmd(args[1:])
	case "run":
		return runCmd(ctx, args[1:])
	case "keys":
		return keysCmd(ctx, args[1:])
	case "publish":
		return publishCmd(ctx, args[1:])
	case "serve":
		return serveCmd(ctx, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "cairn: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}
