package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpproxy"
)

type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.now = c.now.Add(d)
		c.slept += d
	}
	return ctx.Err()
}

func payload(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// server serves content with ServeContent (Range, If-Range, ETag) and can
// cut the body of the first `cuts` responses after `cutAt` bytes, or ignore
// Range entirely.
type server struct {
	mu          sync.Mutex
	content     []byte
	etag        string
	ignoreRange bool
	cuts        int
	cutAt       int
	status      int // when non-zero, answer with this status
	requests    []http.Header
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Header.Clone())
	content, etag, status := s.content, s.etag, s.status
	cut := s.cuts > 0
	if cut {
		s.cuts--
	}
	s.mu.Unlock()
	if status != 0 {
		http.Error(w, "nope", status)
		return
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if s.ignoreRange {
		r.Header.Del("Range")
	}
	if cut {
		// Announce the whole file, send part of it, drop the connection.
		if r.Header.Get("Range") != "" {
			panic("cutting server got a Range request")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.Header().Set("Last-Modified", time.Unix(1_600_000_000, 0).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		w.Write(content[:s.cutAt])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	http.ServeContent(w, r, "f", time.Unix(1_600_000_000, 0), bytes.NewReader(content))
}

func (s *server) headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header{}, s.requests...)
}

func start(t *testing.T, s *server) string {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts.URL + "/file"
}

func fastOpts() Options {
	return Options{clock: newFakeClock(), Backoff: time.Millisecond}
}

func TestGetWhole(t *testing.T) {
	s := &server{content: payload(300 << 10), etag: `"v1"`}
	dst := filepath.Join(t.TempDir(), "out")
	var last int64
	opts := fastOpts()
	opts.Progress = func(done, total int64) { last = done }
	if err := Get(context.Background(), start(t, s), dst, opts); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) || last != int64(len(s.content)) {
		t.Fatalf("content differs (%d bytes), progress %d", len(got), last)
	}
	if _, err := os.Stat(dst + ".fetch"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("sidecar left behind")
	}
}

func TestResumeAfterCut(t *testing.T) {
	for _, tt := range []struct {
		name string
		etag string
	}{{"etag", `"abc"`}, {"last-modified", ""}} {
		t.Run(tt.name, func(t *testing.T) {
			s := &server{content: payload(1 << 20), etag: tt.etag, cuts: 1, cutAt: 400 << 10}
			dst := filepath.Join(t.TempDir(), "out")
			if err := Get(context.Background(), start(t, s), dst, fastOpts()); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, s.content) {
				t.Fatal("content differs")
			}
			h := s.headers()
			if len(h) != 2 {
				t.Fatalf("%d requests, want 2", len(h))
			}
			if r := h[1].Get("Range"); r != fmt.Sprintf("bytes=%d-", 400<<10) {
				t.Fatalf("second request Range %q", r)
			}
			want := tt.etag
			if want == "" {
				want = time.Unix(1_600_000_000, 0).UTC().Format(http.TimeFormat)
			}
			if ir := h[1].Get("If-Range"); ir != want {
				t.Fatalf("If-Range %q, want %q", ir, want)
			}
		})
	}
}

func TestResumeAcrossCalls(t *testing.T) {
	s := &server{content: payload(1 << 20), etag: `"abc"`, cuts: 1, cutAt: 300 << 10}
	u := start(t, s)
	dst := filepath.Join(t.TempDir(), "out")
	opts := fastOpts()
	opts.Attempts = 1
	if err := Get(context.Background(), u, dst, opts); err == nil {
		t.Fatal("first call should fail after the cut")
	}
	if fi, err := os.Stat(dst); err != nil || fi.Size() != 300<<10 {
		t.Fatalf("partial file: %v %v", fi, err)
	}
	if err := Get(context.Background(), u, dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) {
		t.Fatal("content differs")
	}
	if r := s.headers()[1].Get("Range"); r != fmt.Sprintf("bytes=%d-", 300<<10) {
		t.Fatalf("resume Range %q", r)
	}
}

func TestServerIgnoresRange(t *testing.T) {
	s := &server{content: payload(1 << 20), etag: `"abc"`, cuts: 1, cutAt: 500 << 10, ignoreRange: true}
	dst := filepath.Join(t.TempDir(), "out")
	if err := Get(context.Background(), start(t, s), dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) {
		t.Fatalf("content differs: %d bytes", len(got))
	}
	if h := s.headers(); len(h) != 2 || h[1].Get("Range") == "" {
		t.Fatalf("want a Range request answered with the whole file; requests %v", h)
	}
}

// The file changed on the server since the partial download: If-Range
// makes the server send the new file whole, and nothing is spliced.
func TestFileChangedOnServer(t *testing.T) {
	old := payload(1 << 20)
	s := &server{content: old, etag: `"v1"`, cuts: 1, cutAt: 200 << 10}
	u := start(t, s)
	dst := filepath.Join(t.TempDir(), "out")
	opts := fastOpts()
	opts.Attempts = 1
	if err := Get(context.Background(), u, dst, opts); err == nil {
		t.Fatal("first call should fail")
	}
	s.mu.Lock()
	s.content = payload(900 << 10)
	s.etag = `"v2"`
	s.mu.Unlock()
	if err := Get(context.Background(), u, dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, payload(900<<10)) {
		t.Fatal("spliced old and new content")
	}
}

// Partial data without a sidecar is of unknown origin: start again.
func TestPartialWithoutSidecar(t *testing.T) {
	s := &server{content: payload(100 << 10), etag: `"abc"`}
	dst := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(dst, []byte("garbage that is not a prefix"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Get(context.Background(), start(t, s), dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) {
		t.Fatal("content differs")
	}
	if r := s.headers()[0].Get("Range"); r != "" {
		t.Fatalf("sent Range %q without a validator", r)
	}
}

func TestAlreadyComplete(t *testing.T) {
	s := &server{content: payload(10 << 10), etag: `"abc"`}
	u := start(t, s)
	dst := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(dst, s.content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".fetch", []byte(`{"url":"`+u+`","etag":"\"abc\""}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Get(context.Background(), u, dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) {
		t.Fatal("content differs")
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		s        *server
		opts     func(*Options)
		url      string
		want     string
		requests int
	}{
		{name: "404 is permanent", s: &server{status: 404}, want: "404", requests: 1},
		{name: "403 is permanent", s: &server{status: 403}, want: "403", requests: 1},
		{name: "503 is retried", s: &server{status: 503}, want: "giving up after 3", requests: 3,
			opts: func(o *Options) { o.Attempts = 3 }},
		{name: "too large", s: &server{content: payload(2000)}, want: "more than the allowed", requests: 1,
			opts: func(o *Options) { o.MaxSize = 1000 }},
		{name: "bad scheme", url: "ftp://127.0.0.1/x", want: "bad URL"},
		{name: "no host", url: "http:///x", want: "bad URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.url
			if tt.s != nil {
				u = start(t, tt.s)
			}
			opts := fastOpts()
			if tt.opts != nil {
				tt.opts(&opts)
			}
			err := Get(context.Background(), u, filepath.Join(t.TempDir(), "out"), opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if tt.s != nil && len(tt.s.headers()) != tt.requests {
				t.Fatalf("%d requests, want %d", len(tt.s.headers()), tt.requests)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	s := &server{status: 503}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Get(ctx, start(t, s), filepath.Join(t.TempDir(), "out"), Options{Backoff: time.Hour})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
}

// The limiter, driven by a fake clock: the time it makes the download
// wait is exactly what the rate allows, with no wall-clock flakiness.
func TestLimit(t *testing.T) {
	for _, tt := range []struct {
		size  int
		limit int64
	}{{1 << 20, 256 << 10}, {3 << 20, 1 << 20}, {100 << 10, 10 << 10}} {
		t.Run(fmt.Sprintf("%d@%d", tt.size, tt.limit), func(t *testing.T) {
			s := &server{content: payload(tt.size), etag: `"x"`}
			clk := newFakeClock()
			opts := Options{Limit: tt.limit, clock: clk}
			dst := filepath.Join(t.TempDir(), "out")
			if err := Get(context.Background(), start(t, s), dst, opts); err != nil {
				t.Fatal(err)
			}
			// The bucket starts full (one burst), then passes `limit`
			// bytes per second.
			burst := min(max(tt.limit/8, 1<<10), 256<<10)
			want := time.Duration(float64(int64(tt.size)-burst) / float64(tt.limit) * float64(time.Second))
			if d := clk.slept - want; d < -time.Millisecond || d > time.Millisecond {
				t.Fatalf("waited %v, want %v", clk.slept, want)
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, s.content) {
				t.Fatal("content differs")
			}
		})
	}
}

// The limiter with the real clock, with a generous bound: 256 KiB at
// 1 MiB/s takes at least ~200 ms (the first 128 KiB burst is free).
func TestLimitRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	s := &server{content: payload(256 << 10)}
	t0 := time.Now()
	if err := Get(context.Background(), start(t, s), filepath.Join(t.TempDir(), "out"), Options{Limit: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Fatalf("256 KiB at 1 MiB/s took only %v", d)
	}
}

// proxy is a tiny forward HTTP proxy (no CONNECT): it receives
// absolute-URI requests and sends them to backend whatever their host.
type proxy struct {
	backend *url.URL
	mu      sync.Mutex
	seen    []string
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect || !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, r.URL.String())
	p.mu.Unlock()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.backend.Scheme, p.backend.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func TestProxyFromEnvironment(t *testing.T) {
	s := &server{content: payload(200 << 10), etag: `"p"`, cuts: 1, cutAt: 50 << 10}
	backend := httptest.NewServer(s)
	defer backend.Close()
	bu, _ := url.Parse(backend.URL)
	p := &proxy{backend: bu}
	ps := httptest.NewServer(p)
	defer ps.Close()

	// The host name does not resolve: only the proxy can reach it.
	t.Setenv("HTTP_PROXY", ps.URL)
	t.Setenv("http_proxy", ps.URL)
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	dst := filepath.Join(t.TempDir(), "out")
	if err := Get(context.Background(), "http://updates.cairn.test/file", dst, fastOpts()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(got, s.content) {
		t.Fatal("content differs")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) != 2 || p.seen[0] != "http://updates.cairn.test/file" {
		t.Fatalf("proxy saw %v", p.seen)
	}
	if r := s.headers()[1].Get("Range"); r == "" {
		t.Fatal("resume through the proxy sent no Range")
	}
}

func TestProxyChoice(t *testing.T) {
	cfg := &httpproxy.Config{HTTPProxy: "http://hp:3128", HTTPSProxy: "http://sp:3128", NoProxy: "internal.example,.corp"}
	tr := NewTransport(cfg)
	tests := []struct {
		url, want string
	}{
		{"https://updates.example.org/x", "http://sp:3128"},
		{"http://updates.example.org/x", "http://hp:3128"},
		{"https://internal.example/x", ""},
		{"https://a.corp/x", ""},
		{"http://127.0.0.1:8080/x", ""},
		{"http://localhost/x", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, tt.url, nil)
		got, err := tr.Proxy(req)
		if err != nil {
			t.Fatal(err)
		}
		gs := ""
		if got != nil {
			gs = got.String()
		}
		if gs != tt.want {
			t.Errorf("%s: proxy %q, want %q", tt.url, gs, tt.want)
		}
	}
	// The environment is read when the transport is made, not once per
	// process.
	t.Setenv("HTTPS_PROXY", "http://envproxy:1")
	t.Setenv("https_proxy", "http://envproxy:1")
	t.Setenv("NO_PROXY", "skip.example")
	t.Setenv("no_proxy", "skip.example")
	tr = NewTransport(nil)
	for u, want := range map[string]string{"https://x.example/": "http://envproxy:1", "https://skip.example/": ""} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		got, _ := tr.Proxy(req)
		gs := ""
		if got != nil {
			gs = got.String()
		}
		if gs != want {
			t.Errorf("env %s: proxy %q, want %q", u, gs, want)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 5-9/10", 5, 9, 10, true},
		{"bytes */100", 0, 0, 100, true},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 5-10/10", 0, 0, 0, false},
		{"bytes -1-4/10", 0, 0, 0, false},
		{"bytes 0-4/*", 0, 0, 0, false},
		{"items 0-4/10", 0, 0, 0, false},
		{"bytes 0-4", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	}
	for _, tt := range tests {
		s, e, n, ok := parseContentRange(tt.in)
		if ok != tt.ok || (ok && (s != tt.start || e != tt.end || n != tt.total)) {
			t.Errorf("%q: %d %d %d %v", tt.in, s, e, n, ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes */5", "bytes 1-0/2", "bytes 9223372036854775807-9223372036854775807/9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, size, ok := parseContentRange(s)
		if ok && (start < 0 || size < 0 || (end != 0 || start != 0) && (end < start || end >= size)) {
			t.Fatalf("%q accepted as %d-%d/%d", s, start, end, size)
		}
	})
}

func TestGetBytes(t *testing.T) {
	tests := []struct {
		name     string
		s        *server
		maxSize  int64
		want     string // error substring; "" = success
		requests int
	}{
		{name: "ok", s: &server{content: payload(5000)}, requests: 1},
		{name: "cut then ok", s: &server{content: payload(50 << 10), cuts: 2, cutAt: 1000}, requests: 3},
		{name: "404", s: &server{status: 404}, want: "404", requests: 1},
		{name: "500 retried", s: &server{status: 500}, want: "giving up after 5", requests: 5},
		{name: "too large", s: &server{content: payload(5000)}, maxSize: 4999, want: "more than the allowed", requests: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := fastOpts()
			opts.MaxSize = tt.maxSize
			data, err := GetBytes(context.Background(), start(t, tt.s), opts)
			if tt.want == "" {
				if err != nil || !bytes.Equal(data, tt.s.content) {
					t.Fatalf("err %v, %d bytes", err, len(data))
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if n := len(tt.s.headers()); n != tt.requests {
				t.Fatalf("%d requests, want %d", n, tt.requests)
			}
		})
	}
}
