package mirror

import (
	"context"
	"fmt"

	"github.com/noether-mirror/mirror/store"
	bolt "go.etcd.io/bbolt"
)

// ScanRaw calls fn with the id and raw JSON of every stage of kind
// (store.LifecycleUnknown: every stage) in storage order, all inside one
// read transaction, without copying: raw points into the snapshot's memory
// map and is valid only until fn returns. Copy what you keep. Each
// record's checksum is verified before fn sees it. A non-nil error from fn
// stops the scan and is returned as is.
//
// Storage order is the order the records were written in (for a mirror
// made by a sync, the registry's listing order; id order in a format-1
// file): ScanRaw reads the file front to back, which is what makes it the
// fastest way through a snapshot. Records iterates in id order, and is
// the one to use when the loop body keeps the bytes or does slow work,
// since a long scan keeps its transaction open.
func (sn *Snapshot) ScanRaw(ctx context.Context, kind store.LifecycleKind, fn func(id store.StageID, raw []byte) error) error {
	s, err := sn.get()
	if err != nil {
		return err
	}
	var fnErr error
	err = s.view(func(tx *bolt.Tx) error {
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
		if s.meta.FormatVersion >= 2 {
			return s.scanLog(tx, kind, visit)
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
				return corruptf(s.meta.Path, "index %s lists stage %s, which is missing", posBucket(kind), id)
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
	if err != nil {
		return fmt.Errorf("scan %s: %w", sn.path, err)
	}
	return nil
}

// scanLog is ScanRaw's walk of a format-2 snapshot: its log, front to
// back, which holds every stage exactly once (verify checks that).
func (s *snap) scanLog(tx *bolt.Tx, kind store.LifecycleKind, visit func(id, rec []byte, n int) error) error {
	lb := tx.Bucket(bucketLog)
	if lb == nil {
		return s.missingBucket(bucketLog)
	}
	n := 0
	c := lb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		id, rec, err := splitLogValue(v)
		if err != nil {
			return corruptf(s.meta.Path, "log entry %x: %v", k, err)
		}
		if kind != store.LifecycleUnknown {
			r, err := decodeBorrowed(id, rec)
			if err != nil {
				return s.corruptRecord(id, err)
			}
			if r.Lifecycle.Kind != kind {
				continue
			}
		}
		if err := visit(id, rec, n); err != nil {
			return err
		}
		n++
	}
	return nil
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
