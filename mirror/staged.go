package mirror

import (
	"context"
	"fmt"
	"iter"

	"github.com/noether-mirror/mirror/store"
	bolt "go.etcd.io/bbolt"
)

// StagedIDs iterates over every key in staging: stage ids, then quarantine
// keys. A sync uses it to drop what an interrupted run staged but the
// registry no longer lists. The keys are collected in one read
// transaction before the first is yielded, so the loop body may call
// Delete.
func (w *Writer) StagedIDs(ctx context.Context) iter.Seq2[store.StageID, error] {
	return func(yield func(store.StageID, error) bool) {
		if err := w.check(); err != nil {
			yield("", err)
			return
		}
		var ids []store.StageID
		err := w.db.View(func(tx *bolt.Tx) error {
			names := [][]byte{bucketStages, bucketQuarantine}
			if w.log != nil {
				names = [][]byte{bucketQuarantine}
				lb := tx.Bucket(bucketLog)
				if lb == nil {
					return fmt.Errorf("%w: the staging file has no log bucket", ErrCorrupt)
				}
				for _, seq := range w.log.sorted() {
					if err := ctx.Err(); err != nil {
						return err
					}
					id, _, err := splitLogValue(lb.Get(beUint64(seq)))
					if err != nil {
						return fmt.Errorf("%w: staged log entry %d: %v", ErrCorrupt, seq, err)
					}
					ids = append(ids, store.StageID(id))
				}
			}
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
					ids = append(ids, store.StageID(k))
				}
			}
			return nil
		})
		if err != nil {
			yield("", err)
			return
		}
		for _, id := range ids {
			if !yield(id, nil) {
				return
			}
		}
	}
}
