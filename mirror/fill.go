package mirror

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// fillBatch is how many entries Fill stages per transaction.
const fillBatch = 200

// stagedAt reports whether anything is staged under key: a stage, or a
// quarantine entry. A sync's stages are found in its log index without
// a read of the file. An unreadable staging file counts as holding
// something, so that nothing is skipped over it.
func (w *Writer) stagedAt(key string) bool {
	if w.log != nil {
		if _, ok := w.log.get(key); ok {
			return true
		}
	}
	found := false
	err := w.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketStages, bucketQuarantine} {
			if b := tx.Bucket(name); b != nil && b.Get([]byte(key)) != nil {
				found = true
			}
		}
		return nil
	})
	return found || err != nil
}

// Dirty reports whether anything is staged: a stage or a quarantine
// entry. A sync that staged nothing (every listed stage InBase) and
// removed nothing found the base snapshot current: it calls Refresh
// instead of Fill and Publish.
func (w *Writer) Dirty() (bool, error) {
	if err := w.check(); err != nil {
		return false, err
	}
	dirty := false
	err := w.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLog, bucketStages, bucketQuarantine} {
			if b := tx.Bucket(name); b != nil {
				if k, _ := b.Cursor().First(); k != nil {
					dirty = true
				}
			}
		}
		return nil
	})
	return dirty, err
}

// Fill stages, from the snapshot the writer began from, every stage for
// which keep reports true and every quarantine entry for which
// keepQuarantine reports true (by key), unless something is staged under
// that key already: what a sync skipped because Entry.InBase said the
// base holds it, before it publishes. Each passes the admission gate
// again. It returns how many entries it staged.
func (w *Writer) Fill(ctx context.Context, keep func(store.StageID) bool, keepQuarantine func(key string) bool) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	n := 0
	var batch []Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := w.PutBatch(batch, w.progress); err != nil {
			return fmt.Errorf("staging unchanged stages from the current snapshot: %w", err)
		}
		n += len(batch)
		batch = batch[:0]
		return nil
	}
	add := func(e Entry) error {
		batch = append(batch, e)
		if len(batch) == fillBatch {
			return flush()
		}
		return nil
	}
	for rec, err := range w.base.records(ctx, store.LifecycleUnknown, nil) {
		if err != nil {
			return n, fmt.Errorf("reading the current snapshot: %w", err)
		}
		if !keep(rec.ID) || w.stagedAt(string(rec.ID)) {
			continue
		}
		if err := add(w.admitBase(rec)); err != nil {
			return n, err
		}
	}
	if keepQuarantine != nil && w.base.meta.Quarantined > 0 {
		for q, err := range w.base.quarantined(ctx) {
			if err != nil {
				return n, fmt.Errorf("reading the current snapshot's quarantine: %w", err)
			}
			// The entry's key is its QuarantineKey, as PutBatch stored it.
			e := w.Admit(q.Raw)
			key := e.QuarantineKey()
			if e.Admitted() || !keepQuarantine(key) || w.stagedAt(key) {
				continue
			}
			if err := add(e); err != nil {
				return n, err
			}
		}
	}
	return n, flush()
}
