package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// trustChunk is how many stages a trust view build reads per Page call.
const trustChunk = 1000

// numKinds sizes trustView.byKind: every LifecycleKind up to Tombstone.
const numKinds = int(store.LifecycleTombstone) + 1

// trustView is a snapshot as Options.Trust lets the server serve it: the
// ids of the stages the policy accepts, per lifecycle kind and in id
// order, and the stats of those stages. It is built once per snapshot
// (generation and digest), decoding every stage once, and is immutable
// afterwards, so any number of requests may share it. It costs about 100
// bytes per accepted stage.
type trustView struct {
	gen    uint64
	digest string
	// byKind[k] holds the accepted ids of lifecycle kind k in id order;
	// byKind[store.LifecycleUnknown] holds every accepted id, as
	// Snapshot.Page's LifecycleUnknown listing does.
	byKind [numKinds][]store.StageID
	stats  store.Stats
	// untrusted counts the snapshot's stages the policy holds back:
	// unsigned, signed by a key not in the policy, or not decodable.
	untrusted int
	// tag is a short digest of the accepted id set. ETags include it, so
	// a different policy over the same snapshot never revalidates a
	// cached answer computed under another one.
	tag string
}

// matches reports whether v was built from the snapshot info describes.
func (v *trustView) matches(info Info) bool {
	return v != nil && v.gen == info.Generation && v.digest == info.Digest
}

// served returns the number of stages v serves.
func (v *trustView) served() int { return len(v.byKind[store.LifecycleUnknown]) }

// has reports whether id is served.
func (v *trustView) has(id store.StageID) bool {
	_, ok := slices.BinarySearch(v.byKind[store.LifecycleUnknown], id)
	return ok
}

// page returns the raw JSON of the accepted stages at positions
// [offset, offset+limit) of kind's listing, read from snap (which must be
// the snapshot v was built from), and the listing's length. It costs
// limit GetRaw calls whatever the offset.
func (v *trustView) page(ctx context.Context, snap Snapshot, kind store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	if int(kind) >= numKinds {
		return nil, 0, fmt.Errorf("lifecycle kind %d has no listing", kind)
	}
	ids := v.byKind[kind]
	total := len(ids)
	if offset >= total || limit <= 0 {
		return nil, total, nil
	}
	ids = ids[offset:min(total, offset+limit)]
	raws := make([][]byte, len(ids))
	for i, id := range ids {
		raw, err := snap.GetRaw(ctx, id)
		if err != nil {
			// A NotFound here means the source changed a snapshot's
			// content under the same generation and digest.
			return nil, 0, fmt.Errorf("stage %s of the trusted listing: %w", id, err)
		}
		raws[i] = raw
	}
	return raws, total, nil
}

// errListingOrder reports a Source whose LifecycleUnknown listing is not
// in strictly increasing id order, breaking the Snapshot contract.
var errListingOrder = errors.New("the snapshot's listing is not in strictly increasing id order")

// buildTrustView reads snap's whole listing in chunks of trustChunk,
// decodes each stage once (a chunk at a time, on every CPU) and keeps the
// ids of those policy accepts.
func buildTrustView(ctx context.Context, snap Snapshot, info Info, policy *store.TrustPolicy) (*trustView, error) {
	v := &trustView{
		gen:    info.Generation,
		digest: info.Digest,
		stats:  store.Stats{ByLifecycle: map[string]int{}, ByEffect: map[string]int{}},
	}
	h := sha256.New()
	var prev store.StageID
	var firstBad error
	for offset := 0; ; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raws, total, err := snap.Page(ctx, store.LifecycleUnknown, offset, trustChunk)
		if err != nil {
			return nil, fmt.Errorf("reading the stages at offset %d: %w", offset, err)
		}
		decoded, errs := decodeAll(raws)
		for i, st := range decoded {
			if st == nil {
				// A verified mirror holds no such stage; fail closed.
				v.untrusted++
				if firstBad == nil {
					firstBad = fmt.Errorf("stage at offset %d does not decode: %w", offset+i, errs[i])
				}
				continue
			}
			// Ids come from the listing, so check their order even for
			// stages the policy holds back.
			if offset+i > 0 && st.ID <= prev {
				return nil, fmt.Errorf("%w: %s follows %s", errListingOrder, st.ID, prev)
			}
			// Copy: a Source's bytes are only valid until Close.
			id := store.StageID(strings.Clone(string(st.ID)))
			prev = id
			if policy.Accept(st) != nil {
				v.untrusted++
				continue
			}
			v.byKind[store.LifecycleUnknown] = append(v.byKind[store.LifecycleUnknown], id)
			if k := st.Lifecycle.Kind; k != store.LifecycleUnknown && int(k) < numKinds {
				v.byKind[k] = append(v.byKind[k], id)
			}
			v.stats.Add(st)
			h.Write([]byte(id))
			h.Write([]byte{'\n'})
		}
		offset += len(raws)
		if len(raws) == 0 || offset >= total {
			break
		}
	}
	for k := range v.byKind {
		v.byKind[k] = slices.Clip(v.byKind[k])
	}
	v.tag = hex.EncodeToString(h.Sum(nil)[:8])
	if firstBad != nil {
		return v, firstBad
	}
	return v, nil
}

// decodeAll decodes raws on every CPU: decoding dominates a view build.
// A stage that does not decode is nil in the first result and has its
// error in the second.
func decodeAll(raws [][]byte) ([]*store.Stage, []error) {
	out := make([]*store.Stage, len(raws))
	errs := make([]error, len(raws))
	workers := min(runtime.GOMAXPROCS(0), (len(raws)+63)/64)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(raws); i += workers {
				out[i], errs[i] = store.DecodeStage(raws[i])
			}
		})
	}
	wg.Wait()
	return out, errs
}

// trustViewFor returns the trust view of snap, building it at most once
// per snapshot (generation and digest) and caching it in d. Concurrent
// callers for a new snapshot wait for the one building it, or for their
// ctx.
func (s *Server) trustViewFor(ctx context.Context, d *derived, snap Snapshot, info Info) (*trustView, error) {
	if v := d.view.Load(); v.matches(info) {
		return v, nil
	}
	if v := s.cur.view.Load(); d != &s.cur && v.matches(info) {
		// A pinned request for the current generation.
		d.view.Store(v)
		return v, nil
	}
	select {
	case s.viewSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.viewSem }()
	if v := d.view.Load(); v.matches(info) {
		return v, nil
	}
	start := time.Now()
	v, err := buildTrustView(ctx, snap, info, s.opts.Trust)
	if v == nil {
		return nil, fmt.Errorf("applying the trust policy: %w", err)
	}
	if err != nil {
		s.log.Warn("trust policy: holding back stages that do not decode (run `mirror verify`)", "err", err, "generation", info.Generation)
	}
	d.view.Store(v)
	s.log.Info("trust policy applied to the snapshot", "generation", info.Generation,
		"served", v.served(), "untrusted", v.untrusted, "duration", time.Since(start))
	return v, nil
}

// warmTrustView builds the current snapshot's trust view so the first
// request need not wait for it. It gives up when ctx is done.
func (s *Server) warmTrustView(ctx context.Context) {
	snap, err := s.src.Acquire()
	if err != nil {
		s.log.Warn("trust policy: no snapshot to apply it to yet", "err", err)
		return
	}
	defer s.release(snap)
	if _, err := s.trustViewFor(ctx, &s.cur, snap, snap.Info()); err != nil && ctx.Err() == nil {
		s.log.Error("trust policy: could not be applied to the snapshot", "err", err)
	}
}

// servedStats returns the stats of what is served from snap: the trust
// view's when a policy is in force, else the snapshot's (cached in d per
// generation).
func servedStats(ctx context.Context, d *derived, snap Snapshot, info Info, view *trustView) (store.Stats, error) {
	if view != nil {
		return view.stats, nil
	}
	return d.statsFor(ctx, snap, info)
}

// viewIfTrusted returns snap's trust view (cached in d) when
// Options.Trust is set, and nil otherwise.
func (s *Server) viewIfTrusted(ctx context.Context, d *derived, snap Snapshot, info Info) (*trustView, error) {
	if s.opts.Trust == nil {
		return nil, nil
	}
	return s.trustViewFor(ctx, d, snap, info)
}

// acquireView pins the current snapshot and, under a trust policy, its
// filtered view (nil without a policy). ok is false when an error response
// has already been written; otherwise the caller must release snap.
func (s *Server) acquireView(req *request) (snap Snapshot, info Info, view *trustView, ok bool) {
	if snap, info, ok = s.acquire(req); !ok {
		return nil, Info{}, nil, false
	}
	view, err := s.viewIfTrusted(req.r.Context(), req.d, snap, info)
	if err != nil {
		s.release(snap)
		s.internalError(req, "applying the trust policy", err)
		return nil, Info{}, nil, false
	}
	return snap, info, view, true
}

// etagVariant prefixes variant with the trust view's tag, if any.
func etagVariant(view *trustView, variant string) string {
	if view == nil {
		return variant
	}
	if variant == "" {
		return "t" + view.tag
	}
	return "t" + view.tag + "-" + variant
}
