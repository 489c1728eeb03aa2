package chunk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Source is a local image an update can take chunks from: a ROOT slot, the
// booted one or the inactive one. *io.SectionReader implements it. Limit a
// slot to the size of the image it holds when that is known; otherwise pass
// the whole partition (slower to chunk, same result).
type Source interface {
	io.ReaderAt
	Size() int64
}

// Location says where a chunk of the target is found locally. Source is the
// position of the source in the Plan call, or -1 when it must be fetched.
type Location struct {
	Source int
	Offset int64
}

// Delta is the result of Plan: where each chunk of the target comes from.
type Delta struct {
	// Local has one entry per chunk of the index, in index order.
	Local []Location
	// Fetch lists the distinct chunks that no source holds, in index order.
	Fetch []Chunk
	// FetchBytes is the uncompressed size of Fetch (what a full download
	// would cost is the index's Size).
	FetchBytes int64
	// LocalBytes counts the image bytes found locally (repeats included).
	LocalBytes int64

	sources []Source
}

// Plan finds which chunks of the image idx describes are already present in
// the sources, by chunking each source with the index's chunker settings and
// comparing sha256 values. A chunk not found that way is also looked for at
// its own offset in each source (this reuses the part of the inactive slot
// an interrupted earlier attempt already wrote). Earlier sources are
// preferred: pass the booted slot first, since Assemble usually writes into
// the inactive one.
func Plan(ctx context.Context, idx *Index, sources ...Source) (*Delta, error) {
	if err := idx.Validate(); err != nil {
		return nil, err
	}
	p, err := idx.Params()
	if err != nil {
		return nil, err
	}
	need := make(map[string]bool, len(idx.Chunks))
	for _, c := range idx.Chunks {
		need[c.SHA256] = true
	}
	found := make(map[string]Location, len(need))
	buf := make([]byte, p.MaxSize)
	for si, src := range sources {
		if len(found) == len(need) {
			break
		}
		c := p.newChunker(&ctxReader{ctx: ctx, r: io.NewSectionReader(src, 0, src.Size())})
		for {
			ch, err := c.Next(buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("plan: chunk source %d: %w", si, err)
			}
			sum := sha256.Sum256(ch.Data)
			h := hex.EncodeToString(sum[:])
			if _, ok := found[h]; need[h] && !ok {
				found[h] = Location{Source: si, Offset: int64(ch.Start)}
			}
		}
	}
	// Same-offset probe for what content-defined chunking did not find.
	for _, c := range idx.Chunks {
		if _, ok := found[c.SHA256]; ok {
			continue
		}
		for si, src := range sources {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if c.Offset+c.Size > src.Size() {
				continue
			}
			data := buf[:c.Size]
			if _, err := src.ReadAt(data, c.Offset); err != nil {
				return nil, fmt.Errorf("plan: read source %d: %w", si, err)
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) == c.SHA256 {
				found[c.SHA256] = Location{Source: si, Offset: c.Offset}
				break
			}
		}
	}
	d := &Delta{Local: make([]Location, len(idx.Chunks)), sources: sources}
	queued := make(map[string]bool)
	for i, c := range idx.Chunks {
		loc, ok := found[c.SHA256]
		if ok {
			d.Local[i] = loc
			d.LocalBytes += c.Size
			continue
		}
		d.Local[i] = Location{Source: -1}
		if !queued[c.SHA256] {
			queued[c.SHA256] = true
			d.Fetch = append(d.Fetch, c)
			d.FetchBytes += c.Size
		}
	}
	return d, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// FetchFunc returns the blob of the chunk with the given sha256 as the
// repository stores it (zstd-compressed), e.g. from
// <repo>/chunks/<hex[0:2]>/<hex>. Assemble verifies what it returns.
type FetchFunc func(ctx context.Context, sha256 string) (io.ReadCloser, error)

// AssembleStats says where the written bytes came from.
type AssembleStats struct {
	LocalBytes   int64 // copied from sources
	FetchedBytes int64 // uncompressed bytes fetched
	FetchedBlobs int   // fetch calls that succeeded
	// Refetched counts local chunks that no longer matched when read
	// (typically because the write target is also a source and an earlier
	// write overwrote them) and were fetched instead.
	Refetched int
}

// Parallelism of Assemble: chunks prepared concurrently, and how far ahead
// of the writer they may be.
const (
	assembleWorkers = 4
	assembleWindow  = 8
	// dupCacheBytes bounds the fetched chunks kept in memory because the
	// image repeats them.
	dupCacheBytes = 32 << 20
)

// Assemble writes the image idx describes into w: every chunk at its
// offset, in index order, taken from the source d names or fetched. Every
// chunk is checked against its sha256 before it is written, whatever its
// origin; a local chunk that does not match is fetched instead. The sha256
// of everything written is checked against the index's image sha256 at the
// end, and w is synced if it has a Sync method. On error, w holds a partial
// image; Plan with w as a source finds and reuses the chunks already written.
func Assemble(ctx context.Context, idx *Index, d *Delta, fetch FetchFunc, w io.WriterAt) (AssembleStats, error) {
	var st AssembleStats
	if err := idx.Validate(); err != nil {
		return st, err
	}
	if d == nil || len(d.Local) != len(idx.Chunks) {
		return st, errors.New("assemble: the plan does not belong to this index")
	}
	for _, l := range d.Local {
		if l.Source >= len(d.sources) || (l.Source >= 0 && l.Offset < 0) {
			return st, errors.New("assemble: the plan names a source it does not have")
		}
	}
	ctx, cancel := context.WithCancel(ctx)

	a := &assembler{idx: idx, d: d, fetch: fetch, dups: make(map[string]int), cache: make(map[string][]byte), inflight: make(map[string]chan struct{})}
	for i, l := range d.Local {
		if l.Source < 0 {
			a.dups[idx.Chunks[i].SHA256]++
		}
	}

	type result struct {
		data      []byte
		fetched   bool
		refetched bool
		err       error
	}
	type job struct {
		i   int
		out chan result
	}
	jobs := make(chan job)
	pending := make(chan chan result, assembleWindow)
	go func() {
		defer close(jobs)
		defer close(pending)
		for i := range idx.Chunks {
			out := make(chan result, 1)
			select {
			case pending <- out:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- job{i, out}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range assembleWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				data, fetched, refetched, err := a.produce(ctx, j.i)
				j.out <- result{data, fetched, refetched, err}
			}
		}()
	}
	// Stop the dispatcher and workers before returning, on every path.
	defer func() {
		cancel()
		wg.Wait()
	}()

	whole := sha256.New()
	i := 0
	for out := range pending {
		var r result
		select {
		case r = <-out:
		case <-ctx.Done():
			return st, ctx.Err()
		}
		if r.err != nil {
			return st, r.err
		}
		c := idx.Chunks[i]
		whole.Write(r.data)
		if _, err := w.WriteAt(r.data, c.Offset); err != nil {
			return st, fmt.Errorf("assemble: write chunk %d at %d: %w", i, c.Offset, err)
		}
		if r.fetched {
			st.FetchedBytes += c.Size
			st.FetchedBlobs++
		} else {
			st.LocalBytes += c.Size
		}
		if r.refetched {
			st.Refetched++
		}
		i++
	}
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if i != len(idx.Chunks) {
		return st, fmt.Errorf("assemble: wrote %d of %d chunks", i, len(idx.Chunks))
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != idx.SHA256 {
		return st, fmt.Errorf("assemble: image sha256 %s, index says %s", got, idx.SHA256)
	}
	if s, ok := w.(interface{ Sync() error }); ok {
		if err := s.Sync(); err != nil {
			return st, fmt.Errorf("assemble: sync: %w", err)
		}
	}
	return st, nil
}

type assembler struct {
	idx   *Index
	d     *Delta
	fetch FetchFunc

	mu         sync.Mutex
	dups       map[string]int // fetch count per sha256, before the run
	cache      map[string][]byte
	cacheBytes int
	inflight   map[string]chan struct{} // fetches under way, closed when done
}

// produce returns the verified bytes of chunk i and whether they were
// fetched (and fetched only because the local copy no longer matched).
func (a *assembler) produce(ctx context.Context, i int) ([]byte, bool, bool, error) {
	c := a.idx.Chunks[i]
	loc := a.d.Local[i]
	if loc.Source >= 0 {
		data := make([]byte, c.Size)
		if _, err := a.d.sources[loc.Source].ReadAt(data, loc.Offset); err == nil {
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) == c.SHA256 {
				return data, false, false, nil
			}
		}
		data, err := a.fetchChunk(ctx, c)
		return data, true, true, err
	}
	data, err := a.fetchChunk(ctx, c)
	return data, true, false, err
}

func (a *assembler) fetchChunk(ctx context.Context, c Chunk) ([]byte, error) {
	// One fetch per chunk at a time: a worker that needs a chunk another
	// worker is fetching waits for it and then takes it from the cache
	// (it fetches itself only if the cache had no room for it).
	for {
		a.mu.Lock()
		if data, ok := a.cache[c.SHA256]; ok {
			a.mu.Unlock()
			return data, nil
		}
		wait, busy := a.inflight[c.SHA256]
		if !busy {
			done := make(chan struct{})
			a.inflight[c.SHA256] = done
			a.mu.Unlock()
			defer func() {
				a.mu.Lock()
				delete(a.inflight, c.SHA256)
				a.mu.Unlock()
				close(done)
			}()
			break
		}
		a.mu.Unlock()
		select {
		case <-wait: // look again: cached now, or this worker fetches it
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if a.fetch == nil {
		return nil, fmt.Errorf("assemble: chunk %s must be fetched and no fetch function was given", c.SHA256)
	}
	rc, err := a.fetch(ctx, c.SHA256)
	if err != nil {
		return nil, fmt.Errorf("assemble: fetch chunk %s: %w", c.SHA256, err)
	}
	data, err := DecodeBlob(rc, c, nil)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("assemble: %w", err)
	}
	a.mu.Lock()
	if a.dups[c.SHA256] > 1 && a.cacheBytes+len(data) <= dupCacheBytes {
		a.cache[c.SHA256] = data
		a.cacheBytes += len(data)
	}
	a.mu.Unlock()
	return data, nil
}
