package sync

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// ErrRefused means a sync did not publish because what it found looked
// like a loss it could not prove: it would have removed more of the
// mirror than Options.MaxRemove allows. The last snapshot is intact; the
// Report says what would have gone, and Meta().Refused records it.
var ErrRefused = errors.New("sync refused to publish")

// ErrProtocol means the upstream answered in a way the registry protocol
// rules out (a page repeating the stages of an earlier page of the same
// listing, say). Nothing was published.
var ErrProtocol = errors.New("the upstream broke the registry protocol")

// RemoveLimit bounds how many of the mirror's stages one sync may remove
// (or lose to quarantine) before it refuses to publish; see
// Options.MaxRemove. The zero value is the default: at most 10%, and
// never every stage. It is a plain value.
type RemoveLimit struct {
	count   int
	percent float64
	pct     bool // percent, not count, is the limit
	set     bool
}

// DefaultRemovePercent is the share of the mirror a sync may remove when
// Options.MaxRemove is not set.
const DefaultRemovePercent = 10

// MaxRemoveCount allows removing at most n stages (n ≥ 0).
func MaxRemoveCount(n int) RemoveLimit { return RemoveLimit{count: max(n, 0), set: true} }

// MaxRemovePercent allows removing at most p percent of the mirror's
// stages (0 ≤ p ≤ 100); 100 allows emptying it.
func MaxRemovePercent(p float64) RemoveLimit {
	return RemoveLimit{percent: min(max(p, 0), 100), pct: true, set: true}
}

// ParseRemoveLimit parses "N" (a number of stages) or "P%" (a share of
// the mirror), the forms of `mirror sync --max-remove`.
func ParseRemoveLimit(s string) (RemoveLimit, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v > 100 || math.IsNaN(v) {
			return RemoveLimit{}, fmt.Errorf("%q is not a percentage from 0%% to 100%%", s)
		}
		return MaxRemovePercent(v), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return RemoveLimit{}, fmt.Errorf("%q is neither a number of stages (e.g. 500) nor a percentage (e.g. 25%%)", s)
	}
	return MaxRemoveCount(n), nil
}

// String is the limit as --max-remove takes it.
func (l RemoveLimit) String() string {
	switch {
	case !l.set:
		return strconv.Itoa(DefaultRemovePercent) + "%"
	case l.pct:
		return strconv.FormatFloat(l.percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(l.count)
}

// allows reports whether losing lost of total stages (leaving left) is
// within the limit. The default never allows emptying a mirror.
func (l RemoveLimit) allows(lost, total, left int) bool {
	if lost == 0 {
		return true
	}
	if !l.set {
		return left > 0 && float64(lost) <= float64(total)*DefaultRemovePercent/100
	}
	if l.pct {
		return float64(lost) <= float64(total)*l.percent/100
	}
	return lost <= l.count
}

// Refusal is what a refused sync would have done. It is a plain value.
type Refusal struct {
	// WouldRemove of Total stages would have left the mirror: Removed
	// ones and LostToQuarantine ones (served now, failing verification
	// or the trust policy upstream).
	WouldRemove      int    `json:"would_remove"`
	LostToQuarantine int    `json:"lost_to_quarantine"`
	Total            int    `json:"total"`
	Limit            string `json:"limit"`
	Reason           string `json:"reason"`
}

// guardLoss refuses a sync that would remove more of the mirror than
// opts.MaxRemove allows. It runs after countChanges, before publish.
func (e *engine) guardLoss(fs *finalSet) *Refusal {
	total := e.m.Meta().Total
	lost := e.rep.r.Removed + e.lostToQuarantine
	if e.opts.MaxRemove.allows(lost, total, fs.ids.len()) {
		return nil
	}
	r := &Refusal{WouldRemove: lost, LostToQuarantine: e.lostToQuarantine, Total: total, Limit: e.opts.MaxRemove.String()}
	r.Reason = fmt.Sprintf("this sync would remove %d of the mirror's %d stages (%.0f%%; the limit is %s)", lost, total, 100*float64(lost)/float64(max(total, 1)), r.Limit)
	var why string
	switch {
	case e.rep.r.PreviousUpstream != "":
		why = fmt.Sprintf("the mirror was synced from %s and this sync reads %s", e.rep.r.PreviousUpstream, e.reg.BaseURL())
	case fs.ids.len() == 0 && e.listedNothing(fs):
		why = fmt.Sprintf("%s answered no stages at all (total 0 for every lifecycle): an empty or freshly restarted registry, or the wrong URL", e.reg.BaseURL())
	case e.lostToQuarantine > 0:
		why = fmt.Sprintf("%d stages the mirror serves now fail verification or the trust policy (--trusted-keys): tampered upstream bytes, or a policy that leaves out signers the mirror relied on", e.lostToQuarantine)
	case fs.ids.len() == 0:
		why = "nothing would be left"
	default:
		why = "a registry rarely loses that much between two syncs"
	}
	r.Reason += ", and " + why
	return r
}

// listedNothing reports whether every lifecycle listed reported total 0.
func (e *engine) listedNothing(fs *finalSet) bool {
	for _, n := range fs.totals {
		if n != 0 {
			return false
		}
	}
	return true
}

// refuse records the refusal and ends the writer without publishing.
func (e *engine) refuse(r *Refusal) error {
	// What is still served: the snapshot the sync began from.
	meta := e.m.Meta()
	e.rep.refused(r, meta.Generation, meta.Total)
	err := e.w.Refuse(mirror.SyncRefusal{
		At: e.opts.Now(), Upstream: e.reg.BaseURL(), Reason: r.Reason, WouldRemove: r.WouldRemove, Total: r.Total,
	})
	if err != nil {
		e.log.Warn("could not record the refused sync", "err", err)
	}
	accept := "If the registry really shrank"
	if r.LostToQuarantine > 0 {
		accept = "If those stages really must go (the policy is right, or the upstream really changed them)"
	}
	return fmt.Errorf("%w: %s. The last snapshot is intact. %s, run again with --max-remove %d (or --max-remove 100%%) to accept it",
		ErrRefused, r.Reason, accept, r.WouldRemove)
}

// keepUnproven keeps, from the current snapshot, every stage that drift
// left out of the final set without proving it gone (a 404 from the
// registry for that id): a listing that never settled proves nothing.
// Each goes through the admission gate again, like any stage that enters.
func (e *engine) keepUnproven(ctx context.Context, fs *finalSet) error {
	snap, err := e.m.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Close()
	var keep []keyKind
	var batch []mirror.Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := e.w.PutBatch(batch, nil); err != nil {
			return fmt.Errorf("keeping stages drift could not resolve: %w", err)
		}
		e.rep.commit()
		batch = batch[:0]
		return nil
	}
	for rec, err := range snap.Records(ctx, store.LifecycleUnknown) {
		if err != nil {
			return fmt.Errorf("read the current snapshot: %w", err)
		}
		k, ok := mirror.KeyOfID(rec.ID)
		if _, listed := fs.ids.get(k); !ok || listed || e.rep.isQuarantined(k) || e.gone[k] {
			continue
		}
		ent := e.w.Admit(rec.Raw)
		if !ent.Admitted() {
			continue // the policy no longer lets it in: counted as removed
		}
		keep = append(keep, keyKind{k, ent.Lifecycle()})
		if !ent.Reused() && !ent.InBase() { // else Fill stages it, if need be
			batch = append(batch, ent)
		}
		if len(batch) == 200 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if err := fs.ids.addAll(keep); err != nil {
		return fmt.Errorf("keeping stages drift could not resolve: %w", err)
	}
	e.rep.keptUnproven(len(keep))
	if len(keep) > 0 {
		e.rep.warn(fmt.Sprintf(
			"the registry's listings never settled: %d stages it did not list are kept from the last snapshot, since their removal is not proven; the next sync checks them again", len(keep)))
	}
	return nil
}
