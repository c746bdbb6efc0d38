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
// quarantine entry. A stage is found in the log index without a read of
// the file. An unreadable staging file counts as holding something, so
// that nothing is skipped over it.
func (w *Writer) stagedAt(key string) bool {
	if _, ok := w.log.get(key); ok {
		return true
	}
	found := false
	err := w.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketQuarantine).Get([]byte(key)) != nil
		return nil
	})
	return found || err != nil
}

// Dirty reports whether anything is staged: a stage, a quarantine entry
// or a removal. A sync that staged nothing (every listed stage InBase)
// and removed nothing found the current generation current: it calls
// Refresh instead of Fill and Publish.
func (w *Writer) Dirty() (bool, error) {
	if err := w.check(); err != nil {
		return false, err
	}
	dirty := false
	err := w.db.View(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLog, bucketQuarantine, bucketRemoved, bucketQRemoved} {
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

// Fill settles what a sync did not stage: of the current generation's
// stages, those keep reports true for (by their Key) stay as they are (a
// sync skipped them because Entry.InBase said the generation holds them
// already), and every other one not staged goes; likewise quarantine
// entries by Key with keepQuarantine (nil: none stays). Nothing is
// copied: the removals are recorded, and Publish writes only what
// differs. It returns how many stages and entries go. keep and
// keepQuarantine are called on the caller's goroutine, never after Fill
// returns.
func (w *Writer) Fill(ctx context.Context, keep, keepQuarantine func(Key) bool) (int, error) {
	if err := w.check(); err != nil {
		return 0, err
	}
	var gone, qgone [][]byte
	err := w.base.scanRaw(ctx, store.LifecycleUnknown, func(id store.StageID, _ []byte) error {
		if k, ok := KeyOfID(id); !(ok && keep(k)) && !w.stagedAt(string(id)) {
			gone = append(gone, []byte(id))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reading the current generation: %w", err)
	}
	for q, err := range w.base.quarantined(ctx) {
		if err != nil {
			return 0, fmt.Errorf("reading the current generation's quarantine: %w", err)
		}
		if !keptQuarantine(keepQuarantine, q.Key) && !w.stagedAt(q.Key) {
			qgone = append(qgone, []byte(q.Key))
		}
	}
	if err := w.recordRemovals(gone, qgone); err != nil {
		return 0, err
	}
	return len(gone) + len(qgone), nil
}

// recordRemovals replaces the staged removals with gone (stage ids) and
// qgone (quarantine keys), and marks the staging file as retaining the
// rest of the current generation.
func (w *Writer) recordRemovals(gone, qgone [][]byte) error {
	err := update(w.db, func(tx *bolt.Tx) error {
		for _, r := range []struct {
			bucket []byte
			keys   [][]byte
		}{{bucketRemoved, gone}, {bucketQRemoved, qgone}} {
			// The removals are computed afresh against the current
			// generation: an earlier run's (one that failed after
			// recording them) must not outlive what this one found.
			if err := tx.DeleteBucket(r.bucket); err != nil {
				return err
			}
			b, err := tx.CreateBucket(r.bucket)
			if err != nil {
				return err
			}
			for _, k := range r.keys {
				if err := b.Put(k, []byte{}); err != nil {
					return err
				}
			}
		}
		return tx.Bucket(bucketWriter).Put(wkRetain, []byte{})
	})
	if err != nil {
		return noSpace(fmt.Errorf("recording removals in %s: %w", w.m.nextPath(), err), w.m.nextPath(), w.baseSize())
	}
	return nil
}

// Drop is Fill for a caller that knows exactly what leaves: the next
// generation is the current one with what is staged, without the stages
// ids and the quarantine entries quarantine names. Nothing else of the
// current generation is read, so it costs O(len(ids)+len(quarantine)),
// where Fill scans every stage. Keys the current generation does not
// hold, and keys staged (their staged bytes replace them), are ignored.
// It returns the stages that go, and how many entries.
func (w *Writer) Drop(ctx context.Context, ids, quarantine []Key) (stages []store.StageID, entries int, err error) {
	if err := w.check(); err != nil {
		return nil, 0, err
	}
	var gone, qgone [][]byte
	for _, k := range ids {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		id := string(k.ID())
		if id == "" || w.stagedAt(id) {
			continue
		}
		if _, ok, err := w.base.stageValue(id); err != nil {
			return nil, 0, fmt.Errorf("reading the current generation: %w", err)
		} else if ok {
			gone = append(gone, []byte(id))
			stages = append(stages, store.StageID(id))
		}
	}
	for _, k := range quarantine {
		key := k.String()
		if w.stagedAt(key) {
			continue
		}
		if _, ok, err := w.base.quarValue(key); err != nil {
			return nil, 0, fmt.Errorf("reading the current generation's quarantine: %w", err)
		} else if ok {
			qgone = append(qgone, []byte(key))
		}
	}
	if err := w.recordRemovals(gone, qgone); err != nil {
		return nil, 0, err
	}
	return stages, len(qgone), nil
}

// Holds reports whether the generation the writer began from holds
// stage k (as a stage, not in quarantine).
func (w *Writer) Holds(k Key) (bool, error) {
	if err := w.check(); err != nil {
		return false, err
	}
	id := string(k.ID())
	if id == "" {
		return false, nil
	}
	_, ok, err := w.base.stageValue(id)
	return ok, err
}

// keptQuarantine reports whether keep (nil: none) keeps the quarantine
// entry stored under key.
func keptQuarantine(keep func(Key) bool, key string) bool {
	if keep == nil {
		return false
	}
	k, ok := ParseKey(key)
	return ok && keep(k)
}

// stageRetained stages, from cur, every stage and quarantine entry the
// staging file retains and does not stage itself, each through the gate
// again, so that the staging file holds the whole next generation: what
// a compaction into a new base compiles. A staging file that does not
// retain (an import) holds it already.
func (w *Writer) stageRetained(ctx context.Context, cur *snap) error {
	retain, removed, qremoved := false, map[string]bool{}, map[string]bool{}
	err := w.db.View(func(tx *bolt.Tx) error {
		retain = tx.Bucket(bucketWriter).Get(wkRetain) != nil
		for _, r := range []struct {
			bucket []byte
			into   map[string]bool
		}{{bucketRemoved, removed}, {bucketQRemoved, qremoved}} {
			if err := tx.Bucket(r.bucket).ForEach(func(k, _ []byte) error { r.into[string(k)] = true; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || !retain {
		return err
	}
	var batch []Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := w.PutBatch(batch, w.progress); err != nil {
			return fmt.Errorf("staging unchanged stages from the current generation: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	add := func(e Entry) error {
		if batch = append(batch, e); len(batch) == fillBatch {
			return flush()
		}
		return nil
	}
	for rec, err := range cur.records(ctx, store.LifecycleUnknown, nil) {
		if err != nil {
			return fmt.Errorf("reading the current generation: %w", err)
		}
		if removed[string(rec.ID)] || w.stagedAt(string(rec.ID)) {
			continue
		}
		if err := add(w.admitBase(rec)); err != nil {
			return err
		}
	}
	for q, err := range cur.quarantined(ctx) {
		if err != nil {
			return fmt.Errorf("reading the current generation's quarantine: %w", err)
		}
		e := w.Admit(q.Raw)
		key := e.QuarantineKey()
		if e.Admitted() || qremoved[key] || w.stagedAt(key) {
			continue
		}
		if err := add(e); err != nil {
			return err
		}
	}
	return flush()
}
