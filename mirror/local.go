package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

var errNilStage = errors.New("mirror: nil stage: pass a stage made by store.DecodeStage")

// errSyncWriter: the store.StageStore edits keep what they do not touch,
// which a sync's writer does not promise until Fill.
var errSyncWriter = errors.New("mirror: Put, Upsert, Remove and UpdateLifecycle edit a BeginLocal writer; a BeginSync writer takes PutBatch and Delete")

// checkLocal is check for the store.StageStore edits.
func (w *Writer) checkLocal(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.check(); err != nil {
		return err
	}
	if w.mode != modeLocal {
		return errSyncWriter
	}
	return nil
}

// Put inserts s into staging with store.MemoryStore's rules: an id the
// next generation would hold already is ErrAlreadyExists; an Active stage
// deprecates every other Active stage with its signature id. s must pass
// the admission gate (AdmitStage): otherwise nothing is staged and the
// error wraps store.ErrVerification or store.ErrUntrusted.
func (w *Writer) Put(ctx context.Context, s *store.Stage) (store.StageID, error) {
	return w.insert(ctx, s, true)
}

// Upsert inserts or replaces s by id in staging, bypassing transition
// rules, then applies the Active-per-signature invariant like Put.
func (w *Writer) Upsert(ctx context.Context, s *store.Stage) (store.StageID, error) {
	return w.insert(ctx, s, false)
}

// admitLocal runs s through the admission gate for a local edit: the
// record of an admitted stage, or the gate's error naming the stage.
func (w *Writer) admitLocal(s *store.Stage) (*Record, error) {
	e := w.AdmitStage(s)
	if err := e.Err(); err != nil {
		return nil, fmt.Errorf("mirror: refusing stage %s: %w", s, err)
	}
	return e.record(), nil
}

func (w *Writer) insert(ctx context.Context, s *store.Stage, failIfExists bool) (store.StageID, error) {
	if err := w.checkLocal(ctx); err != nil {
		return "", err
	}
	if s == nil {
		return "", errNilStage
	}
	rec, err := w.admitLocal(s)
	if err != nil {
		return "", err
	}
	if failIfExists {
		if _, ok, err := w.lookup(ctx, s.ID); err != nil {
			return "", err
		} else if ok {
			return "", store.AlreadyExistsError(s.ID)
		}
	}
	if err := w.insertRecord(ctx, rec); err != nil {
		return "", err
	}
	return s.ID, nil
}

// lookup returns the record the next generation holds under id so far:
// staged, removed, or as the current generation has it.
func (w *Writer) lookup(ctx context.Context, id store.StageID) (Record, bool, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, false, err
	}
	if rec, ok, err := w.stagedRecord(id); err != nil || ok {
		return rec, ok, err
	}
	removed := false
	if err := w.db.View(func(tx *bolt.Tx) error {
		removed = tx.Bucket(bucketRemoved).Get([]byte(id)) != nil
		return nil
	}); err != nil || removed {
		return Record{}, false, err
	}
	rec, err := w.base.getRecord(id)
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// activeWithSig returns the ids of the stages the next generation holds
// so far as Active with signature id sig.
func (w *Writer) activeWithSig(ctx context.Context, sig store.SignatureID) ([]store.StageID, error) {
	cand := map[store.StageID]bool{}
	for id := range w.sigs[sig] {
		cand[id] = true
	}
	raws, err := w.base.activeBySig(sig, false)
	if err != nil {
		return nil, err
	}
	for _, raw := range raws {
		st, err := store.DecodeStage(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, w.m.path, err)
		}
		cand[st.ID] = true
	}
	var out []store.StageID
	for _, id := range slices.Sorted(maps.Keys(cand)) {
		r, ok, err := w.lookup(ctx, id)
		if err != nil {
			return nil, err
		}
		if ok && r.Lifecycle.Kind == store.LifecycleActive && r.SignatureID == sig {
			out = append(out, id)
		}
	}
	return out, nil
}

// insertRecord stages r and, if it is Active, deprecates every other
// Active stage with its signature id in its favour (no transition check).
func (w *Writer) insertRecord(ctx context.Context, r *Record) error {
	recs := []*Record{r}
	if r.Lifecycle.Kind == store.LifecycleActive && r.SignatureID != "" {
		ids, err := w.activeWithSig(ctx, r.SignatureID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if id == r.ID {
				continue
			}
			old, _, err := w.lookup(ctx, id)
			if err != nil {
				return err
			}
			st, err := old.Decode()
			if err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			d, err := st.WithLifecycle(store.Deprecated(r.ID))
			if err != nil {
				return fmt.Errorf("auto-deprecating %s in favour of %s: %w", old.ID, r.ID, err)
			}
			rec, err := w.admitLocal(d)
			if err != nil {
				return fmt.Errorf("auto-deprecating %s in favour of %s: %w", old.ID, r.ID, err)
			}
			recs = append(recs, rec)
			w.m.log.Warn("auto-deprecated Active stage: another Active stage shares its signature_id",
				"deprecated", string(old.ID), "successor", string(r.ID), "signature_id", string(r.SignatureID))
		}
	}
	err := w.stage(func(st stagingTx) error {
		for _, rec := range recs {
			if err := st.put(rec); err != nil {
				return err
			}
			if err := st.tx.Bucket(bucketRemoved).Delete([]byte(rec.ID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return noSpace(fmt.Errorf("staging %s in %s: %w", r.ID, w.m.nextPath(), err), w.m.nextPath(), w.baseSize())
	}
	for _, rec := range recs {
		if rec.SignatureID != "" {
			if w.sigs[rec.SignatureID] == nil {
				w.sigs[rec.SignatureID] = map[store.StageID]bool{}
			}
			w.sigs[rec.SignatureID][rec.ID] = true
		}
	}
	return nil
}

// Remove takes id out of the next generation; an absent id is not an
// error.
func (w *Writer) Remove(ctx context.Context, id store.StageID) error {
	if err := w.checkLocal(ctx); err != nil {
		return err
	}
	return w.stage(func(st stagingTx) error {
		if err := st.delete(string(id)); err != nil {
			return err
		}
		return st.tx.Bucket(bucketRemoved).Put([]byte(id), []byte{})
	})
}

// UpdateLifecycle moves stage id to l with store.MemoryStore's checks, in
// order: id exists (ErrNotFound), the transition is allowed
// (ErrInvalidTransition), a Deprecated successor exists
// (ErrInvalidSuccessor). Moving to Active applies the invariant.
func (w *Writer) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	if err := w.checkLocal(ctx); err != nil {
		return err
	}
	cur, ok, err := w.lookup(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return store.NotFoundError(id)
	}
	if err := store.ValidateTransition(cur.Lifecycle, l); err != nil {
		return err
	}
	if l.Kind == store.LifecycleDeprecated {
		if _, ok, err := w.lookup(ctx, l.Successor); err != nil {
			return err
		} else if !ok {
			return store.InvalidSuccessorError(l.Successor)
		}
	}
	st, err := cur.Decode()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	next, err := st.WithLifecycle(l)
	if err != nil {
		return fmt.Errorf("setting lifecycle of %s: %w", id, err)
	}
	rec, err := w.admitLocal(next)
	if err != nil {
		return err
	}
	return w.insertRecord(ctx, rec)
}

// local runs op on a BeginLocal writer and publishes the result, so that
// once it returns the change is durable and visible to every process.
// In-process callers take turns; another process's writer gives ErrBusy.
func (m *Mirror) local(ctx context.Context, op func(w *Writer) error) error {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	w, err := m.BeginLocal(ctx)
	if err != nil {
		return err
	}
	if err := op(w); err != nil {
		_ = w.Abort(false)
		return err
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		_ = w.Abort(false)
		return err
	}
	return nil
}

// Put inserts s (store.StageStore semantics) and publishes a new
// generation, which writes a delta of the stages it changed: durable and
// visible to every process when it returns. For many edits, one
// BeginLocal writer and one Publish make one generation.
func (m *Mirror) Put(ctx context.Context, s *store.Stage) (store.StageID, error) {
	var id store.StageID
	err := m.local(ctx, func(w *Writer) error {
		var err error
		id, err = w.Put(ctx, s)
		return err
	})
	return id, err
}

// Upsert inserts or replaces s (store.StageStore semantics) and publishes.
// When the mirror as published now (reloaded first) already holds s's
// exact bytes, they still pass the gate (their stored verification
// report, under m's trust policy), and, for an Active stage, it is the
// only Active one with its signature id, there is nothing to publish:
// Upsert returns at once, without taking the writer lock (a
// RemoteStageStore's GetLive of a stage that did not change).
func (m *Mirror) Upsert(ctx context.Context, s *store.Stage) (store.StageID, error) {
	if held, err := m.holdsAdmitted(ctx, s); err != nil {
		return "", err
	} else if held {
		return s.ID, nil
	}
	var id store.StageID
	err := m.local(ctx, func(w *Writer) error {
		var err error
		id, err = w.Upsert(ctx, s)
		return err
	})
	return id, err
}

// holdsAdmitted reports whether an Upsert of s would change nothing: the
// mirror as published now holds s's exact bytes, with a report that
// passes the gate as it would pass now (see passed and AdmitStage), and
// an Active s is the only Active stage with its signature id (a sync may
// store two, which an Upsert resolves). Any doubt is false: the writer
// decides.
func (m *Mirror) holdsAdmitted(ctx context.Context, s *store.Stage) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if s == nil || !store.ValidID(string(s.ID)) {
		return false, nil // the writer's gate says why
	}
	if _, err := m.Reload(); err != nil {
		return false, nil // the writer reloads too, and says why
	}
	cur, err := m.acquire()
	if err != nil {
		return false, err
	}
	defer cur.release()
	rec, err := cur.getRecord(s.ID)
	rep, ok := passed(s.ID, s.Raw, rec, err == nil)
	if !ok || m.rule(s, rep, m.opts.Trust) != nil {
		return false, nil
	}
	if s.Lifecycle.Kind != store.LifecycleActive || s.SignatureID == "" {
		return true, nil
	}
	active, err := cur.activeBySig(s.SignatureID, false)
	return err == nil && len(active) == 1 && bytes.Equal(active[0], s.Raw), nil
}

// Remove deletes id (absent is not an error) and publishes.
func (m *Mirror) Remove(ctx context.Context, id store.StageID) error {
	return m.local(ctx, func(w *Writer) error { return w.Remove(ctx, id) })
}

// UpdateLifecycle moves id to l (store.StageStore semantics) and publishes.
func (m *Mirror) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	return m.local(ctx, func(w *Writer) error { return w.UpdateLifecycle(ctx, id, l) })
}
