package mirror

import (
	"context"
	"errors"
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
	n := 0
	emit := func(id store.StageID, raw []byte) error {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		n++
		if err := fn(id, raw); err != nil {
			fnErr = err
			return err
		}
		return nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		sb := tx.Bucket(bucketStages)
		if sb == nil {
			return s.missingBucket(bucketStages)
		}
		var hidden, live []string // the overlay's, of kind's class
		if s.ov != nil {
			ls, err := s.ov.lists()
			if err != nil {
				return err
			}
			hidden, live = ls.hidden[class(kind)], ls.live[class(kind)]
		}
		name, next := bucketStages, stagesWalk(sb)
		if kind != store.LifecycleUnknown {
			pb := tx.Bucket(posBucket(kind))
			if pb == nil {
				return s.missingBucket(posBucket(kind))
			}
			name, next = posBucket(kind), baseWalk(pb, sb, 0)
		}
		return s.scanMerged(name, next, hidden, live, emit)
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

// corrupt is the error of a checked item that failed its check.
func (s *snap) corrupt(it *scanItem) error {
	if it.src == nil {
		return s.corruptRecord(it.key, it.err)
	}
	return fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, it.src.path, it.id, it.err)
}

// stagesWalk returns an iterator over (id, record value) of the stages
// bucket sb, in id order. It returns a nil id at the end.
func stagesWalk(sb *bolt.Bucket) func() (id, v []byte) {
	c := sb.Cursor()
	var started bool
	return func() ([]byte, []byte) {
		if !started {
			started = true
			return c.First()
		}
		return c.Next()
	}
}

// scanMerged calls emit with the id and raw JSON of each base record next
// yields (from bucket name, for errors) but those the overlay touches (the
// sorted ids hidden), merged in id order with the overlay's live ones (the
// sorted ids live; both nil without an overlay), each read from its delta
// in a read transaction held for the scan; each record's checksum is
// checked first (see checker).
//
// The scan's goroutine reads one key a batch: the last base key, which
// bounds the overlay records that join the batch. The checks compare the
// rest (see checker).
func (s *snap) scanMerged(name []byte, next func() (id, v []byte), hidden, live []string, emit func(id store.StageID, raw []byte) error) error {
	rd := &deltaRecords{ov: s.ov, open: map[*layer]*deltaCursor{}}
	defer rd.close()
	ck := &checker{s: s, emit: emit, hidden: hidden}
	defer ck.stop() // before the deltas' transactions end
	j := 0
	// take adds the live records up to last (nil: up to limit of them).
	take := func(last []byte, limit int) error {
		for n := 0; j < len(live) && n < limit && (last == nil || live[j] <= string(last)); j, n = j+1, n+1 {
			it, err := rd.item(live[j])
			if err != nil {
				return err
			}
			ck.addDelta(it)
		}
		return nil
	}
	flushAt := func(last []byte) error {
		if err := take(last, len(live)); err != nil {
			return err
		}
		return ck.flush()
	}
	var last []byte
	for k, v := next(); k != nil; k, v = next() {
		if v == nil {
			if string(name) == string(bucketStages) { // a nested bucket
				return s.corruptRecord(k, errors.New("it is a bucket, not a record"))
			}
			return s.missingStage(name, k)
		}
		last = k
		if ck.addBase(k, v) {
			if err := flushAt(k); err != nil {
				return err
			}
		}
	}
	if ck.baseLen() > 0 {
		if err := flushAt(last); err != nil {
			return err
		}
	}
	for j < len(live) { // those after every base record
		if err := take(nil, scanBatch); err != nil {
			return err
		}
		if err := ck.flush(); err != nil {
			return err
		}
	}
	return ck.finish()
}

// deltaRecords reads the overlay's records for a scan in id order, from
// one read transaction and cursor per delta, held until close. It steps
// each cursor forward when the next id wanted from its delta is the next
// key there (a merged delta's live records mostly are), and seeks
// otherwise. Used by one goroutine.
type deltaRecords struct {
	ov   *overlay
	open map[*layer]*deltaCursor
	buf  []byte
}

// deltaCursor is one delta's read transaction and stages cursor in a
// deltaRecords.
type deltaCursor struct {
	tx *bolt.Tx
	c  *bolt.Cursor
	at bool // c is on a key
}

// item returns the scan item of the overlay's live stage id, unchecked.
func (r *deltaRecords) item(id string) (scanItem, error) {
	l := r.ov.entry(id).src
	it := scanItem{id: store.StageID(id), src: l}
	err := guarded(l.path, func() error {
		dc := r.open[l]
		if dc == nil {
			tx, err := l.db.Begin(false)
			if err != nil {
				return err
			}
			b := tx.Bucket(bucketStages)
			if b == nil {
				_ = tx.Rollback()
				return corruptf(l.path, "bucket %q is missing", bucketStages)
			}
			dc = &deltaCursor{tx: tx, c: b.Cursor()}
			r.open[l] = dc
		}
		if dc.at {
			if k, v := dc.c.Next(); k != nil && string(k) == id {
				it.key, it.v = k, v
				return nil
			}
		}
		r.buf = append(r.buf[:0], id...)
		k, v := dc.c.Seek(r.buf)
		dc.at = k != nil
		if k == nil || string(k) != id || v == nil {
			return corruptf(l.path, "stage %s is missing", id)
		}
		it.key, it.v = k, v
		return nil
	})
	return it, err
}

// close ends the read transactions.
func (r *deltaRecords) close() {
	for _, dc := range r.open {
		_ = dc.tx.Rollback()
	}
}
