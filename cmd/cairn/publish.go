package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sort"

	"cairn.dev/cairn/update/repo"
)

// publishCmd implements `cairn publish [flags] MANIFEST`,
// `cairn publish --resign --repo DIR --keys DIR` and
// `cairn publish --init --repo DIR --keys DIR`.
func publishCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	repoDir := fs.String("repo", "", "update repository `directory` (created on first publish)")
	keys := fs.String("keys", "", "keys `directory` made by 'cairn keys init'")
	channel := fs.String("channel", "stable", "`channel` to publish to")
	minVersion := fs.String("min-version", "", "oldest `version` allowed to update to this one (default: any)")
	waves := fs.String("waves", "", "staged rollout, such as \"0h:10%,24h:50%,48h:100%\" (default: everyone at once)")
	force := fs.Bool("force", false, "replace a version already published")
	noChunks := fs.Bool("no-chunks", false, "publish no chunk index (machines download whole root images)")
	initRepo := fs.Bool("init", false, "only create an empty repository, whose metadata/root.json the OS file's update.root names")
	resign := fs.Bool("resign", false, "only renew the timestamp (and snapshot and targets when due); run it daily")
	tsExpiry := fs.Duration("timestamp-expiry", repo.DefaultExpiry().Timestamp, "how long the signed timestamp stays valid")
	snapExpiry := fs.Duration("snapshot-expiry", repo.DefaultExpiry().Snapshot, "how long the signed snapshot stays valid")
	targetsExpiry := fs.Duration("targets-expiry", repo.DefaultExpiry().Targets, "how long the signed targets stay valid")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: cairn publish --repo DIR --keys DIR [flags] MANIFEST\n       cairn publish --resign --repo DIR --keys DIR\n       cairn publish --init --repo DIR --keys DIR\n\nAdds the version that MANIFEST (from cairn build) describes to a TUF update\nrepository that any static web server can serve.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	only := *resign || *initRepo
	if *repoDir == "" || *keys == "" || (*resign && *initRepo) || (only && fs.NArg() != 0) || (!only && fs.NArg() != 1) {
		fs.Usage()
		return errUsage
	}
	opts := repo.Options{Expiry: repo.Expiry{Timestamp: *tsExpiry, Snapshot: *snapExpiry, Targets: *targetsExpiry}}
	if *initRepo {
		// The first image must trust the repository before any version is
		// published: build it with update.root: DIR/metadata/root.json.
		if err := repo.Init(ctx, *repoDir, *keys, opts); err != nil {
			return fmt.Errorf("publish --init: %w", err)
		}
		fmt.Printf("created an empty repository in %s; set update.root to %s\n", *repoDir, filepath.Join(*repoDir, "metadata", "root.json"))
		return nil
	}
	if *resign {
		if err := repo.Resign(ctx, *repoDir, *keys, opts); err != nil {
			return fmt.Errorf("publish --resign: %w", err)
		}
		fmt.Printf("re-signed %s\n", *repoDir)
		return nil
	}
	w, err := repo.ParseWaves(*waves)
	if err != nil {
		return fmt.Errorf("--waves: %w", err)
	}
	res, err := repo.Publish(ctx, *repoDir, *keys, fs.Arg(0), repo.PublishOptions{
		Options: opts, Channel: *channel, MinVersion: *minVersion, Waves: w, Force: *force, NoChunkIndex: *noChunks,
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", fs.Arg(0), err)
	}
	sort.Strings(res.Targets)
	fmt.Printf("published %s %s to channel %s (targets version %d):\n", res.OS, res.Version, *channel, res.TargetsVersion)
	for _, t := range res.Targets {
		fmt.Printf("  %s\n", t)
	}
	return nil
}
