// Command meminfo is the benchmark's probe container: GET /meminfo answers
// the machine's /proc/meminfo (a container sees the host's, with no lxcfs).
// bench/side runs it next to the web example on both Cairn and the peer, so
// that memory in use is read inside each guest the same way.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", ":8081", "address to listen on")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /meminfo", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile("/proc/meminfo")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(b)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
