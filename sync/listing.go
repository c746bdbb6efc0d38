package sync

import (
	"context"
	"fmt"
	"slices"

	"github.com/noether-mirror/mirror/mirror"
)

// finalSet is the outcome of listing: which ids belong in the snapshot.
type finalSet struct {
	ids         idSet
	totals      map[string]int
	totalsOrder []string
}

// listing is one pass over one lifecycle.
type listing struct {
	lifecycle string
	// listed holds every key listed (a stage id, or the key of bytes
	// without a usable id) and the lifecycle the bytes declare, in
	// arrival order; when the pass ends it becomes ids, one entry a key.
	listed     *mirror.Scratch[keyKind]
	ids        idSet
	firstTotal int
	lastTotal  int
	hasTotal   bool
	duplicates int
	refused    error
	// repeatedAt is the offset of a full page that only repeated earlier
	// pages of this listing (0: none): the listing stopped there.
	repeatedAt int
}

// summary is what drift detection needs of l.
func (l *listing) summary() listingSummary {
	return listingSummary{lifecycle: l.lifecycle, ids: l.ids.s, hasTotal: l.hasTotal,
		firstTotal: l.firstTotal, lastTotal: l.lastTotal, duplicates: l.duplicates, repeatedAt: l.repeatedAt}
}

// passSet holds every pass of each listed lifecycle, in order.
type passSet map[string][]*listing

// last returns lc's latest listing, or nil when lc was not listed.
func (ps passSet) last(lc string) *listing {
	if len(ps[lc]) == 0 {
		return nil
	}
	return ps[lc][len(ps[lc])-1]
}

// close releases every pass's id set.
func (ps passSet) close() {
	for _, ls := range ps {
		for _, l := range ls {
			l.ids.close()
		}
	}
}

// listAll lists every lifecycle, repairs drift, and returns the final
// set, which the caller closes.
func (e *engine) listAll(ctx context.Context) (*finalSet, error) {
	passes := passSet{}
	// The listings' id sets end here; the final set has its own.
	defer passes.close()
	if err := e.listFirst(ctx, passes); err != nil {
		return nil, err
	}
	if err := e.relistDrifted(ctx, passes); err != nil {
		return nil, err
	}
	fs, err := e.settle(ctx, passes)
	if err != nil {
		return nil, err
	}
	if e.rep.r.Drift.Unresolved {
		e.rep.warn("the registry kept changing while it was listed; some stages may be missing until the next sync")
	}
	return fs, nil
}

// listFirst lists each lifecycle once into passes. Each lifecycle's
// first page is requested while the one before it is listed, so a
// lifecycle boundary does not cost a round trip. A lifecycle the
// registry refuses to list is left out, with a warning.
func (e *engine) listFirst(ctx context.Context, passes passSet) error {
	var refused []error
	var next *firstPage
	defer func() {
		if next != nil {
			next.stop()
		}
	}()
	for i, lc := range e.opts.Lifecycles {
		first := next
		if first == nil {
			first = e.lister.requestFirst(ctx, lc)
		}
		next = nil
		if i+1 < len(e.opts.Lifecycles) {
			next = e.lister.requestFirst(ctx, e.opts.Lifecycles[i+1])
		}
		l, err := e.list(ctx, lc, first, false)
		if err != nil {
			return err
		}
		if l.refused != nil {
			l.ids.close()
			refused = append(refused, l.refused)
			e.rep.warn(e.redact(fmt.Sprintf("the registry refused to list %s stages, so they are not mirrored: %v", lc, l.refused)))
			e.log.Warn("lifecycle skipped", "lifecycle", lc, "err", l.refused)
			continue
		}
		passes[lc] = []*listing{l}
	}
	if len(refused) == len(e.opts.Lifecycles) {
		return fmt.Errorf("%w: %w", ErrNoLifecycle, refused[0])
	}
	return nil
}

// relistDrifted detects drift and relists the lifecycles it touched, up
// to opts.MaxRelists times. When every listing looks consistent on its
// own, it confirms that no lifecycle's total moved since it was listed.
func (e *engine) relistDrifted(ctx context.Context, passes passSet) error {
	for round := 0; ; round++ {
		drifted := e.record(detectDrift(e.summaries(passes)))
		if len(drifted) == 0 {
			var err error
			if drifted, err = e.confirmTotals(ctx, passes); err != nil {
				return err
			}
			if len(drifted) == 0 {
				return nil
			}
		}
		if round >= e.opts.MaxRelists {
			e.rep.unresolved()
			return nil
		}
		e.rep.relisted()
		for _, lc := range drifted {
			l, err := e.list(ctx, lc, e.lister.requestFirst(ctx, lc), true)
			if err != nil {
				return err
			}
			if l.refused != nil {
				l.ids.close()
				return fmt.Errorf("relist %s stages: %w", lc, l.refused)
			}
			passes[lc] = append(passes[lc], l)
		}
	}
}

// summaries are the latest listings of the listed lifecycles, in fetch
// order.
func (e *engine) summaries(passes passSet) []listingSummary {
	var out []listingSummary
	for _, lc := range e.opts.Lifecycles {
		if l := passes.last(lc); l != nil {
			out = append(out, l.summary())
		}
	}
	return out
}

// record reports v's reasons and returns the lifecycles to relist.
func (e *engine) record(v driftVerdict) []string {
	for _, r := range v.reasons {
		e.rep.driftReason(r)
	}
	return v.relist
}

// confirmTotals asks the registry for each listed lifecycle's total again
// and returns those whose total differs from what their latest listing
// saw.
func (e *engine) confirmTotals(ctx context.Context, passes passSet) ([]string, error) {
	var lcs []string
	var ls []listingSummary
	for _, s := range e.summaries(passes) {
		if s.hasTotal {
			lcs, ls = append(lcs, s.lifecycle), append(ls, s)
		}
	}
	now := map[string]int{}
	for i, r := range e.lister.totals(ctx, lcs) {
		if r.err != nil {
			// What the lifecycles before it showed is reported still.
			e.record(totalsMoved(ls[:i], now))
			return nil, fmt.Errorf("confirm the total of %s stages: %w", lcs[i], r.err)
		}
		if r.page.HasTotal {
			now[lcs[i]] = r.page.Total
		}
	}
	return e.record(totalsMoved(ls, now)), nil
}

// settle builds the final set from the passes: the last pass of each
// lifecycle is authoritative, and an id that two lifecycles' last passes
// both list, or that an earlier pass saw but no last pass did, is asked
// about directly (refetch). No map of all ids is kept: at 100k stages
// every such map costs megabytes.
func (e *engine) settle(ctx context.Context, passes passSet) (*finalSet, error) {
	fs := &finalSet{totals: map[string]int{}}
	var all [][][]keyKind
	for _, lc := range e.opts.Lifecycles {
		last := passes.last(lc)
		if last == nil {
			continue
		}
		fs.totals[lc] = last.lastTotal
		fs.totalsOrder = append(fs.totalsOrder, lc)
		var sets [][]keyKind
		for _, p := range passes[lc] {
			sets = append(sets, p.ids.s)
		}
		all = append(all, sets)
	}
	keys, err := e.newKeys()
	if err != nil {
		return nil, err
	}
	ask, err := settle(all, e.rep.isQuarantined, func(kk keyKind) error { return keys.Append(kk) })
	if err != nil {
		_ = keys.Close()
		return nil, fmt.Errorf("collecting listed stages: %w", err)
	}
	fs.ids = idSet{sc: keys, s: slices.Clip(keys.All())}
	if len(ask) > 0 {
		if err := e.refetch(ctx, ask, fs); err != nil {
			fs.ids.close()
			return nil, err
		}
	}
	return fs, nil
}

// list pages through one lifecycle from its first page (head), staging
// every stage, and returns the listing. list owns head, and ends its
// request on every return. relist is true when drift made the sync list
// lc again: a whole page repeating earlier pages is then a protocol
// error, where the first time it is drift (a bulk insert ahead of the
// offset can shift a page).
func (e *engine) list(ctx context.Context, lc string, head *firstPage, relist bool) (l *listing, err error) {
	listed, err := e.newKeys()
	if err != nil {
		head.stop()
		return nil, err
	}
	l = &listing{lifecycle: lc, listed: listed}
	defer func() {
		if werr := e.waitCommit(); werr != nil && err == nil {
			l, err = nil, werr
		}
		if l == nil {
			_ = listed.Close()
			return
		}
		var dups int
		l.ids, dups = scratchIDSet(l.listed)
		l.duplicates += dups
		l.listed = nil
	}()
	// The keys of the first and the previous page: a full page that only
	// repeats them (repeatsEarlierPage) ends the listing as drift, and is
	// a protocol error when a relist sees it again.
	var firstKeys, prevKeys map[mirror.Key]bool
	for p, err := range e.lister.pages(ctx, lc, head) {
		if err != nil {
			if p.first && refusable(err) {
				l.refused = err
				return l, nil
			}
			return nil, fmt.Errorf("list %s stages at offset %d: %w", lc, p.offset, err)
		}
		if p.HasTotal {
			if p.first {
				l.firstTotal = p.Total
				e.expected += p.Total
			}
			l.lastTotal, l.hasTotal = p.Total, true
		}
		n := len(p.Stages)
		if n > 0 {
			if err := e.ingest(ctx, lc, p.offset, p.Stages, l); err != nil {
				return nil, err
			}
			keys := pageKeys(l.listed, n)
			if p.first {
				firstKeys = keys
			} else if repeatsEarlierPage(keys, n, firstKeys, prevKeys, e.opts.PageSize) {
				if relist {
					return nil, e.protocolError(lc, p.offset, n)
				}
				l.repeatedAt = p.offset
				return l, nil
			}
			prevKeys = keys
		}
		if p.last && n > 0 && !p.HasTotal {
			e.rep.warnOnce(fmt.Sprintf("the registry sent no usable total for %s; only the first page was read", lc))
		}
	}
	return l, nil
}

// repeatsEarlierPage reports whether a page at a non-zero offset holds
// only stages of the listing's first page or of the page before it, and
// as many as a full page: every page is page 0, the mark of an upstream
// (or a proxy in front of it) that ignores the offset parameter. Drift
// can do it once (as many inserts ahead of the offset as a page holds, or
// one with pages of one stage), so the first time ends the listing as
// drift, and only a relist that sees it again is a protocol error. page
// is the set of the keys of the page's n stages.
func repeatsEarlierPage(page map[mirror.Key]bool, n int, first, prev map[mirror.Key]bool, pageSize int) bool {
	if n == 0 || (n != pageSize && n != len(first)) {
		return false
	}
	for k := range page {
		if !first[k] && !prev[k] {
			return false
		}
	}
	return true
}

// protocolError explains a page that repeats an earlier page.
func (e *engine) protocolError(lc string, offset, n int) error {
	return fmt.Errorf("%w: %s answered the %s listing at offset %d with %d stages it had already sent at a lower offset: "+
		"it, or a proxy in front of it, ignores the offset (or limit) query parameter. Check that every proxy passes the query string through unchanged. "+
		"Nothing was published; the last snapshot is intact", ErrProtocol, e.reg.BaseURL(), lc, offset, n)
}

// pageKeys is the set of the last n keys listed.
func pageKeys(listed *mirror.Scratch[keyKind], n int) map[mirror.Key]bool {
	all := listed.All()
	out := make(map[mirror.Key]bool, n)
	for _, kk := range all[len(all)-n:] {
		out[kk.k] = true
	}
	return out
}
