package main

import (
	"context"
	"flag"
	"fmt"

	"cairn.dev/cairn/update/repo"
)

const keysUsage = `usage:
  cairn keys init DIR
      create an ed25519 key for each TUF role (root, targets, snapshot,
      timestamp) in DIR: <role>.key (PKCS #8 PEM, mode 0600) and <role>.pub
  cairn keys rotate-root --repo DIR --old KEYS --new KEYS
      write the next root version of the repository, signed by the old and
      the new root key, trusting the keys in KEYS (made by 'keys init'; copy
      a key from the old directory to keep it)
`

// keysCmd implements `cairn keys init DIR` and `cairn keys rotate-root`.
func keysCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Print(keysUsage)
		return errUsage
	}
	switch args[0] {
	case "init":
		fs := flag.NewFlagSet("keys init", flag.ContinueOnError)
		fs.Usage = func() { fmt.Fprint(fs.Output(), keysUsage) }
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return errUsage
		}
		if err := repo.InitKeys(fs.Arg(0)); err != nil {
			return fmt.Errorf("keys init: %w", err)
		}
		fmt.Printf("created root, targets, snapshot and timestamp keys in %s\n", fs.Arg(0))
		return nil
	case "rotate-root":
		fs := flag.NewFlagSet("keys rotate-root", flag.ContinueOnError)
		fs.Usage = func() { fmt.Fprint(fs.Output(), keysUsage) }
		repoDir := fs.String("repo", "", "repository `directory`")
		oldKeys := fs.String("old", "", "the current keys `directory`")
		newKeys := fs.String("new", "", "the new keys `directory`")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 0 || *repoDir == "" || *oldKeys == "" || *newKeys == "" {
			fs.Usage()
			return errUsage
		}
		if err := repo.RotateRoot(ctx, *repoDir, *oldKeys, *newKeys, repo.Options{}); err != nil {
			return fmt.Errorf("keys rotate-root: %w", err)
		}
		fmt.Printf("%s now trusts the keys in %s\n", *repoDir, *newKeys)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Print(keysUsage)
		return nil
	}
	fmt.Print(keysUsage)
	return errUsage
}
