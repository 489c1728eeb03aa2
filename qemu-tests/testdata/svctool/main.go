// Command svctool is the test program of the services QEMU scenario
// (qemu-tests/services_test.go), baked as go://./qemu-tests/testdata/svctool:
//
//	svctool fetch URL   GET URL until it answers 200 (up to 2 minutes), print the body
//	svctool alloc MB    allocate and touch MB MiB, then sleep (an OOM kill target)
//	svctool trap        wait for SIGTERM, print "got SIGTERM", exit 42
//	svctool forkbomb N  start up to N sleeping children; exit 0 once a fork
//	                    fails (the pids limit holds), 1 if all N started
//	svctool sleep       sleep for an hour
//	svctool victim ADDR serve HTTP on ADDR: GET / answers "victim"
//	svctool apikill ADDR SOCK
//	                    serve HTTP on ADDR: POST /kill/NAME SIGKILLs service
//	                    NAME's process through PID 1's API socket SOCK (a
//	                    container process cannot kill its own PID-namespace
//	                    init, so the kill comes from PID 1, as `kill -9` on
//	                    the machine would)
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: svctool fetch URL | alloc MB | trap")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "fetch":
		os.Exit(fetch(os.Args[2]))
	case "alloc":
		mb, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var chunks [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			chunks = append(chunks, b)
			fmt.Printf("allocated %d MiB\n", len(chunks))
		}
		time.Sleep(time.Hour)
	case "forkbomb":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(forkbomb(n))
	case "sleep":
		time.Sleep(time.Hour)
	case "victim":
		os.Exit(victim(os.Args[2]))
	case "apikill":
		os.Exit(apikill(os.Args[2], os.Args[3]))
	case "trap":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		fmt.Println("waiting for SIGTERM")
		<-ch
		fmt.Println("got SIGTERM")
		os.Exit(42)
	default:
		fmt.Fprintf(os.Stderr, "svctool: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func fetch(url string) int {
	client := &http.Client{Timeout: 5 * time.Second}
	var last error
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := client.Get(url)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode != 200 {
			last = fmt.Errorf("status %d", resp.StatusCode)
			continue
		}
		fmt.Printf("fetched %s: %s\n", url, b)
		return 0
	}
	fmt.Fprintf(os.Stderr, "fetch %s: %v\n", url, last)
	return 1
}

// forkbomb starts children until one fails to start.
func forkbomb(n int) int {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	for i := 0; i < n; i++ {
		if _, err := syscall.ForkExec(self, []string{self, "sleep"}, &syscall.ProcAttr{Env: []string{"GOMAXPROCS=1"}}); err != nil {
			fmt.Printf("fork bomb contained after %d children: %v\n", i, err)
			return 0
		}
	}
	fmt.Printf("started all %d children: not contained\n", n)
	return 1
}

// victim serves HTTP on addr until its process is killed.
func victim(addr string) int {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "victim") })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	return 1
}

// apikill serves HTTP on addr: POST /kill/NAME asks PID 1's API, whose
// socket is bind-mounted at sock, to SIGKILL service NAME's process.
func apikill(addr, sock string) int {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /kill/{name}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Post("http://cairn/v1/services/"+r.PathValue("name")+"/kill?signal=KILL", "text/plain", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	return 1
}
