package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/feed"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
)

// FeedSource is the side of a Registry that can read another
// noether-mirror's change feed (package mirror/feed): a GET of an
// envelope answer, and a streamed GET. *registry.Client implements it. A
// sync from a FeedSource asks first whether the upstream serves a feed,
// and when it does, pulls only what changed since the generation it last
// proved equal to; a Registry without it is always listed in full.
type FeedSource interface {
	GetResult(ctx context.Context, op, path string, query url.Values) (json.RawMessage, error)
	Stream(ctx context.Context, op, path, accept string) (io.ReadCloser, error)
}

// FeedReport says how a sync used the upstream's change feed. It is a
// plain value.
type FeedReport struct {
	// Used is true when the content came from the feed (Unchanged syncs
	// included): it was proven equal to the upstream's generation To by
	// digest.
	Used bool `json:"used"`
	// From and To are the upstream generations the feed spanned (From 0:
	// the whole content).
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
	// Items and Bytes are what the feed carried; Requests counts the
	// sync's requests to the feed (capabilities and streams).
	Items    int   `json:"items"`
	Bytes    int64 `json:"bytes"`
	Requests int   `json:"requests"`
	// Fallback says why the sync read the whole content, or listed every
	// page, instead of the changes since its last generation ("" when it
	// did not).
	Fallback string `json:"fallback"`
}

// feedBatch is how many items are admitted and staged at a time.
const feedBatch = 200

// feedBatchBytes bounds the bytes of the items held for one batch.
const feedBatchBytes = 32 << 20

// feedNext is what a feed attempt leaves to do.
type feedNext int

const (
	feedDone feedNext = iota // the sync ended (published, refused or failed)
	feedFull                 // read the whole content (from generation 0)
	feedList                 // list every page, as from a registry
)

// syncFromFeed syncs m from src's change feed. It returns feedDone with
// the report and error of the sync, or feedList with the report so far
// (its Feed says why) when the sync must list every page instead.
func syncFromFeed(ctx context.Context, m *mirror.Mirror, reg Registry, src FeedSource, opts Options) (Report, feedNext, error) {
	fr := FeedReport{Requests: 1}
	caps, why, err := capabilities(ctx, src)
	switch {
	case why != "":
		fr.Fallback = why
		return Report{Feed: fr}, feedList, nil
	case err != nil:
		e := newEngine(m, reg, opts)
		e.rep.feedFellBack(fr)
		return e.rep.finish(0), feedDone, err
	}
	since := resumePoint(m.Meta(), reg.BaseURL(), caps)
	for {
		e := newEngine(m, reg, opts)
		f := &feedSync{engine: e, src: src, caps: caps, since: since}
		e.rep.feedFellBack(fr)
		rep, next, why, err := f.run(ctx)
		fr = rep.Feed
		if next == feedDone {
			return rep, feedDone, err
		}
		fr.Fallback = why
		f.log.Warn("the change feed cannot answer", "why", why)
		if next == feedList || since == 0 {
			return Report{Feed: fr}, feedList, nil
		}
		since = 0
	}
}

// capabilities asks the upstream whether it serves a change feed. why is
// set when it does not (a plain registry), err when it could not be
// asked at all.
func capabilities(ctx context.Context, src FeedSource) (caps feed.Capabilities, why string, err error) {
	raw, err := src.GetResult(ctx, "read the upstream's change feed capabilities", feed.BasePath, nil)
	switch {
	case errors.Is(err, registry.ErrUnreachable):
		return caps, "", err
	case err != nil:
		return caps, fmt.Sprintf("the upstream serves no change feed (%s: %v), so every page was listed", feed.BasePath, shortErr(err)), nil
	}
	caps, err = feed.ParseCapabilities(raw)
	switch {
	case errors.Is(err, feed.ErrNotAFeed):
		return caps, fmt.Sprintf("the upstream's %s is not a noether-mirror change feed, so every page was listed", feed.BasePath), nil
	case err != nil:
		return caps, fmt.Sprintf("%v, so every page was listed", err), nil
	}
	return caps, "", nil
}

// shortErr names err briefly: "HTTP 404" for an answer, else its
// message.
func shortErr(err error) string {
	var re *registry.Error
	if errors.As(err, &re) && re.Status != 0 {
		return "HTTP " + strconv.Itoa(re.Status)
	}
	return err.Error()
}

// resumePoint is the upstream generation a feed can start from: the one
// this mirror's content was last proven equal to, as long as the content
// is still that (no local edit since) and the upstream is the same; 0
// (the whole content) otherwise.
func resumePoint(meta mirror.Meta, upstream string, caps feed.Capabilities) uint64 {
	if meta.Upstream != upstream || meta.UpstreamDigest == "" || meta.UpstreamDigest != meta.Digest ||
		meta.UpstreamGeneration > caps.Generation {
		return 0
	}
	return meta.UpstreamGeneration
}

// feedSync is one attempt to sync from a change feed.
type feedSync struct {
	*engine
	src   FeedSource
	caps  feed.Capabilities
	since uint64
	hdr   feed.Header

	// removed and released are the stage ids and quarantine keys the
	// feed removes; received, for a full feed, the stages it carries.
	removed, released, received map[mirror.Key]bool
	// read counts the stream's bytes, and batches the batches staged
	// (shown as pages by a progress bar).
	read    int64
	batches int
	// diverged counts items this mirror's gate judged otherwise than
	// the upstream's (or that carried another stage than their key): the
	// content cannot then equal the upstream's.
	diverged int
}

// run makes the attempt. next says what is left to do when it could not
// end the sync, and why.
func (f *feedSync) run(ctx context.Context) (rep Report, next feedNext, why string, err error) {
	f.start, f.clock = f.opts.Now(), time.Now()
	f.feedTag = fmt.Sprintf("%d-%d", f.since, f.caps.Generation)
	defer func() {
		f.rep.feedBytes(f.read)
		rep = f.rep.finish(time.Since(f.clock))
	}()
	meta := f.m.Meta()
	if f.since == f.caps.Generation && meta.Digest == f.caps.Digest {
		return Report{}, feedDone, "", f.refresh(ctx)
	}
	body, rd, next, why, err := f.open(ctx, meta)
	if next != feedDone || err != nil {
		return Report{}, next, why, err
	}
	defer body.Close()
	w, err := f.m.BeginSync(ctx)
	if err != nil {
		return Report{}, feedDone, "", err
	}
	w.RedactWith(f.redact)
	f.w = w
	published := false
	defer func() {
		if !published && next == feedDone {
			if ferr := w.Fail(err); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	if err := f.begin(ctx); err != nil {
		return Report{}, feedDone, "", err
	}
	if err := f.ingestFeed(ctx, rd); errors.Is(err, feed.ErrFormat) {
		// Damaged bytes, which asking again (or a cache) would give
		// again: fall back rather than fail every sync.
		_ = w.Abort(false)
		if f.since > 0 {
			return Report{}, feedFull, fmt.Sprintf("the changes since generation %d were damaged (%v), so the upstream's whole content was read", f.since, err), nil
		}
		return Report{}, feedList, fmt.Sprintf("the upstream's change feed was damaged (%v), so every page was listed", err), nil
	} else if err != nil {
		return Report{}, feedDone, "", err
	}
	f.rep.listedIn(time.Since(f.clock))
	listed := time.Now()
	res, err := f.publishFeed(ctx)
	if errors.Is(err, mirror.ErrDigestMismatch) {
		_ = w.Abort(false)
		next, why := f.mismatch()
		return Report{}, next, why, nil
	}
	if err != nil {
		return Report{}, feedDone, "", err
	}
	published = true
	f.rep.publishedIn(time.Since(listed))
	f.rep.fromFeed(f.m.Meta().Changes, f.hdr.Counts, res.Total)
	f.rep.published(res)
	f.rep.feedUsed()
	return Report{}, feedDone, "", nil
}

// open requests the stream from f.since to the upstream's current
// generation and reads its header.
func (f *feedSync) open(ctx context.Context, meta mirror.Meta) (io.ReadCloser, *feed.Reader, feedNext, string, error) {
	path := feed.ChangesPath(f.since, f.caps.Generation)
	body, err := f.src.Stream(ctx, "read the upstream's change feed", path, feed.ContentType)
	f.rep.feedRequest(f.since, f.caps.Generation)
	switch {
	case errors.Is(err, store.ErrNotFound) && f.since > 0:
		return nil, nil, feedFull, fmt.Sprintf("the upstream no longer keeps generation %d, which this mirror was synced from (its history was collected past it), so its whole content was read", f.since), nil
	case errors.Is(err, store.ErrNotFound):
		return nil, nil, feedList, fmt.Sprintf("the upstream could not serve its change feed (%v), so every page was listed", shortErr(err)), nil
	case err != nil:
		return nil, nil, feedDone, "", fmt.Errorf("read the upstream's change feed: %w", err)
	}
	cb := &countingBody{ReadCloser: body, n: &f.read}
	rd, err := feed.NewReader(cb)
	if err == nil {
		f.hdr = rd.Header()
		err = f.checkHeader(meta)
	}
	switch {
	case errors.Is(err, feed.ErrFormat) && f.since > 0:
		cb.Close()
		return nil, nil, feedFull, fmt.Sprintf("the changes since generation %d were unusable (%v), so the upstream's whole content was read", f.since, err), nil
	case errors.Is(err, feed.ErrFormat):
		cb.Close()
		return nil, nil, feedList, fmt.Sprintf("the upstream's change feed was unusable (%v), so every page was listed", err), nil
	case err != nil:
		cb.Close()
		return nil, nil, feedDone, "", fmt.Errorf("read the upstream's change feed: %w", err)
	}
	return cb, rd, feedDone, "", nil
}

// checkHeader checks that the stream is the one asked for, starting from
// the content this mirror holds.
func (f *feedSync) checkHeader(meta mirror.Meta) error {
	h := f.hdr
	switch {
	case h.From != f.since || h.To != f.caps.Generation || h.Full != (f.since == 0):
		return fmt.Errorf("%w: asked for generations %d to %d, the stream spans %d to %d", feed.ErrFormat, f.since, f.caps.Generation, h.From, h.To)
	case f.since > 0 && h.FromDigest != meta.UpstreamDigest:
		return fmt.Errorf("%w: the upstream's generation %d is not the one this mirror was synced from (another digest: was the upstream rebuilt?)", feed.ErrFormat, f.since)
	case h.Digest == "" || h.Digest != f.caps.Digest:
		// A stale copy (a cache in front of an upstream rebuilt since):
		// its content is not the upstream's current generation.
		return fmt.Errorf("%w: the stream leads to digest %.16s…, the upstream's generation %d has %.16s… (a stale cached copy?)", feed.ErrFormat, h.Digest, h.To, f.caps.Digest)
	}
	return nil
}

// refresh ends a sync that found the upstream at the generation this
// mirror already equals: only the sync time and position are recorded.
func (f *feedSync) refresh(ctx context.Context) (err error) {
	w, err := f.m.BeginSync(ctx)
	if err != nil {
		return err
	}
	f.w = w
	done := false
	defer func() {
		if !done {
			if ferr := w.Fail(err); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	if dirty, err := w.Dirty(); err != nil {
		return err
	} else if dirty {
		// An interrupted run's staging: nothing of it is needed.
		if _, err := w.Prune(ctx, nil); err != nil {
			return err
		}
	}
	res, err := w.Refresh(ctx, f.publishInfo(f.caps.Generation, f.caps.Digest, nil))
	if err != nil {
		return err
	}
	done = true
	f.rep.feedSpan(f.caps.Generation, f.caps.Generation)
	f.rep.unchangedFeed(res.Total)
	f.rep.published(res)
	f.rep.feedUsed()
	return nil
}

// publishInfo describes a sync that reached the upstream's generation
// gen, whose digest the new content must have.
func (f *feedSync) publishInfo(gen uint64, digest string, counts map[string]int) mirror.PublishInfo {
	return mirror.PublishInfo{
		Upstream: f.reg.BaseURL(), SyncTime: f.opts.Now(), UpstreamTotals: counts,
		UpstreamGeneration: gen, UpstreamDigest: digest, ExpectDigest: digest,
	}
}

// progress is what a resumed sync checks: the same upstream and the same
// feed.
func (f *feedSync) progress(items int) []byte {
	p, _ := json.Marshal(progressState{Upstream: f.reg.BaseURL(), Feed: f.feedTag, Offset: items, Started: f.start})
	return p
}

// ingestFeed admits every item through the mirror's gate and stages what
// changed, as a listing stages a page.
func (f *feedSync) ingestFeed(ctx context.Context, rd *feed.Reader) error {
	f.removed, f.released, f.received = map[mirror.Key]bool{}, map[mirror.Key]bool{}, map[mirror.Key]bool{}
	var raws []json.RawMessage
	var kinds []feed.Item
	items, batchBytes := 0, 0
	flush := func() error {
		if err := f.stageItems(raws, kinds, items); err != nil {
			return err
		}
		clear(raws) // let the batch's bytes go
		raws, kinds, batchBytes = raws[:0], kinds[:0], 0
		return ctx.Err()
	}
	for {
		it, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read the upstream's change feed after %d of %d items: %w", items, f.hdr.Items, err)
		}
		items++
		switch it.Kind {
		case mirror.ChangeRemoved, mirror.ChangeReleased:
			k, ok := mirror.ParseKey(it.Key)
			if !ok {
				f.diverged++
				continue
			}
			if it.Kind == mirror.ChangeRemoved {
				f.removed[k] = true
			} else {
				f.released[k] = true
			}
			continue
		}
		raws = append(raws, it.Raw)
		kinds = append(kinds, feed.Item{Kind: it.Kind, Key: it.Key})
		batchBytes += len(it.Raw)
		if len(raws) == feedBatch || batchBytes >= feedBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	f.rep.feedItems(items)
	return flush()
}

// stageItems admits one batch of stages and quarantined bytes and stages
// what changed.
func (f *feedSync) stageItems(raws []json.RawMessage, items []feed.Item, done int) error {
	if len(raws) == 0 {
		return nil
	}
	var entries []mirror.Entry
	for i, r := range f.prepareAll(raws) {
		it := items[i]
		f.rep.admitted(&r.entry)
		wantStage := it.Kind != mirror.ChangeQuarantined
		if r.entry.Admitted() != wantStage {
			f.diverged++ // judged otherwise than upstream
		} else if !wantStage && r.entry.Key().String() != it.Key {
			f.diverged++ // refused here too, but kept under another key
		}
		if r.entry.Admitted() && string(r.entry.ID()) != it.Key {
			// Never stage what was not announced: the digest check
			// then fails, and the sync lists every page.
			f.diverged++
			f.rep.warn(f.redact(fmt.Sprintf("the change feed carried stage %s under the id %s; it was left out", r.entry.ID(), it.Key)))
			continue
		}
		if r.entry.Admitted() {
			f.received[r.key] = true
		}
		if f.stageable(r) {
			entries = append(entries, r.entry)
		}
	}
	f.stages += len(raws)
	if f.opts.Progress != nil {
		f.batches++
		f.opts.Progress(Progress{Lifecycle: "change feed", Pages: f.batches, Stages: done, Expected: f.hdr.Items, Elapsed: time.Since(f.clock)})
	}
	if len(entries) == 0 {
		return nil
	}
	if err := f.w.PutBatch(entries, f.progress(done)); err != nil {
		return fmt.Errorf("stage the change feed's stages: %w", err)
	}
	f.rep.commit()
	return nil
}

// publishFeed records what the feed removes, refuses a loss past
// Options.MaxRemove, and publishes, expecting the upstream's digest.
func (f *feedSync) publishFeed(ctx context.Context) (mirror.PublishResult, error) {
	if err := f.recordRemovals(ctx); err != nil {
		return mirror.PublishResult{}, err
	}
	if r := f.guardFeedLoss(); r != nil {
		return mirror.PublishResult{}, f.refuse(r)
	}
	return f.w.Publish(ctx, f.publishInfo(f.hdr.To, f.hdr.Digest, f.hdr.Counts))
}

// recordRemovals records what leaves the mirror and counts it for the
// loss guard: for a stream of changes, exactly the stages it removes and
// the quarantine entries it releases (Writer.Drop, O(changes)); for a
// whole content, every stage it does not carry (Writer.Fill, a scan).
// Either way, a stage this mirror serves whose new bytes the gate
// refused is lost to quarantine.
func (f *feedSync) recordRemovals(ctx context.Context) error {
	if f.hdr.Full {
		keep := func(k mirror.Key) bool {
			stays := f.received[k] && !f.rep.isQuarantined(k)
			switch {
			case stays:
			case f.rep.isQuarantined(k):
				f.lostToQuarantine++
			default:
				f.rep.removed(k.ID())
			}
			return stays
		}
		_, err := f.w.Fill(ctx, keep, func(k mirror.Key) bool { return f.knownRefusals[k] })
		return err
	}
	for _, k := range f.rep.quarantinedKeys() {
		if held, err := f.w.Holds(k); err != nil {
			return err
		} else if held {
			f.lostToQuarantine++
		}
	}
	byKey := func(a, b mirror.Key) int { return a.Compare(b) }
	gone, _, err := f.w.Drop(ctx, slices.SortedFunc(maps.Keys(f.removed), byKey), slices.SortedFunc(maps.Keys(f.released), byKey))
	for _, id := range gone {
		f.rep.removed(id)
	}
	return err
}

// guardFeedLoss is guardLoss for a feed: the upstream's own removals
// count like a registry's.
func (f *feedSync) guardFeedLoss() *Refusal {
	total := f.m.Meta().Total
	lost := f.rep.r.Removed + f.lostToQuarantine
	if f.opts.MaxRemove.allows(lost, total, f.hdr.Total) {
		return nil
	}
	r := &Refusal{WouldRemove: lost, LostToQuarantine: f.lostToQuarantine, Total: total, Limit: f.opts.MaxRemove.String()}
	r.Reason = fmt.Sprintf("this sync would remove %d of the mirror's %d stages (%.0f%%; the limit is %s), and %s",
		lost, total, 100*float64(lost)/float64(max(total, 1)), r.Limit, f.lossWhy())
	return r
}

func (f *feedSync) lossWhy() string {
	switch {
	case f.rep.r.PreviousUpstream != "":
		return fmt.Sprintf("the mirror was synced from %s and this sync reads %s", f.rep.r.PreviousUpstream, f.reg.BaseURL())
	case f.hdr.Total == 0:
		return fmt.Sprintf("the upstream mirror %s holds no stages at all at its generation %d: an emptied or rebuilt mirror, or the wrong URL", f.reg.BaseURL(), f.hdr.To)
	case f.lostToQuarantine > 0:
		return fmt.Sprintf("%d stages the mirror serves now fail verification or the trust policy (--trusted-keys)", f.lostToQuarantine)
	}
	return "a registry rarely loses that much between two syncs"
}

// mismatch decides, after the content failed to reach the upstream's
// digest, what to do instead.
func (f *feedSync) mismatch() (feedNext, string) {
	if f.diverged > 0 {
		return feedList, fmt.Sprintf("this mirror's checks judged %d of the change feed's stages otherwise than the upstream did (its trust policy, or bytes damaged upstream), so its content cannot equal the upstream's generation %d: every page was listed instead", f.diverged, f.hdr.To)
	}
	if !f.hdr.Full {
		return feedFull, fmt.Sprintf("the changes since generation %d did not reach the upstream's digest (the mirror's content had drifted from it), so the upstream's whole content was read", f.since)
	}
	return feedList, fmt.Sprintf("the upstream's whole content did not reach its own digest for generation %d, so every page was listed", f.hdr.To)
}

// countingBody counts the bytes read through it into *n.
type countingBody struct {
	io.ReadCloser
	n *int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	*c.n += int64(k)
	return k, err
}

// WaitForChange long-polls the upstream mirror behind src until its
// current generation is not since, or for at most wait (the upstream caps
// it at a minute; keep it under the client's request timeout), and
// returns the generation it is at. It fails when the upstream serves no
// change feed.
func WaitForChange(ctx context.Context, src FeedSource, since uint64, wait time.Duration) (uint64, error) {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}, "wait": {wait.String()}}
	raw, err := src.GetResult(ctx, "wait for the upstream's next generation", feed.BasePath, q)
	if err != nil {
		return 0, err
	}
	caps, err := feed.ParseCapabilities(raw)
	if err != nil {
		return 0, fmt.Errorf("the upstream's %s: %w", feed.BasePath, err)
	}
	return caps.Generation, nil
}
