package sync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	gosync "sync"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
)

// Registry is what a sync needs from a noether registry. *registry.Client
// implements it; tests may substitute their own. A Registry that also has
// a Redact(string) string method, as *registry.Client does (it removes the
// API key), gets every quarantine reason and warning the sync builds from
// its answers passed through it.
type Registry interface {
	BaseURL() string
	ListPage(ctx context.Context, lifecycle string, limit, offset int) (registry.Page, error)
	GetStage(ctx context.Context, id store.StageID) (json.RawMessage, error)
}

// redactor is the optional method of a Registry that knows a secret its
// answers may echo back.
type redactor interface {
	Redact(string) string
}

// Lifecycles lists every lifecycle a sync fetches, in fetch order.
var allLifecycles = []string{"draft", "active", "deprecated", "tombstone"}

// Options tunes a sync. The zero value is ready to use.
type Options struct {
	// Lifecycles to list; nil means all four.
	Lifecycles []string
	// PageSize is the listing page size; 0 means 200, the registry's max.
	PageSize int
	// Prefetch is how many pages are requested ahead while earlier ones
	// are verified and committed, once the registry has shown it honours
	// the page size; 0 means 4.
	Prefetch int
	// MaxRelists bounds how often a drifting lifecycle is listed again;
	// 0 means 2.
	MaxRelists int
	// Workers verifies stages in parallel; 0 means GOMAXPROCS.
	Workers int
	// MaxRemove bounds how many of the mirror's stages one sync may
	// remove, or lose to quarantine, before it refuses to publish
	// (ErrRefused, OutcomeRefused). The zero value allows 10% and never
	// emptying a non-empty mirror: an upstream restarted on an empty
	// database, or a wrong URL, must not wipe an air-gapped mirror.
	MaxRemove RemoveLimit
	// Progress, when set, is called after every page from the sync's
	// goroutine; it must return quickly.
	Progress func(Progress)
	// Logger receives warnings and a summary; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Progress describes a running sync.
type Progress struct {
	Lifecycle string
	Pages     int
	Stages    int
	// Expected is the number of stages the registry reported so far
	// (the sum of totals of the lifecycles listed), 0 when unknown.
	Expected int
	Elapsed  time.Duration
}

// Outcome is how a sync ended.
type Outcome string

// Outcomes. Partial means a snapshot was published but some stages were
// quarantined or could not be fetched reliably; its exit code differs.
// Refused means nothing was published because the sync would have
// removed more than Options.MaxRemove allows (Sync also returns an error
// wrapping ErrRefused).
const (
	OutcomeOK        Outcome = "ok"
	OutcomePartial   Outcome = "partial"
	OutcomeUnchanged Outcome = "unchanged"
	OutcomeRefused   Outcome = "refused"
)

// Report says everything a sync did. No stage disappears silently: every
// id that left the mirror is counted as removed or quarantined.
type Report struct {
	Upstream         string  `json:"upstream"`
	Outcome          Outcome `json:"outcome"`
	Total            int     `json:"total"`
	Added            int     `json:"added"`
	Changed          int     `json:"changed"`
	Removed          int     `json:"removed"`
	LifecycleChanged int     `json:"lifecycle_changed"`
	Quarantined      int     `json:"quarantined"`
	Unchanged        int     `json:"unchanged"`
	// Reused counts listed stages whose identical bytes were already
	// staged and verified (by an interrupted run being resumed, or by an
	// earlier pass of this one) and so were not verified again.
	Reused int `json:"reused"`
	// VerifiedBefore counts listed stages whose bytes are identical to a
	// stage of the current snapshot that passed verification when it was
	// synced: that result is reused instead of checking signatures again.
	// (mirror verify re-checks every stage from scratch.)
	VerifiedBefore int            `json:"verified_before"`
	Pages          int            `json:"pages"`
	Commits        int            `json:"commits"`
	Resumed        bool           `json:"resumed"`
	Published      bool           `json:"published"`
	Generation     uint64         `json:"generation"`
	ByLifecycle    map[string]int `json:"by_lifecycle"`
	// QuarantinedIDs, RemovedIDs (the first 1000) and Warnings are empty
	// arrays, never null, in JSON.
	QuarantinedIDs []string `json:"quarantined_ids"`
	RemovedIDs     []string `json:"removed_ids"`
	Warnings       []string `json:"warnings"`
	Drift          Drift    `json:"drift"`
	// PreviousUpstream is the upstream the mirror held before this sync
	// when it differs from Upstream ("" when it does not).
	PreviousUpstream string `json:"previous_upstream"`
	// Refusal says what a refused sync would have removed and why that
	// looks wrong; nil (JSON null) unless Outcome is refused.
	Refusal    *Refusal `json:"refusal"`
	DurationMS int64    `json:"duration_ms"`
	// ListingMS is the time spent listing, verifying and staging, and
	// PublishMS the time spent comparing and publishing after it.
	ListingMS int64 `json:"listing_ms"`
	PublishMS int64 `json:"publish_ms"`
}

// Drift reports offset drift: the registry changed while it was paged.
type Drift struct {
	Detected bool     `json:"detected"`
	Reasons  []string `json:"reasons"`
	Relists  int      `json:"relists"`
	// Refetched ids were fetched one by one to tell a deleted stage from
	// a moved one; Deleted and Moved split them.
	Refetched int `json:"refetched"`
	Deleted   int `json:"deleted"`
	Moved     int `json:"moved"`
	// Unresolved is true when listings still disagreed with their totals
	// after every repair; the mirror may miss new stages until the next
	// sync.
	Unresolved bool `json:"unresolved"`
	// Kept counts stages an unresolved listing left out but that were
	// kept from the last snapshot, since no 404 proved them gone.
	Kept int `json:"kept"`
}

// ErrNoLifecycle means the registry refused to list every lifecycle.
var ErrNoLifecycle = errors.New("the registry refused to list any lifecycle")

// progressState is saved with every committed page so that a resumed sync
// can tell whether the staged stages came from the same registry.
type progressState struct {
	Upstream  string    `json:"upstream"`
	Lifecycle string    `json:"lifecycle"`
	Offset    int       `json:"offset"`
	Started   time.Time `json:"started"`
}

// Sync pulls reg into m and publishes a new snapshot when anything
// changed. It holds m's writer lock for its whole run; a concurrent sync
// fails fast with mirror.ErrBusy. On error or cancellation the published
// snapshot is untouched and the staged work is kept for the next run.
func Sync(ctx context.Context, m *mirror.Mirror, reg Registry, opts Options) (Report, error) {
	e := newEngine(m, reg, opts)
	return e.run(ctx)
}

type engine struct {
	m     *mirror.Mirror
	reg   Registry
	opts  Options
	log   *slog.Logger
	start time.Time // by opts.Now, for what is stored
	clock time.Time // by the real clock, for durations

	// redact removes the registry's secret from text taken from its
	// answers (the identity when the Registry is no redactor).
	redact func(string) string

	w      *mirror.Writer
	report Report

	// quarantined holds the keys whose latest bytes failed this sync.
	quarantined map[mirror.Key]bool
	// gone holds the keys a 404 proved deleted during drift repair.
	gone map[mirror.Key]bool
	// knownRefusals holds the keys quarantined this sync exactly as the
	// current snapshot quarantines them, and so not staged.
	knownRefusals map[mirror.Key]bool
	// lostToQuarantine counts stages of the current snapshot whose
	// latest bytes were quarantined: served now, not after publish.
	lostToQuarantine int
	// inflight reports the page commit running beside verification.
	inflight chan error
	pages    int
	stages   int
	expected int
}

func newEngine(m *mirror.Mirror, reg Registry, opts Options) *engine {
	if opts.PageSize <= 0 || opts.PageSize > 200 {
		opts.PageSize = 200
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 4
	}
	if opts.MaxRelists <= 0 {
		opts.MaxRelists = 2
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Lifecycles == nil {
		opts.Lifecycles = allLifecycles
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	redact := func(s string) string { return s }
	if r, ok := reg.(redactor); ok {
		redact = r.Redact
	}
	return &engine{m: m, reg: reg, redact: redact, opts: opts, log: log,
		quarantined: map[mirror.Key]bool{}, gone: map[mirror.Key]bool{}, knownRefusals: map[mirror.Key]bool{}}
}

// scratchDir is where the sync's scratch files go: beside the mirror, on
// its file system (see mirror.Scratch).
func (e *engine) scratchDir() string { return filepath.Dir(e.m.Path()) }

// newKeys returns an empty scratch array for listed keys.
func (e *engine) newKeys() (*mirror.Scratch[keyKind], error) {
	sc, err := mirror.NewScratch[keyKind](e.scratchDir())
	if err != nil {
		return nil, fmt.Errorf("starting a scratch file for listed stages: %w", err)
	}
	return sc, nil
}

func (e *engine) run(ctx context.Context) (rep Report, err error) {
	e.start, e.clock = e.opts.Now(), time.Now()
	e.report.Upstream = e.reg.BaseURL()
	w, err := e.m.BeginSync(ctx)
	if err != nil {
		return e.report, err
	}
	// A refused stage's reasons quote its bytes, and quarantine lists it
	// under the id it claims: the gate passes both through the registry's
	// redactor before anything stores or reports them.
	w.RedactWith(e.redact)
	e.w = w
	published := false
	defer func() {
		if !published {
			// The mirror decides whether the staged pages stay for the
			// next run to reuse (Writer.Fail).
			if aerr := w.Fail(err); aerr != nil && err == nil {
				err = aerr
			}
		}
		e.report.DurationMS = time.Since(e.clock).Milliseconds()
		e.report.normalize()
		rep = e.report
	}()

	if up := e.m.Meta().Upstream; up != "" && up != e.reg.BaseURL() {
		e.report.PreviousUpstream = up
		e.report.Warnings = append(e.report.Warnings, fmt.Sprintf(
			"the mirror was synced from %s; this sync replaces its content with %s's", up, e.reg.BaseURL()))
		e.log.Warn("switching upstream", "from", up, "to", e.reg.BaseURL())
	}
	if w.Resumed() {
		var prev progressState
		if p := w.Progress(); p != nil && json.Unmarshal(p, &prev) == nil && prev.Upstream == e.reg.BaseURL() {
			e.report.Resumed = true
			e.log.Info("resuming an interrupted sync", "started", prev.Started, "lifecycle", prev.Lifecycle, "offset", prev.Offset)
		} else {
			// Staged stages came from elsewhere: start clean.
			if err := e.clearStaging(ctx); err != nil {
				return e.report, err
			}
		}
	}

	final, err := e.listAll(ctx)
	if err != nil {
		return e.report, err
	}
	defer final.ids.close()
	listed := time.Now()
	e.report.ListingMS = listed.Sub(e.clock).Milliseconds()
	e.log.Debug("listed every lifecycle", "stages", final.ids.len(), "pages", e.report.Pages, "elapsed", time.Since(e.clock).Round(time.Millisecond))
	if e.report.Drift.Unresolved {
		if err := e.keepUnproven(ctx, final); err != nil {
			return e.report, err
		}
	}
	if err := e.dropUnlisted(ctx, final); err != nil {
		return e.report, err
	}
	if err := e.countChanges(ctx, final); err != nil {
		return e.report, err
	}
	if r := e.guardLoss(final); r != nil {
		return e.report, e.refuse(r)
	}
	e.log.Debug("compared with the current snapshot", "elapsed", time.Since(e.clock).Round(time.Millisecond))

	totals := map[string]int{}
	for _, lc := range final.totalsOrder {
		totals[lc] = final.totals[lc]
	}
	res, err := e.publish(ctx, final, mirror.PublishInfo{
		Upstream:       e.reg.BaseURL(),
		SyncTime:       e.opts.Now(),
		UpstreamTotals: totals,
	})
	if err != nil {
		return e.report, fmt.Errorf("publish snapshot: %w", err)
	}
	published = true
	e.report.PublishMS = time.Since(listed).Milliseconds()
	e.log.Debug("published", "generation", res.Generation, "unchanged", res.Unchanged, "elapsed", time.Since(e.clock).Round(time.Millisecond))
	e.report.Generation = res.Generation
	e.report.Total = res.Total
	e.report.Published = !res.Unchanged
	switch {
	case e.report.Quarantined > 0 || e.report.Drift.Unresolved:
		e.report.Outcome = OutcomePartial
	case res.Unchanged:
		e.report.Outcome = OutcomeUnchanged
	default:
		e.report.Outcome = OutcomeOK
	}
	e.log.Debug("sync finished", "outcome", e.report.Outcome, "total", e.report.Total,
		"added", e.report.Added, "changed", e.report.Changed, "removed", e.report.Removed,
		"quarantined", e.report.Quarantined, "generation", e.report.Generation)
	return e.report, nil
}

// publish ends the sync. Stages the current generation holds exactly as
// listed were not staged (mirror.Entry.InBase): when nothing else changed
// either, only PATH.state records the sync (Writer.Refresh) and nothing
// else is written; otherwise Writer.Fill records what the registry no
// longer lists as removals, and Publish writes what changed (a delta, or
// a compaction).
func (e *engine) publish(ctx context.Context, fs *finalSet, info mirror.PublishInfo) (mirror.PublishResult, error) {
	dirty, err := e.w.Dirty()
	if err != nil {
		return mirror.PublishResult{}, err
	}
	base := e.m.Meta()
	same := !dirty && e.report.Removed == 0 && e.lostToQuarantine == 0 &&
		len(e.knownRefusals) == base.Quarantined && fs.ids.len() == base.Total
	if same {
		return e.w.Refresh(ctx, info)
	}
	keep := func(k mirror.Key) bool {
		_, listed := fs.ids.get(k)
		return listed
	}
	keepQ := func(k mirror.Key) bool { return e.knownRefusals[k] }
	if _, err := e.w.Fill(ctx, keep, keepQ); err != nil {
		return mirror.PublishResult{}, err
	}
	return e.w.Publish(ctx, info)
}

// clearStaging removes everything a foreign interrupted sync staged.
func (e *engine) clearStaging(ctx context.Context) error {
	_, err := e.w.Prune(ctx, nil)
	return err
}

// finalSet is the outcome of listing: which ids belong in the snapshot.
type finalSet struct {
	ids         idSet
	totals      map[string]int
	totalsOrder []string
}

// listing is one pass over one lifecycle.
type listing struct {
	lifecycle string
	// listed holds every key listed (a stage id, or the quarantine key of
	// bytes without a usable id) and the lifecycle the bytes declare, in
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

func (e *engine) listAll(ctx context.Context) (*finalSet, error) {
	fs := &finalSet{totals: map[string]int{}}
	passes := map[string][]*listing{}
	var refused []error
	// Each lifecycle's first page is requested while the one before it
	// is listed, so a lifecycle boundary does not cost a round trip.
	var next *firstPage
	defer func() {
		if next != nil {
			next.stop()
		}
		// The listings' id sets end here; fs has its own.
		for _, ps := range passes {
			for _, p := range ps {
				p.ids.close()
			}
		}
	}()
	for i, lc := range e.opts.Lifecycles {
		first := next
		if first == nil {
			first = e.requestFirst(ctx, lc)
		}
		next = nil
		if i+1 < len(e.opts.Lifecycles) {
			next = e.requestFirst(ctx, e.opts.Lifecycles[i+1])
		}
		l, err := e.list(ctx, lc, first, false)
		if err != nil {
			return nil, err
		}
		if l.refused != nil {
			l.ids.close()
			refused = append(refused, l.refused)
			e.report.Warnings = append(e.report.Warnings, e.redact(
				fmt.Sprintf("the registry refused to list %s stages, so they are not mirrored: %v", lc, l.refused)))
			e.log.Warn("lifecycle skipped", "lifecycle", lc, "err", l.refused)
			continue
		}
		passes[lc] = []*listing{l}
	}
	if len(refused) == len(e.opts.Lifecycles) {
		return nil, fmt.Errorf("%w: %w", ErrNoLifecycle, refused[0])
	}

	// Detect drift and relist the lifecycles it touched. When every
	// listing looks consistent on its own, confirm that no lifecycle's
	// total moved since it was listed: a stage that changed lifecycle
	// between two listings (from one not yet listed to one already
	// listed) is seen by neither, and only the totals show it.
	for round := 0; ; round++ {
		drifted, err := e.detectDrift(passes)
		if err != nil {
			return nil, err
		}
		if len(drifted) == 0 {
			if drifted, err = e.confirmTotals(ctx, passes); err != nil {
				return nil, err
			}
			if len(drifted) == 0 {
				break
			}
		}
		if round >= e.opts.MaxRelists {
			e.report.Drift.Unresolved = true
			break
		}
		e.report.Drift.Relists++
		for _, lc := range drifted {
			l, err := e.list(ctx, lc, e.requestFirst(ctx, lc), true)
			if err != nil {
				return nil, err
			}
			if l.refused != nil {
				l.ids.close()
				return nil, fmt.Errorf("relist %s stages: %w", lc, l.refused)
			}
			passes[lc] = append(passes[lc], l)
		}
	}

	// The last pass of each lifecycle is authoritative. An id that two
	// lifecycles' last passes both list, or that an earlier pass saw but
	// no last pass did, is asked about directly. (No map of all ids is
	// kept: at 100k stages every such map costs megabytes.)
	var ask []store.StageID
	asked := map[mirror.Key]bool{}
	askOnce := func(k mirror.Key) {
		if !asked[k] {
			asked[k] = true
			ask = append(ask, k.ID())
		}
	}
	allKeys, err := e.newKeys()
	if err != nil {
		return nil, err
	}
	for _, lc := range e.opts.Lifecycles {
		last := lastPass(passes, lc)
		if last == nil {
			continue
		}
		fs.totals[lc] = last.lastTotal
		fs.totalsOrder = append(fs.totalsOrder, lc)
		for _, kk := range last.ids.s {
			if !kk.k.Anonymous() && !e.quarantined[kk.k] {
				if err := allKeys.Append(kk); err != nil {
					_ = allKeys.Close()
					return nil, fmt.Errorf("collecting listed stages: %w", err)
				}
			}
		}
	}
	// Stable: of a key listed under two lifecycles, the first listed
	// stays (until the registry is asked about it).
	all := allKeys.All()
	slices.SortStableFunc(all, func(a, b keyKind) int { return a.k.Compare(b.k) })
	kept := all[:0]
	for i, kk := range all {
		if i > 0 && all[i-1].k == kk.k {
			askOnce(kk.k)
			continue
		}
		kept = append(kept, kk)
	}
	allKeys.Truncate(len(kept))
	fs.ids = idSet{sc: allKeys, s: slices.Clip(kept)}
	done := false
	defer func() {
		if !done {
			fs.ids.close()
		}
	}()
	for _, lc := range e.opts.Lifecycles {
		ps := passes[lc]
		for _, p := range ps[:max(0, len(ps)-1)] {
			for _, kk := range p.ids.s {
				if _, listed := fs.ids.get(kk.k); !listed && !kk.k.Anonymous() && !e.quarantined[kk.k] {
					askOnce(kk.k)
				}
			}
		}
	}
	if len(ask) > 0 {
		sort.Slice(ask, func(i, j int) bool { return ask[i] < ask[j] })
		if err := e.refetch(ctx, ask, fs); err != nil {
			return nil, err
		}
	}
	if e.report.Drift.Unresolved {
		e.report.Warnings = append(e.report.Warnings,
			"the registry kept changing while it was listed; some stages may be missing until the next sync")
	}
	done = true
	return fs, nil
}

// lastPass returns lc's latest listing, or nil when lc was not listed.
func lastPass(passes map[string][]*listing, lc string) *listing {
	ps := passes[lc]
	if len(ps) == 0 {
		return nil
	}
	return ps[len(ps)-1]
}

// detectDrift returns the lifecycles whose latest pass looks inconsistent.
func (e *engine) detectDrift(passes map[string][]*listing) ([]string, error) {
	var out []string
	// Every key of every lifecycle's latest pass, with the index of its
	// lifecycle in e.opts.Lifecycles, sorted: a key listed under two
	// lifecycles shows up as a run.
	type seen struct {
		k  mirror.Key
		lc uint8
	}
	sc, err := mirror.NewScratch[seen](e.scratchDir())
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	for i, lc := range e.opts.Lifecycles {
		last := lastPass(passes, lc)
		if last == nil {
			continue
		}
		for _, kk := range last.ids.s {
			if err := sc.Append(seen{kk.k, uint8(i)}); err != nil {
				return nil, fmt.Errorf("collecting listed stages: %w", err)
			}
		}
	}
	all := sc.All()
	slices.SortStableFunc(all, func(a, b seen) int { return a.k.Compare(b.k) })
	multi := map[string]bool{}
	for i := 1; i < len(all); i++ {
		if all[i].k != all[i-1].k {
			continue
		}
		other, lc := e.opts.Lifecycles[all[i-1].lc], e.opts.Lifecycles[all[i].lc]
		multi[lc], multi[other] = true, true
		e.driftReason(fmt.Sprintf("stage %s listed as both %s and %s", all[i].k, other, lc))
	}
	for _, lc := range e.opts.Lifecycles {
		l := lastPass(passes, lc)
		if l == nil {
			continue
		}
		bad := multi[lc]
		if l.hasTotal && l.firstTotal != l.lastTotal {
			e.driftReason(fmt.Sprintf("%s total changed from %d to %d while paging", lc, l.firstTotal, l.lastTotal))
			bad = true
		}
		if l.hasTotal && l.ids.len() != l.lastTotal {
			e.driftReason(fmt.Sprintf("%s listing returned %d distinct stages but the registry reports %d", lc, l.ids.len(), l.lastTotal))
			bad = true
		}
		if l.duplicates > 0 {
			e.driftReason(fmt.Sprintf("%s listing repeated %d stages", lc, l.duplicates))
			bad = true
		}
		if l.repeatedAt > 0 {
			e.driftReason(fmt.Sprintf("%s listing at offset %d repeated a whole earlier page", lc, l.repeatedAt))
			bad = true
		}
		if bad {
			out = append(out, lc)
		}
	}
	return out, nil
}

// confirmTotals asks the registry for each listed lifecycle's total again
// (one stage per request) and returns those whose total differs from what
// their latest listing saw.
// The requests run concurrently; results are read in lifecycle order.
func (e *engine) confirmTotals(ctx context.Context, passes map[string][]*listing) ([]string, error) {
	var lcs []string
	for _, lc := range e.opts.Lifecycles {
		if l := lastPass(passes, lc); l != nil && l.hasTotal {
			lcs = append(lcs, lc)
		}
	}
	results := make([]pageResult, len(lcs))
	var wg gosync.WaitGroup
	for i, lc := range lcs {
		wg.Go(func() {
			p, err := e.reg.ListPage(ctx, lc, 1, 0)
			results[i] = pageResult{p, err}
		})
	}
	wg.Wait()
	var out []string
	for i, lc := range lcs {
		l := lastPass(passes, lc)
		p, err := results[i].page, results[i].err
		if err != nil {
			return nil, fmt.Errorf("confirm the total of %s stages: %w", lc, err)
		}
		if p.HasTotal && p.Total != l.lastTotal {
			e.driftReason(fmt.Sprintf("%s total changed from %d to %d after it was listed", lc, l.lastTotal, p.Total))
			out = append(out, lc)
		}
	}
	return out, nil
}

func (e *engine) driftReason(r string) {
	e.report.Drift.Detected = true
	for _, have := range e.report.Drift.Reasons {
		if have == r {
			return
		}
	}
	if len(e.report.Drift.Reasons) < 50 {
		e.report.Drift.Reasons = append(e.report.Drift.Reasons, r)
	}
}

// pageResult is one fetched page, or the error that ended the listing.
type pageResult struct {
	page registry.Page
	err  error
}

// firstPage is a lifecycle's first page, requested ahead of its listing.
type firstPage struct {
	ch     chan pageResult
	cancel context.CancelFunc
}

// requestFirst starts fetching lc's first page. The caller passes the
// result to list, or calls stop.
func (e *engine) requestFirst(ctx context.Context, lc string) *firstPage {
	fctx, cancel := context.WithCancel(ctx)
	return &firstPage{ch: e.requestPage(fctx, lc, 0), cancel: cancel}
}

// requestPage fetches the page of lc at offset on its own goroutine. The
// channel is buffered: the goroutine ends whether or not anyone receives.
func (e *engine) requestPage(ctx context.Context, lc string, offset int) chan pageResult {
	ch := make(chan pageResult, 1)
	go func() {
		p, err := e.reg.ListPage(ctx, lc, e.opts.PageSize, offset)
		ch <- pageResult{p, err}
	}()
	return ch
}

// stop abandons a first page that list never took: it cancels the
// request and waits for it to end.
func (f *firstPage) stop() {
	f.cancel()
	<-f.ch
}

// list pages through one lifecycle from its first page (head), staging
// every stage. The next pages are fetched while the current one is
// verified and committed. list owns head, and ends its request on every
// return. relist is true when drift made the sync list lc again: a whole
// page repeating earlier pages is then a protocol error, where the first
// time it is drift (a bulk insert ahead of the offset can shift a page).
func (e *engine) list(ctx context.Context, lc string, head *firstPage, relist bool) (l *listing, err error) {
	listed, err := e.newKeys()
	if err != nil {
		head.stop()
		return nil, err
	}
	l = &listing{lifecycle: lc, listed: listed}
	// Fetches run under their own context so that an early return (error,
	// cancellation) stops them and waits for them: no request of this
	// sync outlives Sync.
	fctx, cancel := context.WithCancel(ctx)
	type pending struct {
		offset int
		ch     chan pageResult
	}
	var queue []pending
	defer func() {
		cancel()
		head.cancel()
		for _, p := range queue {
			<-p.ch
		}
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
	fetch := func(offset int) {
		queue = append(queue, pending{offset, e.requestPage(fctx, lc, offset)})
	}
	// Until the first page proves the registry honours the page size, one
	// request at a time; then up to opts.Prefetch pages are requested
	// ahead at offsets that assume full pages. A short page before the
	// end breaks that assumption: the speculative requests are dropped
	// and paging goes on one page at a time from where it really is.
	window := 1
	// The keys of the first and the previous page: a full page that only
	// repeats them (repeatsEarlierPage) ends the listing as drift, and is
	// a protocol error when a relist sees it again.
	var firstKeys, prevKeys map[mirror.Key]bool
	queue = append(queue, pending{0, head.ch})
	nextFetch := 0
	for first := true; ; first = false {
		front := queue[0]
		r := <-front.ch
		queue = queue[1:]
		offset := front.offset
		if r.err != nil {
			if first && refusable(r.err) {
				l.refused = r.err
				return l, nil
			}
			return nil, fmt.Errorf("list %s stages at offset %d: %w", lc, offset, r.err)
		}
		p := r.page
		if p.HasTotal {
			if first {
				l.firstTotal = p.Total
				e.expected += p.Total
			}
			l.lastTotal = p.Total
			l.hasTotal = true
		}
		n := len(p.Stages)
		nextOffset := offset + n
		more := n > 0 && p.HasTotal && nextOffset < p.Total
		if more {
			if n == e.opts.PageSize {
				if first {
					window = e.opts.Prefetch
				}
			} else {
				// The registry returned less than asked before the end:
				// the speculative offsets are wrong. Drop them.
				for _, q := range queue {
					<-q.ch
				}
				queue = queue[:0]
				window = 1
			}
			if len(queue) == 0 {
				nextFetch = nextOffset
			}
			for len(queue) < window && nextFetch < p.Total {
				fetch(nextFetch)
				nextFetch += e.opts.PageSize
			}
		}
		if n > 0 {
			if err := e.ingest(ctx, lc, offset, p.Stages, l); err != nil {
				return nil, err
			}
			keys := pageKeys(l.listed, n)
			if first {
				firstKeys = keys
			} else if repeatsEarlierPage(keys, n, firstKeys, prevKeys, e.opts.PageSize) {
				if relist {
					return nil, e.protocolError(lc, offset, n)
				}
				l.repeatedAt = offset
				return l, nil
			}
			prevKeys = keys
		}
		if !more {
			if n > 0 && !p.HasTotal {
				e.report.Warnings = appendOnce(e.report.Warnings,
					fmt.Sprintf("the registry sent no usable total for %s; only the first page was read", lc))
			}
			return l, nil
		}
	}
}

// refusable reports whether a first-page error means "the registry won't
// list this lifecycle" rather than "the registry is broken".
func refusable(err error) bool {
	return errors.Is(err, registry.ErrUnauthorized) || errors.Is(err, registry.ErrBadRequest)
}

func appendOnce(list []string, s string) []string {
	for _, have := range list {
		if have == s {
			return list
		}
	}
	return append(list, s)
}

// ingest verifies one page and commits it in a single transaction.
func (e *engine) ingest(ctx context.Context, lc string, offset int, raws []json.RawMessage, l *listing) error {
	results := e.prepareAll(raws)
	entries := make([]mirror.Entry, 0, len(results))
	for _, r := range results {
		if err := l.listed.Append(keyKind{r.key, r.entry.Lifecycle()}); err != nil {
			return fmt.Errorf("recording listed stages: %w", err)
		}
		if r.entry.VerifiedBefore() {
			e.report.VerifiedBefore++
		}
		if r.entry.Admitted() && r.entry.Reused() {
			e.report.Reused++
		}
		if e.stageable(r) {
			entries = append(entries, r.entry)
		}
	}
	progress, _ := json.Marshal(progressState{
		Upstream: e.reg.BaseURL(), Lifecycle: lc, Offset: offset + len(raws), Started: e.start,
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	// A page that changed nothing is not committed: an unchanged sync
	// writes nothing but PATH.state.
	if len(entries) > 0 {
		if err := e.commitAsync(entries, progress, lc, offset); err != nil {
			return err
		}
		e.report.Commits++
	}
	e.report.Pages++
	e.pages++
	e.stages += len(raws)
	if e.opts.Progress != nil {
		e.opts.Progress(Progress{Lifecycle: lc, Pages: e.pages, Stages: e.stages,
			Expected: e.expected, Elapsed: time.Since(e.clock)})
	}
	return nil
}

// stageable records the verdict on r and reports whether it must be
// staged: not when identical admitted bytes are staged already
// (mirror.Entry.Reused), nor when the current snapshot holds exactly these
// bytes with this verdict (mirror.Entry.InBase), which the next
// generation keeps as it is.
func (e *engine) stageable(r prepared) bool {
	if r.entry.Admitted() {
		e.markGood(r.key)
	} else {
		e.markQuarantined(r.key)
	}
	// The latest verdict on the key decides: a refusal the snapshot holds
	// as it is, or anything else, which supersedes it.
	if !r.entry.InBase() || r.entry.Admitted() {
		delete(e.knownRefusals, r.key)
		return !r.entry.InBase() && !(r.entry.Admitted() && r.entry.Reused())
	}
	e.knownRefusals[r.key] = true
	return false
}

// commitAsync starts committing one page in its own transaction while the
// caller verifies the next page. At most one commit is in flight: this
// first waits for (and reports the error of) the previous one. The staged
// reads done while verifying run in read transactions, which bbolt allows
// beside the one write transaction.
func (e *engine) commitAsync(entries []mirror.Entry, progress []byte, lc string, offset int) error {
	if err := e.waitCommit(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		if err := e.w.PutBatch(entries, progress); err != nil {
			done <- fmt.Errorf("commit page of %s stages at offset %d: %w", lc, offset, err)
			return
		}
		e.log.Debug("page committed", "lifecycle", lc, "offset", offset, "staged", len(entries))
		done <- nil
	}()
	e.inflight = done
	return nil
}

// waitCommit waits for the commit in flight, if any.
func (e *engine) waitCommit() error {
	if e.inflight == nil {
		return nil
	}
	err := <-e.inflight
	e.inflight = nil
	return err
}

// markQuarantined records that k's latest bytes were quarantined.
func (e *engine) markQuarantined(k mirror.Key) {
	if e.quarantined[k] {
		return
	}
	e.quarantined[k] = true
	e.report.Quarantined++
	e.report.QuarantinedIDs = append(e.report.QuarantinedIDs, k.String())
}

// markGood records that key's latest bytes verified: a stage quarantined
// by an earlier pass of this sync whose bytes have since been fixed
// upstream is good again (PutBatch replaced its quarantine entry).
func (e *engine) markGood(k mirror.Key) {
	if !e.quarantined[k] {
		return
	}
	delete(e.quarantined, k)
	e.report.Quarantined--
	if i := slices.Index(e.report.QuarantinedIDs, k.String()); i >= 0 {
		e.report.QuarantinedIDs = slices.Delete(e.report.QuarantinedIDs, i, i+1)
	}
}

// prepared is one stage after the admission gate, with its key.
type prepared struct {
	key   mirror.Key // the id, or the SHA-256 of bytes without one
	entry mirror.Entry
}

// prepareAll runs a page's stages through the mirror's admission gate on
// opts.Workers goroutines; results keep page order.
func (e *engine) prepareAll(raws []json.RawMessage) []prepared {
	out := make([]prepared, len(raws))
	var wg gosync.WaitGroup
	next := make(chan int)
	for w := 0; w < e.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = e.prepare(raws[i])
			}
		}()
	}
	for i := range raws {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// prepare admits one stage. The gate verifies it (or reuses the report of
// identical bytes already staged or in the current snapshot) and applies
// the mirror's trust policy.
func (e *engine) prepare(raw json.RawMessage) prepared {
	ent := e.w.Admit(raw)
	return prepared{key: ent.Key(), entry: ent}
}

// refetch asks the registry about ids whose listing was inconsistent:
// gone means deleted, found means moved (its current bytes are staged).
func (e *engine) refetch(ctx context.Context, ids []store.StageID, fs *finalSet) error {
	type result struct {
		id  store.StageID
		raw json.RawMessage
		err error
	}
	results := make([]result, len(ids))
	var wg gosync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			raw, err := e.reg.GetStage(ctx, id)
			results[i] = result{id, raw, err}
		}()
	}
	wg.Wait()
	e.report.Drift.Refetched += len(ids)
	var found []json.RawMessage
	var asked []store.StageID
	for _, r := range results {
		switch {
		case errors.Is(r.err, store.ErrNotFound):
			e.report.Drift.Deleted++
			fs.ids.deleteID(r.id)
			if k, ok := mirror.KeyOfID(r.id); ok {
				e.gone[k] = true
			}
		case r.err != nil:
			return fmt.Errorf("fetch stage %s to repair drift: %w", r.id, r.err)
		default:
			found = append(found, r.raw)
			asked = append(asked, r.id)
		}
	}
	var entries []mirror.Entry
	for i, p := range e.prepareAll(found) {
		if id := p.entry.ID(); id != "" && id != asked[i] {
			// Never stage what was not asked for: the id stays out of
			// the snapshot until a sync sees it listed.
			fs.ids.deleteID(asked[i])
			e.report.Drift.Unresolved = true
			e.report.Warnings = append(e.report.Warnings, e.redact(
				fmt.Sprintf("the registry answered a request for stage %s with stage %s; %s is left out", asked[i], id, asked[i])))
			continue
		}
		stage := e.stageable(p)
		if !p.entry.Admitted() {
			fs.ids.deleteID(asked[i])
			if stage {
				entries = append(entries, p.entry)
			}
			continue
		}
		e.report.Drift.Moved++
		if err := fs.ids.set(p.key, p.entry.Lifecycle()); err != nil {
			return fmt.Errorf("recording refetched stages: %w", err)
		}
		if stage {
			entries = append(entries, p.entry)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	if err := e.w.PutBatch(entries, nil); err != nil {
		return fmt.Errorf("commit refetched stages: %w", err)
	}
	e.report.Commits++
	return nil
}

// dropUnlisted removes staged stages the registry no longer lists (left
// from an interrupted run, or deleted upstream).
func (e *engine) dropUnlisted(ctx context.Context, fs *finalSet) error {
	_, err := e.w.Prune(ctx, func(k mirror.Key) bool {
		_, listed := fs.ids.get(k)
		return listed || e.quarantined[k]
	})
	return err
}

// countChanges compares the staged set with the published snapshot.
func (e *engine) countChanges(ctx context.Context, fs *finalSet) error {
	snap, err := e.m.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Close()
	old := 0
	for rec, err := range snap.Records(ctx, store.LifecycleUnknown) {
		if err != nil {
			return fmt.Errorf("read the current snapshot: %w", err)
		}
		k, _ := mirror.KeyOfID(rec.ID)
		if _, ok := fs.ids.get(k); !ok {
			if e.quarantined[k] {
				e.lostToQuarantine++
			} else {
				e.report.Removed++
				if len(e.report.RemovedIDs) < 1000 {
					e.report.RemovedIDs = append(e.report.RemovedIDs, string(rec.ID))
				}
			}
			continue
		}
		old++
		raw, ok, err := e.w.Staged(rec.ID)
		if err != nil {
			return err
		}
		switch {
		case !ok || bytes.Equal(raw, rec.Raw):
			// Not staged: listed with exactly the snapshot's bytes.
			e.report.Unchanged++
		default:
			s, err := store.DecodeStage(raw)
			if err == nil && s.Lifecycle != rec.Lifecycle {
				e.report.LifecycleChanged++
			} else {
				e.report.Changed++
			}
		}
	}
	e.report.Added = fs.ids.len() - old
	e.report.ByLifecycle = map[string]int{}
	for _, kk := range fs.ids.s {
		e.report.ByLifecycle[kk.kind.Name()]++
	}
	return nil
}

// normalize gives every list of the report a non-nil value, so its JSON
// holds empty arrays rather than nulls.
func (r *Report) normalize() {
	for _, p := range []*[]string{&r.QuarantinedIDs, &r.RemovedIDs, &r.Warnings, &r.Drift.Reasons} {
		if *p == nil {
			*p = []string{}
		}
	}
	if r.ByLifecycle == nil {
		r.ByLifecycle = map[string]int{}
	}
	for _, k := range store.AllLifecycleKinds() {
		r.ByLifecycle[k.Name()] += 0 // every lifecycle, 0 when empty
	}
}
