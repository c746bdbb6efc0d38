package mirror

import (
	"context"
	"fmt"
	"iter"

	"github.com/noether-mirror/mirror/store"
)

// GetRaw returns a copy of the JSON of stage id, exactly as received,
// without decoding it. A missing id wraps store.ErrNotFound; a damaged
// record wraps ErrCorrupt.
func (sn *Snapshot) GetRaw(ctx context.Context, id store.StageID) ([]byte, error) {
	s, err := sn.get()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.getRaw(id)
}

// GetRecord returns the record of stage id (no JSON decoding).
func (sn *Snapshot) GetRecord(ctx context.Context, id store.StageID) (Record, error) {
	s, err := sn.get()
	if err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	return s.getRecord(id)
}

// Page returns the raw JSON of the stages at positions [offset,
// offset+limit) of the id-ordered listing of one lifecycle kind
// (store.LifecycleUnknown: every stage), and that listing's total. It
// costs O(log n + limit) whatever the offset. The returned slices share
// one buffer (one allocation per page); clone one to keep it alone.
func (sn *Snapshot) Page(ctx context.Context, kind store.LifecycleKind, offset, limit int) (raws [][]byte, total int, err error) {
	s, err := sn.get()
	if err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return s.page(kind, offset, limit)
}

// Records iterates, in id order, over the records of one lifecycle kind
// (store.LifecycleUnknown: all) without decoding any JSON. Records are
// read 256 per transaction; the loop body never runs inside one. Each
// Record owns its memory (Raw is its own allocation).
func (sn *Snapshot) Records(ctx context.Context, kind store.LifecycleKind) iter.Seq2[Record, error] {
	s, err := sn.get()
	if err != nil {
		return errSeq2[Record](err)
	}
	return s.records(ctx, kind, nil)
}

// Quarantined iterates over the quarantined entries in key order.
func (sn *Snapshot) Quarantined(ctx context.Context) iter.Seq2[QuarantineEntry, error] {
	s, err := sn.get()
	if err != nil {
		return errSeq2[QuarantineEntry](err)
	}
	return s.quarantined(ctx)
}

// FindRawByName returns the raw JSON of every stage named name (any
// lifecycle), in id order, without decoding it.
func (sn *Snapshot) FindRawByName(ctx context.Context, name string) ([][]byte, error) {
	return sn.byName(ctx, name)
}

// GetRawBySignature returns the raw JSON of the Active stage with
// signature id sig that has the smallest id (store.ErrNotFound if none).
func (sn *Snapshot) GetRawBySignature(ctx context.Context, sig store.SignatureID) ([]byte, error) {
	raws, err := sn.activeBySig(ctx, sig, true)
	if err != nil {
		return nil, err
	}
	if len(raws) == 0 {
		return nil, noActive(sig)
	}
	return raws[0], nil
}

func noActive(sig store.SignatureID) error {
	return fmt.Errorf("no Active stage with signature id %q: %w", string(sig), store.ErrNotFound)
}

func (sn *Snapshot) byName(ctx context.Context, name string) ([][]byte, error) {
	s, err := sn.get()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.byName(name)
}

func (sn *Snapshot) activeBySig(ctx context.Context, sig store.SignatureID, first bool) ([][]byte, error) {
	s, err := sn.get()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.activeBySig(sig, first)
}

// Get returns the stage with exactly this id (decoded), or an error
// wrapping store.ErrNotFound.
func (sn *Snapshot) Get(ctx context.Context, id store.StageID) (*store.Stage, error) {
	raw, err := sn.GetRaw(ctx, id)
	if err != nil {
		return nil, err
	}
	st, err := store.DecodeStage(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: stage %s: %v", ErrCorrupt, sn.path, id, err)
	}
	return st, nil
}

// Contains reports whether the snapshot holds id.
func (sn *Snapshot) Contains(ctx context.Context, id store.StageID) (bool, error) {
	s, err := sn.get()
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return s.contains(id)
}

// List returns every stage f selects, in id order.
func (sn *Snapshot) List(ctx context.Context, f store.Filter) ([]*store.Stage, error) {
	var out []*store.Stage
	for st, err := range sn.Stages(ctx, f) {
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Stages iterates, in id order, over the stages f selects, decoding each.
func (sn *Snapshot) Stages(ctx context.Context, f store.Filter) iter.Seq2[*store.Stage, error] {
	s, err := sn.get()
	if err != nil {
		return errSeq2[*store.Stage](err)
	}
	return s.stages(ctx, f, nil)
}

// StagesWithPrefix iterates, in id order, over the stages whose id starts
// with prefix (any lifecycle), seeking straight to them.
func (sn *Snapshot) StagesWithPrefix(ctx context.Context, prefix string) iter.Seq2[*store.Stage, error] {
	s, err := sn.get()
	if err != nil {
		return errSeq2[*store.Stage](err)
	}
	return s.stages(ctx, store.Filter{}, []byte(prefix))
}

// Stats summarises the snapshot; it is precomputed, O(1).
func (sn *Snapshot) Stats(ctx context.Context) (store.Stats, error) {
	s, err := sn.get()
	if err != nil {
		return store.Stats{}, err
	}
	if err := ctx.Err(); err != nil {
		return store.Stats{}, err
	}
	return s.stats(), nil
}

// FindByName returns every stage (any lifecycle) named name, in id order.
func (sn *Snapshot) FindByName(ctx context.Context, name string) ([]*store.Stage, error) {
	raws, err := sn.byName(ctx, name)
	if err != nil {
		return nil, err
	}
	return decodeAll(sn.path, raws)
}

// GetBySignature returns the Active stage with signature id sig that has
// the bytewise-smallest id, or an error wrapping store.ErrNotFound.
func (sn *Snapshot) GetBySignature(ctx context.Context, sig store.SignatureID) (*store.Stage, error) {
	raws, err := sn.activeBySig(ctx, sig, true)
	if err != nil {
		return nil, err
	}
	if len(raws) == 0 {
		return nil, noActive(sig)
	}
	out, err := decodeAll(sn.path, raws)
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// ActiveStagesWithSignature returns every Active stage with signature id
// sig, sorted by id.
func (sn *Snapshot) ActiveStagesWithSignature(ctx context.Context, sig store.SignatureID) ([]*store.Stage, error) {
	raws, err := sn.activeBySig(ctx, sig, false)
	if err != nil {
		return nil, err
	}
	return decodeAll(sn.path, raws)
}

func errSeq2[T any](err error) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		yield(zero, err)
	}
}

// withSnap runs fn on a snapshot pinned for the call.
func withSnap[T any](m *Mirror, fn func(sn *Snapshot) (T, error)) (T, error) {
	sn, err := m.Snapshot()
	if err != nil {
		var zero T
		return zero, err
	}
	defer sn.Close()
	return fn(sn)
}

// seqSnap pins a snapshot for the length of an iteration.
func seqSnap[T any](m *Mirror, fn func(sn *Snapshot) iter.Seq2[T, error]) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		sn, err := m.Snapshot()
		if err != nil {
			var zero T
			yield(zero, err)
			return
		}
		defer sn.Close()
		for v, err := range fn(sn) {
			if !yield(v, err) {
				return
			}
		}
	}
}

// GetRaw is Snapshot.GetRaw on the current snapshot.
func (m *Mirror) GetRaw(ctx context.Context, id store.StageID) ([]byte, error) {
	s, err := m.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.getRaw(id)
}

// GetRecord is Snapshot.GetRecord on the current snapshot.
func (m *Mirror) GetRecord(ctx context.Context, id store.StageID) (Record, error) {
	return withSnap(m, func(sn *Snapshot) (Record, error) { return sn.GetRecord(ctx, id) })
}

// Page is Snapshot.Page on the current snapshot.
func (m *Mirror) Page(ctx context.Context, kind store.LifecycleKind, offset, limit int) (raws [][]byte, total int, err error) {
	sn, err := m.Snapshot()
	if err != nil {
		return nil, 0, err
	}
	defer sn.Close()
	return sn.Page(ctx, kind, offset, limit)
}

// Records is Snapshot.Records on the snapshot current when iteration
// starts (pinned until it ends).
func (m *Mirror) Records(ctx context.Context, kind store.LifecycleKind) iter.Seq2[Record, error] {
	return seqSnap(m, func(sn *Snapshot) iter.Seq2[Record, error] { return sn.Records(ctx, kind) })
}

// Quarantined is Snapshot.Quarantined on the current snapshot.
func (m *Mirror) Quarantined(ctx context.Context) iter.Seq2[QuarantineEntry, error] {
	return seqSnap(m, func(sn *Snapshot) iter.Seq2[QuarantineEntry, error] { return sn.Quarantined(ctx) })
}

// FindRawByName is Snapshot.FindRawByName on the current snapshot.
func (m *Mirror) FindRawByName(ctx context.Context, name string) ([][]byte, error) {
	return withSnap(m, func(sn *Snapshot) ([][]byte, error) { return sn.FindRawByName(ctx, name) })
}

// GetRawBySignature is Snapshot.GetRawBySignature on the current snapshot.
func (m *Mirror) GetRawBySignature(ctx context.Context, sig store.SignatureID) ([]byte, error) {
	return withSnap(m, func(sn *Snapshot) ([]byte, error) { return sn.GetRawBySignature(ctx, sig) })
}

// Get returns the stage with exactly this id from the current snapshot.
func (m *Mirror) Get(ctx context.Context, id store.StageID) (*store.Stage, error) {
	return withSnap(m, func(sn *Snapshot) (*store.Stage, error) { return sn.Get(ctx, id) })
}

// Contains reports whether the current snapshot holds id.
func (m *Mirror) Contains(ctx context.Context, id store.StageID) (bool, error) {
	return withSnap(m, func(sn *Snapshot) (bool, error) { return sn.Contains(ctx, id) })
}

// List returns every stage f selects from the current snapshot, in id
// order.
func (m *Mirror) List(ctx context.Context, f store.Filter) ([]*store.Stage, error) {
	return withSnap(m, func(sn *Snapshot) ([]*store.Stage, error) { return sn.List(ctx, f) })
}

// Stages iterates over the stages f selects, in id order, from the
// snapshot current when iteration starts.
func (m *Mirror) Stages(ctx context.Context, f store.Filter) iter.Seq2[*store.Stage, error] {
	return seqSnap(m, func(sn *Snapshot) iter.Seq2[*store.Stage, error] { return sn.Stages(ctx, f) })
}

// StagesWithPrefix is Snapshot.StagesWithPrefix on the current snapshot.
func (m *Mirror) StagesWithPrefix(ctx context.Context, prefix string) iter.Seq2[*store.Stage, error] {
	return seqSnap(m, func(sn *Snapshot) iter.Seq2[*store.Stage, error] { return sn.StagesWithPrefix(ctx, prefix) })
}

// Stats summarises the current snapshot (precomputed, O(1)).
func (m *Mirror) Stats(ctx context.Context) (store.Stats, error) {
	return withSnap(m, func(sn *Snapshot) (store.Stats, error) { return sn.Stats(ctx) })
}

// FindByName returns every stage named name, in id order.
func (m *Mirror) FindByName(ctx context.Context, name string) ([]*store.Stage, error) {
	return withSnap(m, func(sn *Snapshot) ([]*store.Stage, error) { return sn.FindByName(ctx, name) })
}

// GetBySignature returns the Active stage with signature id sig that has
// the smallest id, or an error wrapping store.ErrNotFound.
func (m *Mirror) GetBySignature(ctx context.Context, sig store.SignatureID) (*store.Stage, error) {
	return withSnap(m, func(sn *Snapshot) (*store.Stage, error) { return sn.GetBySignature(ctx, sig) })
}

// ActiveStagesWithSignature returns every Active stage with signature id
// sig, sorted by id.
func (m *Mirror) ActiveStagesWithSignature(ctx context.Context, sig store.SignatureID) ([]*store.Stage, error) {
	return withSnap(m, func(sn *Snapshot) ([]*store.Stage, error) { return sn.ActiveStagesWithSignature(ctx, sig) })
}
