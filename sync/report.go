package sync

import (
	"fmt"
	"slices"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

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
// id that left the mirror is counted as removed or quarantined. It is a
// plain value, owned by whoever Sync returned it to.
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
	Refusal *Refusal `json:"refusal"`
	// Feed says whether the content came from the upstream's change
	// feed, and if not, why.
	Feed       FeedReport `json:"feed"`
	DurationMS int64      `json:"duration_ms"`
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

// maxDriftReasons bounds Drift.Reasons.
const maxDriftReasons = 50

// maxRemovedIDs bounds Report.RemovedIDs.
const maxRemovedIDs = 1000

// reportBuilder is the one writer of a sync's Report: the engine reads
// r, and changes it only through these methods. It also keeps the keys
// whose latest bytes this sync quarantined, which QuarantinedIDs lists.
// It is used by the sync's goroutine only.
type reportBuilder struct {
	r Report
	// quarantine holds the keys whose latest bytes failed this sync.
	quarantine map[mirror.Key]bool
}

func newReportBuilder(upstream string) *reportBuilder {
	return &reportBuilder{r: Report{Upstream: upstream}, quarantine: map[mirror.Key]bool{}}
}

// switchedUpstream records that the mirror held prev's content.
func (b *reportBuilder) switchedUpstream(prev string) {
	b.r.PreviousUpstream = prev
	b.warn(fmt.Sprintf("the mirror was synced from %s; this sync replaces its content with %s's", prev, b.r.Upstream))
}

// resumed records that the sync goes on from an interrupted one.
func (b *reportBuilder) resumed() { b.r.Resumed = true }

// warn adds a warning.
func (b *reportBuilder) warn(s string) { b.r.Warnings = append(b.r.Warnings, s) }

// warnOnce adds a warning unless the report has it already.
func (b *reportBuilder) warnOnce(s string) { b.r.Warnings = appendOnce(b.r.Warnings, s) }

// driftReason records drift, and why (once each, up to maxDriftReasons).
func (b *reportBuilder) driftReason(s string) {
	b.r.Drift.Detected = true
	if len(b.r.Drift.Reasons) < maxDriftReasons {
		b.r.Drift.Reasons = appendOnce(b.r.Drift.Reasons, s)
	}
}

// relisted counts one more round of relisting.
func (b *reportBuilder) relisted() { b.r.Drift.Relists++ }

// unresolved records that the listings never settled.
func (b *reportBuilder) unresolved() { b.r.Drift.Unresolved = true }

// refetched counts ids asked about one by one.
func (b *reportBuilder) refetched(n int) { b.r.Drift.Refetched += n }

// deleted counts a refetched id the registry no longer has.
func (b *reportBuilder) deleted() { b.r.Drift.Deleted++ }

// moved counts a refetched id the registry still has.
func (b *reportBuilder) moved() { b.r.Drift.Moved++ }

// keptUnproven records n stages kept from the last snapshot although an
// unresolved listing left them out.
func (b *reportBuilder) keptUnproven(n int) { b.r.Drift.Kept = n }

// quarantined records that k's latest bytes were quarantined.
func (b *reportBuilder) quarantined(k mirror.Key) {
	if b.quarantine[k] {
		return
	}
	b.quarantine[k] = true
	b.r.Quarantined++
	b.r.QuarantinedIDs = append(b.r.QuarantinedIDs, k.String())
}

// good records that k's latest bytes verified: a stage quarantined by an
// earlier pass of this sync whose bytes have since been fixed upstream
// is good again (PutBatch replaced its quarantine entry).
func (b *reportBuilder) good(k mirror.Key) {
	if !b.quarantine[k] {
		return
	}
	delete(b.quarantine, k)
	b.r.Quarantined--
	if i := slices.Index(b.r.QuarantinedIDs, k.String()); i >= 0 {
		b.r.QuarantinedIDs = slices.Delete(b.r.QuarantinedIDs, i, i+1)
	}
}

// quarantinedKeys returns the keys whose latest bytes this sync
// quarantined.
func (b *reportBuilder) quarantinedKeys() []mirror.Key {
	out := make([]mirror.Key, 0, len(b.quarantine))
	for k := range b.quarantine {
		out = append(out, k)
	}
	return out
}

// isQuarantined reports whether k's latest bytes were quarantined.
func (b *reportBuilder) isQuarantined(k mirror.Key) bool { return b.quarantine[k] }

// admitted counts what the gate reused for a listed stage.
func (b *reportBuilder) admitted(e *mirror.Entry) {
	if e.VerifiedBefore() {
		b.r.VerifiedBefore++
	}
	if e.Admitted() && e.Reused() {
		b.r.Reused++
	}
}

// page counts a listed page.
func (b *reportBuilder) page() { b.r.Pages++ }

// commit counts a staging transaction.
func (b *reportBuilder) commit() { b.r.Commits++ }

// removed counts a stage of the current snapshot the registry no longer
// lists (the first maxRemovedIDs are named).
func (b *reportBuilder) removed(id store.StageID) {
	b.r.Removed++
	if len(b.r.RemovedIDs) < maxRemovedIDs {
		b.r.RemovedIDs = append(b.r.RemovedIDs, string(id))
	}
}

// unchanged counts a stage listed with the current snapshot's bytes.
func (b *reportBuilder) unchanged() { b.r.Unchanged++ }

// changed counts a stage listed with other bytes: lifecycleOnly when
// what changed is its lifecycle.
func (b *reportBuilder) changed(lifecycleOnly bool) {
	if lifecycleOnly {
		b.r.LifecycleChanged++
	} else {
		b.r.Changed++
	}
}

// listed records the final set: added of its stages are new, and
// byLifecycle counts them all.
func (b *reportBuilder) listed(added int, byLifecycle map[string]int) {
	b.r.Added, b.r.ByLifecycle = added, byLifecycle
}

// refused records a refusal; the snapshot still served is generation gen
// with total stages.
func (b *reportBuilder) refused(r *Refusal, gen uint64, total int) {
	b.r.Outcome, b.r.Refusal = OutcomeRefused, r
	b.r.Generation, b.r.Total = gen, total
}

// published records how the sync ended: res, from Publish or Refresh.
func (b *reportBuilder) published(res mirror.PublishResult) {
	b.r.Generation, b.r.Total, b.r.Published = res.Generation, res.Total, !res.Unchanged
	switch {
	case b.r.Quarantined > 0 || b.r.Drift.Unresolved:
		b.r.Outcome = OutcomePartial
	case res.Unchanged:
		b.r.Outcome = OutcomeUnchanged
	default:
		b.r.Outcome = OutcomeOK
	}
}

// listedIn and publishedIn record the time the two phases took.
func (b *reportBuilder) listedIn(d time.Duration)    { b.r.ListingMS = d.Milliseconds() }
func (b *reportBuilder) publishedIn(d time.Duration) { b.r.PublishMS = d.Milliseconds() }

// feedFellBack starts the report of a sync that follows an attempt to
// use the change feed (fr: why it could not): a listing, or a read of the
// upstream's whole content. A fallback after a stream was asked for is a
// warning; an upstream that serves no feed is not.
func (b *reportBuilder) feedFellBack(fr FeedReport) {
	b.r.Feed = fr
	if fr.Fallback != "" && fr.Requests > 1 {
		b.warn(fr.Fallback)
	}
}

// feedRequest counts a request for the stream from one generation to
// another.
func (b *reportBuilder) feedRequest(from, to uint64) {
	b.r.Feed.Requests++
	b.feedSpan(from, to)
}

// feedSpan records the upstream generations the sync spans: from to to
// (to to itself when the mirror already equals it).
func (b *reportBuilder) feedSpan(from, to uint64) { b.r.Feed.From, b.r.Feed.To = from, to }

// feedItems records how many items the stream carried, and read its
// bytes.
func (b *reportBuilder) feedItems(n int)     { b.r.Feed.Items = n }
func (b *reportBuilder) feedBytes(n int64)   { b.r.Feed.Bytes += n }
func (b *reportBuilder) feedUsed()           { b.r.Feed.Used = true }
func (b *reportBuilder) unchangedFeed(n int) { b.r.Unchanged = n }

// fromFeed records what a sync from a change feed changed: c, as the
// published generation counts it, and the upstream's counts by
// lifecycle.
func (b *reportBuilder) fromFeed(c mirror.Changes, byLifecycle map[string]int, total int) {
	b.r.Added, b.r.Changed, b.r.LifecycleChanged = c.Added, c.Changed, c.Lifecycle
	b.r.Unchanged = max(0, total-c.Added-c.Changed-c.Lifecycle)
	b.r.ByLifecycle = byLifecycle
}

// finish returns the report of a sync that took d.
func (b *reportBuilder) finish(d time.Duration) Report {
	b.r.DurationMS = d.Milliseconds()
	b.r.normalize()
	return b.r
}

// appendOnce appends s to list unless list holds it already.
func appendOnce(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
