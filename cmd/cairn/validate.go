package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"cairn.dev/cairn/os/schema"
)

// validateCmd checks each OS file and prints every problem, one per line as
// FILE:LINE:COLUMN: FIELD: MESSAGE. It fails if any file has a problem.
func validateCmd(args []string) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cairn validate FILE...")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	bad := 0
	for _, f := range fs.Args() {
		if _, err := schema.LoadForBuild(f); err != nil {
			bad++
			var es schema.Errors
			if errors.As(err, &es) {
				for _, e := range es {
					fmt.Fprintln(os.Stderr, e)
				}
				continue
			}
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		fmt.Printf("%s: ok\n", f)
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d files have problems", bad, fs.NArg())
	}
	return nil
}
