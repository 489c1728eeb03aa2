// Package fetch downloads update files over HTTP(S): it resumes a partial
// file with a Range request guarded by If-Range (so a file that changed on
// the server is downloaded again from the start, never spliced), honours
// HTTP_PROXY/HTTPS_PROXY/NO_PROXY, retries with exponential backoff, and can
// cap the bandwidth with a token bucket.
//
// Resume across calls (and reboots) works through a small sidecar file
// <dst>.fetch that records the URL and the validator (ETag or
// Last-Modified) of the partial data; it is removed once the file is
// complete. Without a sidecar the download starts from zero.
//
// The package is guest-usable: it imports nothing host-only.
package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
	"golang.org/x/time/rate"
)

// Options tune Get. The zero value is usable.
type Options struct {
	// Limit caps the download rate in bytes per second; 0 means no limit.
	Limit int64
	// Client is used for the requests. nil means a client whose proxy
	// settings are read from the environment (HTTP_PROXY, HTTPS_PROXY,
	// NO_PROXY) when Get is called, or from Proxy if set.
	Client *http.Client
	// Proxy overrides the environment's proxy settings (nil: environment).
	// Ignored when Client is set.
	Proxy *httpproxy.Config
	// MaxSize refuses files larger than this (0: no limit). Set it to the
	// length TUF metadata gives for the file.
	MaxSize int64
	// Attempts is the number of attempts in a row that may fail without
	// making progress (default 5). An attempt that received data resets it.
	Attempts int
	// Backoff is the first wait between attempts (default 1s); it doubles
	// up to MaxBackoff (default 1m).
	Backoff, MaxBackoff time.Duration
	// Progress, if set, is called after each write with the bytes in dst
	// and the total size (-1 when unknown).
	Progress func(done, total int64)

	clock Clock // tests inject a fake clock
}

// Error statuses that will not change by retrying.
var errPermanent = errors.New("permanent")

// HTTPError is a response with an unexpected status.
type HTTPError struct {
	URL    string
	Status int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
}

// sidecar records what the partial data in dst is a prefix of.
type sidecar struct {
	URL          string `json:"url"`
	ETag         string `json:"etag,omitempty"`
	LastModified string `json:"last_modified,omitempty"`
}

func (s sidecar) validator() string {
	// A weak ETag may not be used in If-Range (RFC 9110 13.1.5).
	if s.ETag != "" && !strings.HasPrefix(s.ETag, "W/") {
		return s.ETag
	}
	return s.LastModified
}

// Get downloads rawURL into the file dst, resuming the partial data a
// previous Get left there when the server still has the same file. On
// success dst holds the complete file, synced; on error it holds a partial
// file that the next Get resumes.
func Get(ctx context.Context, rawURL, dst string, opts Options) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("fetch: bad URL %q", rawURL)
	}
	opts, client := opts.withDefaults()
	g := &getter{url: rawURL, dst: dst, opts: opts, client: client}
	if opts.Limit > 0 {
		g.lim = newLimiter(opts.Limit, opts.clock)
	}
	return g.run(ctx)
}

// NewTransport returns an HTTP transport that picks its proxy with cfg, or
// with the environment read now when cfg is nil. (http.ProxyFromEnvironment
// reads the environment only once per process.) Requests to localhost and
// loopback addresses never use a proxy.
func NewTransport(cfg *httpproxy.Config) *http.Transport {
	if cfg == nil {
		cfg = httpproxy.FromEnvironment()
	}
	pf := cfg.ProxyFunc()
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = func(r *http.Request) (*url.URL, error) { return pf(r.URL) }
	return t
}

type getter struct {
	url    string
	dst    string
	opts   Options
	client *http.Client
	lim    *limiter
}

func (g *getter) sidecarPath() string { return g.dst + ".fetch" }

func (g *getter) run(ctx context.Context) error {
	f, err := os.OpenFile(g.dst, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer f.Close()
	side := g.loadSidecar()
	failures := 0
	backoff := g.opts.Backoff
	for {
		progressed, done, err := g.attempt(ctx, f, &side)
		if done {
			if err := f.Sync(); err != nil {
				return fmt.Errorf("fetch: sync %s: %w", g.dst, err)
			}
			if err := os.Remove(g.sidecarPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("fetch: %w", err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("fetch %s: %w", g.url, ctx.Err())
		}
		if errors.Is(err, errPermanent) {
			return fmt.Errorf("fetch %s: %w", g.url, err)
		}
		if progressed {
			failures = 0
			backoff = g.opts.Backoff
		}
		failures++
		if failures >= g.opts.Attempts {
			return fmt.Errorf("fetch %s: giving up after %d attempts: %w", g.url, failures, err)
		}
		if err := g.opts.clock.Sleep(ctx, backoff); err != nil {
			return fmt.Errorf("fetch %s: %w", g.url, err)
		}
		backoff = min(2*backoff, g.opts.MaxBackoff)
	}
}

func (g *getter) loadSidecar() sidecar {
	data, err := os.ReadFile(g.sidecarPath())
	if err != nil {
		return sidecar{}
	}
	var s sidecar
	if json.Unmarshal(data, &s) != nil || s.URL != g.url {
		return sidecar{}
	}
	return s
}

func (g *getter) saveSidecar(s sidecar) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp := g.sidecarPath() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, g.sidecarPath())
}

// attempt makes one request. It reports whether it wrote any data and
// whether the file is complete.
func (g *getter) attempt(ctx context.Context, f *os.File, side *sidecar) (progressed, done bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return false, false, fmt.Errorf("%w: %w", errPermanent, err)
	}
	off := fi.Size()
	if off > 0 && side.validator() == "" {
		// Partial data of unknown origin: start again.
		off = 0
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return false, false, fmt.Errorf("%w: %w", errPermanent, err)
	}
	// Offsets count stored bytes: no transparent decompression.
	req.Header.Set("Accept-Encoding", "identity")
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		req.Header.Set("If-Range", side.validator())
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()

	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		// Whole file: the server ignored Range or the file changed.
		off = 0
		total = resp.ContentLength
	case http.StatusPartialContent:
		start, _, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			// Not what we asked for: forget the partial data.
			*side = sidecar{}
			return false, false, fmt.Errorf("unexpected Content-Range %q for offset %d", resp.Header.Get("Content-Range"), off)
		}
		total = size
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file is as long as (or longer than) the file.
		_, _, size, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if ok && size == off {
			return false, true, nil
		}
		*side = sidecar{}
		return false, false, fmt.Errorf("range not satisfiable at %d", off)
	default:
		herr := &HTTPError{URL: g.url, Status: resp.StatusCode}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return false, false, herr
		}
		return false, false, fmt.Errorf("%w: %w", errPermanent, herr)
	}
	if g.opts.MaxSize > 0 && total > g.opts.MaxSize {
		return false, false, fmt.Errorf("%w: %s is %d bytes, more than the allowed %d", errPermanent, g.url, total, g.opts.MaxSize)
	}
	if off == 0 {
		if err := f.Truncate(0); err != nil {
			return false, false, fmt.Errorf("%w: %w", errPermanent, err)
		}
	}
	*side = sidecar{URL: g.url, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified")}
	if err := g.saveSidecar(*side); err != nil {
		return false, false, fmt.Errorf("%w: %w", errPermanent, err)
	}
	var body io.Reader = resp.Body
	if g.lim != nil {
		body = &limitedReader{ctx: ctx, r: body, lim: g.lim}
	}
	if g.opts.MaxSize > 0 {
		body = io.LimitReader(body, g.opts.MaxSize-off+1)
	}
	w := &offsetWriter{f: f, off: off, progress: g.opts.Progress, total: total}
	n, err := io.Copy(w, body)
	progressed = n > 0
	if err != nil {
		return progressed, false, fmt.Errorf("read body at %d: %w", w.off, err)
	}
	if g.opts.MaxSize > 0 && w.off > g.opts.MaxSize {
		return progressed, false, fmt.Errorf("%w: %s is more than the allowed %d bytes", errPermanent, g.url, g.opts.MaxSize)
	}
	if total >= 0 && w.off != total {
		return progressed, false, fmt.Errorf("body ended at %d of %d bytes", w.off, total)
	}
	return progressed, true, nil
}

type offsetWriter struct {
	f        *os.File
	off      int64
	total    int64
	progress func(done, total int64)
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	if w.progress != nil {
		w.progress(w.off, w.total)
	}
	return n, err
}

// parseContentRange reads "bytes START-END/SIZE" or "bytes */SIZE".
func parseContentRange(s string) (start, end, size int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, sz, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	size, err := strconv.ParseInt(sz, 10, 64)
	if err != nil || size < 0 {
		return 0, 0, 0, false
	}
	if rng == "*" {
		return 0, 0, size, true
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start || end >= size {
		return 0, 0, 0, false
	}
	return start, end, size, true
}

// Clock is time as the limiter and the backoff see it (tests inject a fake).
type Clock interface {
	Now() time.Time
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the system clock.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx ends.
func (RealClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// limiter is a token bucket of rate bytes/s holding at most one burst.
type limiter struct {
	lim   *rate.Limiter
	burst int
	clock Clock
}

func newLimiter(bytesPerSec int64, c Clock) *limiter {
	// A burst of 1/8 s of traffic (at least 1 KiB, at most 256 KiB) keeps
	// the rate smooth without tiny reads.
	burst := int(min(max(bytesPerSec/8, 1<<10), 256<<10))
	return &limiter{lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst), burst: burst, clock: c}
}

// wait blocks until n bytes (n <= burst) may pass.
func (l *limiter) wait(ctx context.Context, n int) error {
	now := l.clock.Now()
	r := l.lim.ReserveN(now, n)
	if !r.OK() {
		return fmt.Errorf("rate limiter refused %d bytes", n)
	}
	if err := l.clock.Sleep(ctx, r.DelayFrom(now)); err != nil {
		r.CancelAt(now)
		return err
	}
	return nil
}

type limitedReader struct {
	ctx context.Context
	r   io.Reader
	lim *limiter
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if len(p) > l.lim.burst {
		p = p[:l.lim.burst]
	}
	n, err := l.r.Read(p)
	if n > 0 {
		if werr := l.lim.wait(l.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// withDefaults fills the retry settings and the clock, and returns the HTTP
// client to use.
func (opts Options) withDefaults() (Options, *http.Client) {
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.clock == nil {
		opts.clock = RealClock{}
	}
	client := opts.Client
	if client == nil {
		client = &http.Client{Transport: NewTransport(opts.Proxy)}
	}
	return opts, client
}

// GetBytes downloads a small file (a chunk blob, a metadata file) into
// memory with the same proxy, bandwidth limit and retry rules as Get, but
// no resume: a failed attempt starts again. MaxSize should be set; it
// defaults to 64 MiB.
func GetBytes(ctx context.Context, rawURL string, opts Options) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fetch: bad URL %q", rawURL)
	}
	if opts.MaxSize <= 0 {
		opts.MaxSize = 64 << 20
	}
	opts, client := opts.withDefaults()
	var lim *limiter
	if opts.Limit > 0 {
		lim = newLimiter(opts.Limit, opts.clock)
	}
	backoff := opts.Backoff
	for attempt := 1; ; attempt++ {
		data, err := getBytesOnce(ctx, client, rawURL, opts.MaxSize, lim)
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetch %s: %w", rawURL, ctx.Err())
		}
		if errors.Is(err, errPermanent) {
			return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
		}
		if attempt >= opts.Attempts {
			return nil, fmt.Errorf("fetch %s: giving up after %d attempts: %w", rawURL, attempt, err)
		}
		if err := opts.clock.Sleep(ctx, backoff); err != nil {
			return nil, fmt.Errorf("fetch %s: %w", rawURL, err)
		}
		backoff = min(2*backoff, opts.MaxBackoff)
	}
}

func getBytesOnce(ctx context.Context, client *http.Client, rawURL string, maxSize int64, lim *limiter) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPermanent, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		herr := &HTTPError{URL: rawURL, Status: resp.StatusCode}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
			return nil, herr
		}
		return nil, fmt.Errorf("%w: %w", errPermanent, herr)
	}
	if resp.ContentLength > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the allowed %d", errPermanent, resp.ContentLength, maxSize)
	}
	var body io.Reader = resp.Body
	if lim != nil {
		body = &limitedReader{ctx: ctx, r: body, lim: lim}
	}
	data, err := io.ReadAll(io.LimitReader(body, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(data)) > maxSize {
		return nil, fmt.Errorf("%w: more than the allowed %d bytes", errPermanent, maxSize)
	}
	if resp.ContentLength >= 0 && int64(len(data)) != resp.ContentLength {
		return nil, fmt.Errorf("body ended at %d of %d bytes", len(data), resp.ContentLength)
	}
	return data, nil
}
