package sync

import (
	"context"
	"errors"
	"iter"
	gosync "sync"

	"github.com/noether-mirror/mirror/sync/registry"
)

// lister pages through a registry's listings, requesting pages ahead
// while earlier ones are processed. It is a plain value; its methods may
// run on any goroutine, and every request they start ends before they
// return (pages: before its loop ends).
type lister struct {
	reg Registry
	// pageSize is the page size asked for; prefetch how many pages are
	// requested ahead once the registry honours it.
	pageSize, prefetch int
}

// pageResult is one fetched page, or the error that ended the listing.
type pageResult struct {
	page registry.Page
	err  error
}

// listedPage is one page of a listing, as pages yields it.
type listedPage struct {
	registry.Page
	// offset is the page's offset; first is true for offset 0's page,
	// last for the listing's last page (no more are fetched after it).
	offset      int
	first, last bool
}

// firstPage is a lifecycle's first page, requested ahead of its listing.
type firstPage struct {
	ch     chan pageResult
	cancel context.CancelFunc
}

// requestFirst starts fetching lc's first page. The caller passes the
// result to pages, or calls stop.
func (ls lister) requestFirst(ctx context.Context, lc string) *firstPage {
	fctx, cancel := context.WithCancel(ctx)
	return &firstPage{ch: ls.requestPage(fctx, lc, ls.pageSize, 0), cancel: cancel}
}

// requestPage fetches the page of lc at offset on its own goroutine. The
// channel is buffered: the goroutine ends whether or not anyone receives.
func (ls lister) requestPage(ctx context.Context, lc string, limit, offset int) chan pageResult {
	ch := make(chan pageResult, 1)
	go func() {
		p, err := ls.reg.ListPage(ctx, lc, limit, offset)
		ch <- pageResult{p, err}
	}()
	return ch
}

// stop abandons a first page that pages never took: it cancels the
// request and waits for it to end.
func (f *firstPage) stop() {
	f.cancel()
	<-f.ch
}

// pages yields the pages of lc from its first page (head) to the last
// one, in order; a failed request is yielded with its page's offset, and
// ends the listing. The next pages are fetched while the loop body
// processes the current one. pages owns head: when the loop ends, early
// or not, every request it started has been cancelled and has ended.
//
// Until the first page proves the registry honours the page size, one
// request at a time; then up to prefetch pages are requested ahead at
// offsets that assume full pages. A short page before the end breaks
// that assumption: the speculative requests are dropped and paging goes
// on one page at a time from where it really is.
func (ls lister) pages(ctx context.Context, lc string, head *firstPage) iter.Seq2[listedPage, error] {
	return func(yield func(listedPage, error) bool) {
		// Fetches run under their own context so that an early return
		// (error, cancellation) stops them and waits for them: no
		// request of this sync outlives Sync.
		fctx, cancel := context.WithCancel(ctx)
		type pending struct {
			offset int
			ch     chan pageResult
		}
		queue := []pending{{0, head.ch}}
		defer func() {
			cancel()
			head.cancel()
			for _, p := range queue {
				<-p.ch
			}
		}()
		window, nextFetch := 1, 0
		for first := true; ; first = false {
			front := queue[0]
			r := <-front.ch
			queue = queue[1:]
			if r.err != nil {
				yield(listedPage{offset: front.offset, first: first}, r.err)
				return
			}
			p := r.page
			n := len(p.Stages)
			nextOffset := front.offset + n
			more := n > 0 && p.HasTotal && nextOffset < p.Total
			if more {
				switch {
				case n == ls.pageSize && first:
					window = ls.prefetch
				case n != ls.pageSize:
					// The registry returned less than asked before the
					// end: the speculative offsets are wrong. Drop them.
					for _, q := range queue {
						<-q.ch
					}
					queue, window = queue[:0], 1
				}
				if len(queue) == 0 {
					nextFetch = nextOffset
				}
				for len(queue) < window && nextFetch < p.Total {
					queue = append(queue, pending{nextFetch, ls.requestPage(fctx, lc, ls.pageSize, nextFetch)})
					nextFetch += ls.pageSize
				}
			}
			if !yield(listedPage{Page: p, offset: front.offset, first: first, last: !more}, nil) || !more {
				return
			}
		}
	}
}

// totals asks the registry for the total of each of lcs again (one stage
// per request), concurrently; the results keep lcs's order.
func (ls lister) totals(ctx context.Context, lcs []string) []pageResult {
	results := make([]pageResult, len(lcs))
	var wg gosync.WaitGroup
	for i, lc := range lcs {
		wg.Go(func() {
			p, err := ls.reg.ListPage(ctx, lc, 1, 0)
			results[i] = pageResult{p, err}
		})
	}
	wg.Wait()
	return results
}

// refusable reports whether a first-page error means "the registry won't
// list this lifecycle" rather than "the registry is broken".
func refusable(err error) bool {
	return errors.Is(err, registry.ErrUnauthorized) || errors.Is(err, registry.ErrBadRequest)
}
