package mirror

import (
	"context"
	"encoding/hex"
	"errors"
	"iter"

	"github.com/noether-mirror/mirror/store"
	bolt "go.etcd.io/bbolt"
)

// StagedIDs iterates over every key in staging: stage ids, then quarantine
// keys (for a sync's staging, in no particular order). A sync uses it to
// drop what an interrupted run staged but the registry no longer lists.
// The keys are collected in one read transaction before the first is
// yielded, so the loop body may call Delete.
func (w *Writer) StagedIDs(ctx context.Context) iter.Seq2[store.StageID, error] {
	return func(yield func(store.StageID, error) bool) {
		sk, err := w.stagedKeys(ctx)
		if err != nil {
			yield("", err)
			return
		}
		defer sk.close()
		for _, k := range sk.hex {
			if !yield(store.StageID(hex.EncodeToString(k[:])), nil) {
				return
			}
		}
		for _, id := range sk.text {
			if !yield(store.StageID(id), nil) {
				return
			}
		}
	}
}

// Prune removes from staging, in one transaction, every stage and
// quarantine entry whose Key keep reports false for, and every entry
// whose stored key is no Key at all; keep nil removes everything. It
// returns how many went. A sync uses it to drop what an interrupted run
// staged but the registry no longer lists, or all that a run for another
// upstream staged. keep is called on the caller's goroutine, before
// anything is removed.
func (w *Writer) Prune(ctx context.Context, keep func(Key) bool) (int, error) {
	sk, err := w.stagedKeys(ctx)
	if err != nil {
		return 0, err
	}
	defer sk.close()
	var stale []store.StageID
	for _, sum := range sk.hex {
		if keep == nil || !keep(Key{sum: sum}) {
			stale = append(stale, store.StageID(hex.EncodeToString(sum[:])))
		}
	}
	for _, s := range sk.text {
		if k, ok := ParseKey(s); keep == nil || !ok || !keep(k) {
			stale = append(stale, store.StageID(s))
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	return len(stale), w.Delete(stale...)
}

// Fail ends a run that failed with cause without publishing, as Abort
// does, and decides what becomes of the staging file: it is kept for
// the next run to resume, unless cause shows the staging itself at fault.
// A damaged staging file (ErrCorrupt; say, after a power loss) is
// discarded so that the next run starts clean, and after a full disk
// (ErrNoSpace) it goes too, to give the space back at once. It returns
// Abort's error; after Publish (or Abort) it does nothing.
func (w *Writer) Fail(cause error) error {
	return w.Abort(!errors.Is(cause, ErrCorrupt) && !errors.Is(cause, ErrNoSpace))
}

// stagedKeySet is every key in staging, collected by stagedKeys: the
// log's stage ids as bytes (in a scratch file, which close releases),
// and every other key as stored.
type stagedKeySet struct {
	hex  [][32]byte
	text []string
	sc   *Scratch[[32]byte]
}

func (s *stagedKeySet) close() { _ = s.sc.Close() }

// stagedKeys collects every key in staging in one read transaction.
func (w *Writer) stagedKeys(ctx context.Context) (*stagedKeySet, error) {
	if err := w.check(); err != nil {
		return nil, err
	}
	out := &stagedKeySet{}
	names := [][]byte{bucketStages, bucketQuarantine}
	if w.log != nil {
		// The staged stages are the log's index: collect it, in a
		// scratch file (hex is made while yielding).
		names = [][]byte{bucketQuarantine}
		hs, odd, err := w.log.keys()
		if err != nil {
			return nil, err
		}
		out.sc, out.hex = hs, hs.All()
		for _, id := range odd {
			out.text = append(out.text, string(id))
		}
	}
	err := w.db.View(func(tx *bolt.Tx) error {
		for _, name := range names {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				out.text = append(out.text, string(k))
			}
		}
		return nil
	})
	if err != nil {
		out.close()
		return nil, err
	}
	return out, nil
}
