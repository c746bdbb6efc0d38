package mirror

import (
	"context"
	"fmt"

	"github.com/noether-mirror/mirror/store"
	bolt "go.etcd.io/bbolt"
)

// ScanRaw calls fn with the id and raw JSON of every stage of kind
// (store.LifecycleUnknown: every stage) in id order, all inside one read
// transaction, without copying: raw points into the snapshot's memory map
// and is valid only until fn returns. Copy what you keep. Each record's
// checksum is verified before fn sees it. A non-nil error from fn stops
// the scan and is returned as is.
//
// ScanRaw is the fastest way through a snapshot (export, list --json,
// change reports); Records is the one to use when the loop body keeps the
// bytes or does slow work, since a long scan keeps its transaction open.
func (sn *Snapshot) ScanRaw(ctx context.Context, kind store.LifecycleKind, fn func(id store.StageID, raw []byte) error) error {
	s, err := sn.get()
	if err != nil {
		return err
	}
	var fnErr error
	err = s.scanRaw(ctx, kind, func(id store.StageID, raw []byte) error {
		if err := fn(id, raw); err != nil {
			fnErr = err
			return err
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("scan %s: %w", sn.path, err)
	}
	return nil
}

// scanRaw is ScanRaw on the generation s; fn's error comes back as is.
func (s *snap) scanRaw(ctx context.Context, kind store.LifecycleKind, fn func(id store.StageID, raw []byte) error) error {
	var fnErr error
	err := s.view(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketStages)
		if sb == nil {
			return s.missingBucket(bucketStages)
		}
		visit := func(id, v []byte, n int) error {
			if n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			raw, err := recordRaw(id, v)
			if err != nil {
				return s.corruptRecord(id, err)
			}
			if err := fn(store.StageID(id), raw); err != nil {
				fnErr = err
				return err
			}
			return nil
		}
		n := 0
		if s.ov != nil {
			var pb *bolt.Bucket // every stage: the stages bucket in order
			if kind != store.LifecycleUnknown {
				if pb = tx.Bucket(posBucket(kind)); pb == nil {
					return s.missingBucket(posBucket(kind))
				}
			}
			return s.mergeFrom(posBucket(kind), pb, sb, 0, s.ov.lists().live[class(kind)], 0, func(id, raw []byte) (bool, error) {
				if n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return false, err
					}
				}
				n++
				if err := fn(store.StageID(id), raw); err != nil {
					fnErr = err
					return false, err
				}
				return true, nil
			})
		}
		if kind == store.LifecycleUnknown {
			c := sb.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if err := visit(k, v, n); err != nil {
					return err
				}
				n++
			}
			return nil
		}
		pb := tx.Bucket(posBucket(kind))
		if pb == nil {
			return s.missingBucket(posBucket(kind))
		}
		c := pb.Cursor()
		for _, id := c.First(); id != nil; _, id = c.Next() {
			v := sb.Get(id)
			if v == nil {
				return s.missingStage(posBucket(kind), id)
			}
			if err := visit(id, v, n); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// ScanRaw is Snapshot.ScanRaw on the current snapshot.
func (m *Mirror) ScanRaw(ctx context.Context, kind store.LifecycleKind, fn func(id store.StageID, raw []byte) error) error {
	sn, err := m.Snapshot()
	if err != nil {
		return err
	}
	defer sn.Close()
	return sn.ScanRaw(ctx, kind, fn)
}
