package sync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
)

// Registry is what a sync needs from a noether registry. *registry.Client
// implements it; tests may substitute their own. A Registry that also has
// a Redact(string) string method, as *registry.Client does (it removes the
// API key), gets every quarantine reason and warning the sync builds from
// its answers passed through it. A sync calls its methods from several
// goroutines at once (pages are requested ahead, and stages refetched in
// parallel), never after Sync returns.
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

// allLifecycles lists every lifecycle a sync fetches, in fetch order.
func allLifecycles() []string { return []string{"draft", "active", "deprecated", "tombstone"} }

// Options tunes a sync. The zero value is ready to use. Sync reads it
// and keeps no reference to its slices after it returns.
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
	// NoFeed lists every page even when the upstream is a
	// noether-mirror serving a change feed (see Sync).
	NoFeed bool
	// Logger receives warnings and a summary; nil discards.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Progress describes a running sync: a plain value, passed to
// Options.Progress.
type Progress struct {
	Lifecycle string
	Pages     int
	Stages    int
	// Expected is the number of stages the registry reported so far
	// (the sum of totals of the lifecycles listed), 0 when unknown.
	Expected int
	Elapsed  time.Duration
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
	// Feed names the change stream staged from ("from-to"), "" for a
	// listing: a run resumes only what the same kind of run staged.
	Feed string `json:"feed,omitempty"`
}

// Sync pulls reg into m and publishes a new snapshot when anything
// changed. It holds m's writer lock for its whole run; a concurrent sync
// fails fast with mirror.ErrBusy. On error or cancellation the published
// snapshot is untouched and the staged work is kept for the next run.
//
// When reg is also a FeedSource and the upstream is another
// noether-mirror serving a change feed, Sync pulls only what changed
// since the upstream generation m last proved equal to, admits it
// through the same gate, and publishes only if the result has the
// upstream's digest; otherwise (and for a plain registry) it lists every
// page. Report.Feed says which, and why.
func Sync(ctx context.Context, m *mirror.Mirror, reg Registry, opts Options) (Report, error) {
	var fr FeedReport
	if src, ok := reg.(FeedSource); ok && !opts.NoFeed {
		rep, next, err := syncFromFeed(ctx, m, reg, src, opts)
		if next == feedDone {
			return rep, err
		}
		fr = rep.Feed
	}
	e := newEngine(m, reg, opts)
	e.rep.feedFellBack(fr)
	return e.run(ctx)
}

// engine is one sync's state. Its fields are used by the sync's
// goroutine only, except where noted.
type engine struct {
	m      *mirror.Mirror
	reg    Registry
	lister lister
	opts   Options
	log    *slog.Logger
	start  time.Time // by opts.Now, for what is stored
	clock  time.Time // by the real clock, for durations

	// redact removes the registry's secret from text taken from its
	// answers (the identity when the Registry is no redactor).
	redact func(string) string

	w *mirror.Writer
	// rep builds the report; it alone changes it.
	rep *reportBuilder

	// gone holds the keys a 404 proved deleted during drift repair.
	gone map[mirror.Key]bool
	// knownRefusals holds the keys quarantined this sync exactly as the
	// current snapshot quarantines them, and so not staged.
	knownRefusals map[mirror.Key]bool
	// lostToQuarantine counts stages of the current snapshot whose
	// latest bytes were quarantined: served now, not after publish.
	lostToQuarantine int
	// feedTag is progressState.Feed for this run.
	feedTag string
	// inflight reports the page commit running beside verification.
	inflight chan error
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
		opts.Lifecycles = allLifecycles()
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
		lister: lister{reg: reg, pageSize: opts.PageSize, prefetch: opts.Prefetch},
		rep:    newReportBuilder(reg.BaseURL()),
		gone:   map[mirror.Key]bool{}, knownRefusals: map[mirror.Key]bool{}}
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

// run is the sync: begin, list, compare, guard, publish. Once the writer
// is taken, every return finishes the report and, unless the sync
// published, ends the writer (Writer.Fail decides what becomes of the
// staging file).
func (e *engine) run(ctx context.Context) (rep Report, err error) {
	e.start, e.clock = e.opts.Now(), time.Now()
	w, err := e.m.BeginSync(ctx)
	if err != nil {
		return e.rep.r, err
	}
	defer func() { rep = e.rep.finish(time.Since(e.clock)) }()
	// A refused stage's reasons quote its bytes, and quarantine lists it
	// under the id it claims: the gate passes both through the registry's
	// redactor before anything stores or reports them.
	w.RedactWith(e.redact)
	e.w = w
	published := false
	defer func() {
		if !published {
			if ferr := w.Fail(err); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	if err := e.begin(ctx); err != nil {
		return Report{}, err
	}
	final, err := e.listAll(ctx)
	if err != nil {
		return Report{}, err
	}
	defer final.ids.close()
	listed := time.Now()
	e.rep.listedIn(listed.Sub(e.clock))
	e.log.Debug("listed every lifecycle", "stages", final.ids.len(), "pages", e.rep.r.Pages, "elapsed", time.Since(e.clock).Round(time.Millisecond))
	if err := e.compare(ctx, final); err != nil {
		return Report{}, err
	}
	res, err := e.publish(ctx, final)
	if err != nil {
		return Report{}, fmt.Errorf("publish snapshot: %w", err)
	}
	published = true
	e.rep.publishedIn(time.Since(listed))
	e.log.Debug("published", "generation", res.Generation, "unchanged", res.Unchanged, "elapsed", time.Since(e.clock).Round(time.Millisecond))
	e.rep.published(res)
	r := &e.rep.r
	e.log.Debug("sync finished", "outcome", r.Outcome, "total", r.Total,
		"added", r.Added, "changed", r.Changed, "removed", r.Removed,
		"quarantined", r.Quarantined, "generation", r.Generation)
	return Report{}, nil
}

// begin notes a change of upstream, and resumes an interrupted sync of
// the same upstream or clears what one of another staged.
func (e *engine) begin(ctx context.Context) error {
	if up := e.m.Meta().Upstream; up != "" && up != e.reg.BaseURL() {
		e.rep.switchedUpstream(up)
		e.log.Warn("switching upstream", "from", up, "to", e.reg.BaseURL())
	}
	if !e.w.Resumed() {
		return nil
	}
	var prev progressState
	if p := e.w.Progress(); p != nil && json.Unmarshal(p, &prev) == nil && prev.Upstream == e.reg.BaseURL() && prev.Feed == e.feedTag {
		e.rep.resumed()
		e.log.Info("resuming an interrupted sync", "started", prev.Started, "lifecycle", prev.Lifecycle, "offset", prev.Offset)
		return nil
	}
	// Staged stages came from elsewhere: start clean.
	_, err := e.w.Prune(ctx, nil)
	return err
}

// compare settles the staging against the final set and the current
// snapshot, and refuses (ErrRefused) a sync that would lose too much.
func (e *engine) compare(ctx context.Context, final *finalSet) error {
	if e.rep.r.Drift.Unresolved {
		if err := e.keepUnproven(ctx, final); err != nil {
			return err
		}
	}
	if err := e.dropUnlisted(ctx, final); err != nil {
		return err
	}
	if err := e.countChanges(ctx, final); err != nil {
		return err
	}
	if r := e.guardLoss(final); r != nil {
		return e.refuse(r)
	}
	e.log.Debug("compared with the current snapshot", "elapsed", time.Since(e.clock).Round(time.Millisecond))
	return nil
}

// publish ends the sync. Stages the current generation holds exactly as
// listed were not staged (mirror.Entry.InBase): when nothing else changed
// either, only PATH.state records the sync (Writer.Refresh) and nothing
// else is written; otherwise Writer.Fill records what the registry no
// longer lists as removals, and Publish writes what changed (a delta, or
// a compaction).
func (e *engine) publish(ctx context.Context, fs *finalSet) (mirror.PublishResult, error) {
	totals := map[string]int{}
	for _, lc := range fs.totalsOrder {
		totals[lc] = fs.totals[lc]
	}
	info := mirror.PublishInfo{Upstream: e.reg.BaseURL(), SyncTime: e.opts.Now(), UpstreamTotals: totals}
	dirty, err := e.w.Dirty()
	if err != nil {
		return mirror.PublishResult{}, err
	}
	base := e.m.Meta()
	same := !dirty && e.rep.r.Removed == 0 && e.lostToQuarantine == 0 &&
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
