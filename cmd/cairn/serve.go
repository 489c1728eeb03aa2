package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"cairn.dev/cairn/update/server"
)

// serveCmd is `cairn serve`: the update repository, FleetLock reboot leases,
// update reports and automatic rollout pauses over HTTP.
func serveCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: cairn serve --repo DIR [flags]

Serves the update repository DIR (any static web server could), plus:
  POST /v1/pre-reboot, /v1/steady-state   FleetLock reboot leases
  POST /v1/report                         update outcomes from machines
  GET  /v1/rollout?channel=C              versions paused after rollbacks
  GET  /v1/reports?channel=C&limit=N      the newest reports

Flags:
`)
		fs.PrintDefaults()
	}
	repo := fs.String("repo", "", "update repository directory (required)")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	limit := fs.Int("lease-limit", 1, "machines of one FleetLock group that may reboot at once")
	ttl := fs.Duration("lease-ttl", server.DefaultLeaseTTL, "a reboot lease not released by steady-state expires after this")
	store := fs.String("store", "", "state store: file:PATH or etcd:HOST:PORT[,HOST:PORT...] (default file:<repo>.serve.json)")
	etcdPrefix := fs.String("etcd-prefix", "/cairn/", "key prefix in etcd")
	pause := fs.Int("pause-threshold", 3, "machines rolling back from a version that pause its rollout (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *repo == "" || fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	if *limit < 1 || *ttl <= 0 || *pause < 0 {
		return fmt.Errorf("serve: --lease-limit must be at least 1, --lease-ttl positive and --pause-threshold not negative")
	}
	if *store == "" {
		*store = "file:" + filepath.Clean(*repo) + ".serve.json"
	}
	st, err := openStore(ctx, *store, *etcdPrefix)
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv, err := server.New(server.Config{Repo: *repo, Store: st, LeaseLimit: *limit, LeaseTTL: *ttl,
		PauseThreshold: *pause, Log: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("serving", "repo", *repo, "listen", *listen, "store", *store, "lease_limit", *limit, "lease_ttl", *ttl)
	return srv.Serve(ctx, *listen)
}

func openStore(ctx context.Context, spec, etcdPrefix string) (server.Store, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return nil, fmt.Errorf("serve: --store %q: want file:PATH or etcd:ENDPOINTS", spec)
	}
	switch kind {
	case "file":
		return server.NewFileStore(arg)
	case "etcd":
		var eps []string
		for _, e := range strings.Split(arg, ",") {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
		return server.NewEtcdStore(ctx, eps, etcdPrefix)
	}
	return nil, fmt.Errorf("serve: --store %q: unknown kind %q (file or etcd)", spec, kind)
}
