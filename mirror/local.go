package mirror

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

var errNilStage = errors.New("mirror: nil stage: pass a stage made by store.DecodeStage")

// errSyncWriter: the store.StageStore edits need the whole mirror in
// staging, which only a BeginLocal writer has.
var errSyncWriter = errors.New("mirror: Put, Upsert, Remove and UpdateLifecycle edit a BeginLocal writer; a BeginSync writer takes PutBatch and Delete")

// checkLocal is check for the store.StageStore edits.
func (w *Writer) checkLocal(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.check(); err != nil {
		return err
	}
	if w.log != nil {
		return errSyncWriter
	}
	return nil
}

// Put inserts s into staging with store.MemoryStore's rules: an id already
// staged is ErrAlreadyExists; an Active stage deprecates every other
// Active stage with its signature id. s must pass the admission gate
// (AdmitStage): otherwise nothing is staged and the error wraps
// store.ErrVerification or store.ErrUntrusted.
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
	err = update(w.db, func(tx *bolt.Tx) error {
		if failIfExists && tx.Bucket(bucketStages).Get([]byte(s.ID)) != nil {
			return store.AlreadyExistsError(s.ID)
		}
		return w.insertTx(tx, rec)
	})
	if err != nil {
		return "", err
	}
	return s.ID, nil
}

// insertTx stores r and, if it is Active, deprecates every other Active
// stage with its signature id in its favour (no transition check).
func (w *Writer) insertTx(tx *bolt.Tx, r *Record) error {
	var demoted []*Record
	if r.Lifecycle.Kind == store.LifecycleActive && r.SignatureID != "" {
		prefix := indexKey(string(r.SignatureID), "")
		c := tx.Bucket(bucketBySig).Cursor()
		for k, v := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = c.Next() {
			id := k[len(prefix):]
			if string(id) == string(r.ID) || len(v) != 1 || store.LifecycleKind(v[0]) != store.LifecycleActive {
				continue
			}
			old, err := stagedRecord(tx, id)
			if err != nil {
				return err
			}
			if old.SignatureID != r.SignatureID {
				continue // a name containing 0x00 shares the prefix
			}
			st, err := old.Decode()
			if err != nil {
				return fmt.Errorf("%w: staged %v", ErrCorrupt, err)
			}
			d, err := st.WithLifecycle(store.Deprecated(r.ID))
			if err != nil {
				return fmt.Errorf("auto-deprecating %s in favour of %s: %w", old.ID, r.ID, err)
			}
			rec, err := w.admitLocal(d)
			if err != nil {
				return fmt.Errorf("auto-deprecating %s in favour of %s: %w", old.ID, r.ID, err)
			}
			demoted = append(demoted, rec)
			w.m.log.Warn("auto-deprecated Active stage: another Active stage shares its signature_id",
				"deprecated", string(old.ID), "successor", string(r.ID), "signature_id", string(r.SignatureID))
		}
	}
	if err := putStage(tx, r); err != nil {
		return err
	}
	for _, d := range demoted {
		if err := putStage(tx, d); err != nil {
			return err
		}
	}
	return nil
}

func stagedRecord(tx *bolt.Tx, id []byte) (Record, error) {
	v := tx.Bucket(bucketStages).Get(id)
	if v == nil {
		return Record{}, store.NotFoundError(store.StageID(id))
	}
	r, err := decodeRecord(id, v)
	if err != nil {
		return Record{}, fmt.Errorf("%w: staged record %s: %v", ErrCorrupt, id, err)
	}
	return r, nil
}

// Remove deletes id from staging; an absent id is not an error.
func (w *Writer) Remove(ctx context.Context, id store.StageID) error {
	if err := w.checkLocal(ctx); err != nil {
		return err
	}
	return update(w.db, func(tx *bolt.Tx) error { return deleteStage(tx, []byte(id)) })
}

// UpdateLifecycle moves staged stage id to l with store.MemoryStore's
// checks, in order: id exists (ErrNotFound), the transition is allowed
// (ErrInvalidTransition), a Deprecated successor exists
// (ErrInvalidSuccessor). Moving to Active applies the invariant.
func (w *Writer) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	if err := w.checkLocal(ctx); err != nil {
		return err
	}
	return update(w.db, func(tx *bolt.Tx) error {
		cur, err := stagedRecord(tx, []byte(id))
		if err != nil {
			return err
		}
		if err := store.ValidateTransition(cur.Lifecycle, l); err != nil {
			return err
		}
		if l.Kind == store.LifecycleDeprecated && tx.Bucket(bucketStages).Get([]byte(l.Successor)) == nil {
			return store.InvalidSuccessorError(l.Successor)
		}
		st, err := cur.Decode()
		if err != nil {
			return fmt.Errorf("%w: staged %v", ErrCorrupt, err)
		}
		next, err := st.WithLifecycle(l)
		if err != nil {
			return fmt.Errorf("setting lifecycle of %s: %w", id, err)
		}
		rec, err := w.admitLocal(next)
		if err != nil {
			return err
		}
		return w.insertTx(tx, rec)
	})
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

// Put inserts s (store.StageStore semantics) and publishes a new snapshot.
// It copies and recompiles the whole mirror: meant for occasional local
// edits, not bulk loads (use BeginLocal and one Publish for those).
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
func (m *Mirror) Upsert(ctx context.Context, s *store.Stage) (store.StageID, error) {
	var id store.StageID
	err := m.local(ctx, func(w *Writer) error {
		var err error
		id, err = w.Upsert(ctx, s)
		return err
	})
	return id, err
}

// Remove deletes id (absent is not an error) and publishes.
func (m *Mirror) Remove(ctx context.Context, id store.StageID) error {
	return m.local(ctx, func(w *Writer) error { return w.Remove(ctx, id) })
}

// UpdateLifecycle moves id to l (store.StageStore semantics) and publishes.
func (m *Mirror) UpdateLifecycle(ctx context.Context, id store.StageID, l store.Lifecycle) error {
	return m.local(ctx, func(w *Writer) error { return w.UpdateLifecycle(ctx, id, l) })
}
