package mirror

import (
	"context"
	"encoding/hex"
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
		if err := w.check(); err != nil {
			yield("", err)
			return
		}
		var ids []store.StageID
		var hexIDs [][32]byte
		names := [][]byte{bucketStages, bucketQuarantine}
		if w.log != nil {
			// The staged stages are the log's index: collect it, in a
			// scratch file (hex is made while yielding).
			names = [][]byte{bucketQuarantine}
			hs, odd, err := w.log.keys()
			if err != nil {
				yield("", err)
				return
			}
			defer hs.Close()
			hexIDs, ids = hs.All(), odd
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
					ids = append(ids, store.StageID(k))
				}
			}
			return nil
		})
		if err != nil {
			yield("", err)
			return
		}
		for _, k := range hexIDs {
			if !yield(store.StageID(hex.EncodeToString(k[:])), nil) {
				return
			}
		}
		for _, id := range ids {
			if !yield(id, nil) {
				return
			}
		}
	}
}
