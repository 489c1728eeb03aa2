// Command hello-web is the tiny HTTP server of os/examples/web.yaml: GET /
// answers "<GREETING or hello> from <hostname>", GET /healthz answers "ok"
// (503 when HEALTHY=false). With -notify it tells the service manager it is
// ready (sd_notify READY=1) once it listens. SIGTERM stops it cleanly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
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
	srv := &http.Server{Handler: handler(os.Getenv), ReadHeaderTimeout: 5 * time.Second}
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

// handler serves / and /healthz; getenv reads GREETING and HEALTHY.
func handler(getenv func(string) string) http.Handler {
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
	return mux
}
