// Command hello-web is the tiny HTTP server of os/examples/web.yaml: GET /
// answers "<GREETING or hello> from <hostname>", GET /healthz answers "ok"
// (503 when HEALTHY=false), GET /meminfo answers /proc/meminfo (in a
// container, the guest's: benchmarks read memory in use from it). With -notify it tells the service manager it is
// ready (sd_notify READY=1) once it listens. SIGTERM stops it cleanly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

func main() {
	listen := flag.String("listen", ":8080", "address to listen on")
	notify := flag.Bool("notify", false, "send sd_notify READY=1 once listening")
	flag.Parse()
	log.SetFlags(0)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("hello-web: %v", err)
	}
	if err := run(ctx, ln, *notify); err != nil {
		log.Fatalf("hello-web: %v", err)
	}
}

// run serves on ln until ctx ends, then shuts down gracefully.
func run(ctx context.Context, ln net.Listener, notify bool) error {
	srv := &http.Server{Handler: handler(os.Getenv, meminfoPath), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("hello-web: listening on %s", ln.Addr())
	if notify {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			log.Printf("hello-web: sd_notify: %v", err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Printf("hello-web: stopping")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// meminfoPath is the file GET /meminfo serves.
const meminfoPath = "/proc/meminfo"

// maxMeminfo bounds the body of GET /meminfo (/proc/meminfo is about 1.5 KiB).
const maxMeminfo = 64 << 10

// handler serves /, /healthz and /meminfo; getenv reads GREETING and
// HEALTHY, meminfo is the file /meminfo serves (at most maxMeminfo bytes).
func handler(getenv func(string) string, meminfo string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		greeting := getenv("GREETING")
		if greeting == "" {
			greeting = "hello"
		}
		host, err := os.Hostname()
		if err != nil {
			host = "unknown"
		}
		fmt.Fprintf(w, "%s from %s\n", greeting, host)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if getenv("HEALTHY") == "false" {
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("GET /meminfo", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(meminfo)
		if err != nil {
			http.Error(w, "meminfo unavailable", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		// Read it whole first: /proc files are generated on read, and an
		// error half-way must not become a truncated 200.
		b, err := io.ReadAll(io.LimitReader(f, maxMeminfo))
		if err != nil {
			http.Error(w, "meminfo unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
	})
	return mux
}
