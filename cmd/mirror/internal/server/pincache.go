package server

import (
	"context"
	"strconv"
	"sync"
)

// DefaultPinnedGenerations is how many past generations the server keeps
// open for /at/G/ requests when Options.PinnedGenerations is 0.
const DefaultPinnedGenerations = 4

// pinCache keeps the snapshots of the generations last asked for under
// /at/G/ open, so a client paging through one generation opens it once,
// with what the server derives from each (stats, trust view). It holds
// at most max generations, evicting the least recently used. An entry's
// snapshot is closed once it has left the cache (evicted, found
// collected, or flushed) and no request uses it any more. It is safe for
// concurrent use; concurrent requests for a generation not yet open wait
// for one open.
//
// The cache never decides whether a generation is still kept: the
// server resolves every request's generation first (History.Resolve, a
// look-up in the manifest in memory). A generation collected is 404 from
// the next request on, even while cached (the 404 drops it); only
// requests that resolved it before the collection are answered from it.
// A collected generation's files, deleted, stay open (their space not
// freed) until its entry is dropped: when asked for again, when a miss
// sweeps the cache, on eviction, or at ReleasePinned.
type pinCache struct {
	src   History
	max   int
	close func(Snapshot) // closes an entry's snapshot, logging errors

	mu      sync.Mutex
	entries map[uint64]*pinEntry
	clock   uint64 // last LRU stamp handed out
}

// pinEntry is one generation's open snapshot. snap, info and err are set
// once, before ready is closed; refs, used and cached are guarded by
// pinCache.mu.
type pinEntry struct {
	gen   uint64
	ready chan struct{}
	snap  Snapshot
	info  Info
	err   error
	d     derived

	refs   int    // requests holding the entry, plus one while cached
	used   uint64 // LRU stamp of the last acquire
	cached bool   // whether the cache still lists the entry
}

func newPinCache(src History, max int, close func(Snapshot)) *pinCache {
	return &pinCache{src: src, max: max, close: close, entries: map[uint64]*pinEntry{}}
}

// acquire returns generation gen's snapshot, opening it (src.AcquireAt)
// unless it is open already, the derived cache that goes with it, and
// whether this call opened it. The caller must Close the returned
// handle, which releases the entry. The open does not stop when ctx is
// done (other requests may wait for it); only the wait does.
func (c *pinCache) acquire(ctx context.Context, gen uint64) (Snapshot, *derived, bool, error) {
	c.mu.Lock()
	e, ok := c.entries[gen]
	if !ok {
		e = &pinEntry{gen: gen, ready: make(chan struct{}), refs: 1, cached: true}
		c.entries[gen] = e
	}
	e.refs++
	c.clock++
	e.used = c.clock
	evicted := c.evictLocked()
	c.mu.Unlock()
	c.closeAll(evicted)
	if !ok {
		c.open(ctx, e)
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		c.release(e)
		return nil, nil, false, ctx.Err()
	}
	if e.err != nil {
		c.release(e)
		return nil, nil, false, e.err
	}
	return &pinHandle{Snapshot: e.snap, c: c, e: e}, &e.d, !ok, nil
}

// open opens e's generation and publishes the result to its waiters. A
// failed entry leaves the cache, so the next request tries again.
func (c *pinCache) open(ctx context.Context, e *pinEntry) {
	snap, err := c.src.AcquireAt(context.WithoutCancel(ctx), e.gen)
	if err == nil && snap.Info().Generation != e.gen {
		got := snap.Info().Generation
		c.close(snap)
		snap, err = nil, &generationMismatchError{want: e.gen, got: got}
	}
	c.mu.Lock()
	e.snap, e.err = snap, err
	if snap != nil {
		e.info = snap.Info()
	}
	var drop []*pinEntry
	if err != nil && e.cached {
		drop = c.dropLocked(e)
	}
	c.mu.Unlock()
	close(e.ready)
	c.closeAll(drop)
}

// generationMismatchError reports a History whose AcquireAt pinned
// another generation than the one asked for.
type generationMismatchError struct{ want, got uint64 }

func (e *generationMismatchError) Error() string {
	return "asked the source for generation " + strconv.FormatUint(e.want, 10) +
		" and got generation " + strconv.FormatUint(e.got, 10)
}

// evictLocked drops the least recently used entries beyond max and
// returns those to close now.
func (c *pinCache) evictLocked() []*pinEntry {
	var out []*pinEntry
	for len(c.entries) > c.max {
		var lru *pinEntry
		for _, e := range c.entries {
			if lru == nil || e.used < lru.used {
				lru = e
			}
		}
		out = append(out, c.dropLocked(lru)...)
	}
	return out
}

// dropLocked takes e out of the cache and returns it if nothing uses it
// any more (the caller closes it once c.mu is released).
func (c *pinCache) dropLocked(e *pinEntry) []*pinEntry {
	if !e.cached {
		return nil
	}
	e.cached = false
	if c.entries[e.gen] == e {
		delete(c.entries, e.gen)
	}
	return c.unrefLocked(e)
}

// unrefLocked drops one reference to e and returns it when that was the
// last one and it holds a snapshot to close.
func (c *pinCache) unrefLocked(e *pinEntry) []*pinEntry {
	e.refs--
	if e.refs == 0 && e.snap != nil {
		return []*pinEntry{e}
	}
	return nil
}

func (c *pinCache) release(e *pinEntry) {
	c.mu.Lock()
	done := c.unrefLocked(e)
	c.mu.Unlock()
	c.closeAll(done)
}

func (c *pinCache) closeAll(es []*pinEntry) {
	for _, e := range es {
		c.close(e.snap)
	}
}

// forget drops generation gen from the cache, if it is there: the source
// no longer keeps it.
func (c *pinCache) forget(gen uint64) {
	c.mu.Lock()
	var drop []*pinEntry
	if e, ok := c.entries[gen]; ok {
		drop = c.dropLocked(e)
	}
	c.mu.Unlock()
	c.closeAll(drop)
}

// sweep drops every open generation the source no longer keeps, so a
// collected generation's files are not held open until it is evicted.
// Errors other than "not kept" leave the entry alone.
func (c *pinCache) sweep(ctx context.Context) {
	c.mu.Lock()
	gens := make([]uint64, 0, len(c.entries))
	for g, e := range c.entries {
		select {
		case <-e.ready:
			if e.err == nil {
				gens = append(gens, g)
			}
		default: // still opening
		}
	}
	c.mu.Unlock()
	for _, g := range gens {
		if got, err := c.src.Resolve(ctx, strconv.FormatUint(g, 10)); isNotKept(err) || (err == nil && got != g) {
			c.forget(g)
		}
	}
}

// flush drops every entry; those in use close when their last request
// ends. The cache stays usable.
func (c *pinCache) flush() {
	c.mu.Lock()
	var drop []*pinEntry
	for _, e := range c.entries {
		drop = append(drop, c.dropLocked(e)...)
	}
	c.mu.Unlock()
	c.closeAll(drop)
}

// len reports how many generations the cache lists.
func (c *pinCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// pinHandle is one request's hold on a cached generation: its Close
// releases the entry instead of closing the snapshot.
type pinHandle struct {
	Snapshot
	c    *pinCache
	e    *pinEntry
	once sync.Once
}

func (h *pinHandle) Info() Info { return h.e.info }

func (h *pinHandle) Close() error {
	h.once.Do(func() { h.c.release(h.e) })
	return nil
}
