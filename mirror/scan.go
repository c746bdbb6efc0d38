package mirror

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

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
			ls, err := s.ov.lists()
			if err != nil {
				return err
			}
			if kind == store.LifecycleUnknown {
				return s.scanMerged(sb, ls.hidden[0], ls.live[0], func(id, raw []byte) error {
					if n%4096 == 0 {
						if err := ctx.Err(); err != nil {
							return err
						}
					}
					n++
					if err := fn(store.StageID(id), raw); err != nil {
						fnErr = err
						return err
					}
					return nil
				})
			}
			pb := tx.Bucket(posBucket(kind))
			if pb == nil {
				return s.missingBucket(posBucket(kind))
			}
			return s.mergeFrom(posBucket(kind), pb, sb, 0, ls.hidden[class(kind)], ls.live[class(kind)], 0, func(id, raw []byte) (bool, error) {
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
			return s.scanChecked(sb, func(id, raw []byte) error {
				if n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				n++
				if err := fn(store.StageID(id), raw); err != nil {
					fnErr = err
					return err
				}
				return nil
			})
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

// scanBatch is how many records a scan checks at a time.
const scanBatch = 256

// scanItem is one record of a scan: its key and value (the snapshot's
// memory, valid in the scan's transaction), the delta it comes from (nil:
// the base) and, once checked, its raw JSON or what is wrong with it.
type scanItem struct {
	id, v, raw []byte
	src        *layer
	err        error
}

// corrupt is the error of a checked item that failed its check.
func (s *snap) corrupt(it *scanItem) error {
	if it.src == nil {
		return s.corruptRecord(it.id, it.err)
	}
	return fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, it.src.path, it.id, it.err)
}

// scanChecked calls emit with the id and raw JSON of every record of the
// stages bucket sb, in order, after checking each record's checksum.
// The checks (a CRC-32C of every record's bytes: most of a scan's time,
// bound by memory bandwidth) run a batch at a time on up to GOMAXPROCS
// goroutines; emit runs on the caller's, in order, and a damaged record
// stops the scan where it is.
func (s *snap) scanChecked(sb *bolt.Bucket, emit func(id, raw []byte) error) error {
	batch := make([]scanItem, 0, scanBatch)
	flush := func() error {
		checkItems(batch)
		for _, it := range batch {
			if it.err != nil {
				return s.corrupt(&it)
			}
			if err := emit(it.id, it.raw); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	c := sb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		batch = append(batch, scanItem{id: k, v: v})
		if len(batch) == scanBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// scanMerged is scanChecked over base and overlay: the base's records
// but those the overlay touches (the sorted ids hidden), merged in id
// order with the overlay's live ones (the sorted ids live), each read
// from its delta in a read transaction held for the scan, and checked in
// batches as scanChecked checks them.
func (s *snap) scanMerged(sb *bolt.Bucket, hidden, live []string, emit func(id, raw []byte) error) error {
	txs := map[*layer]*bolt.Tx{}
	defer func() {
		for _, tx := range txs {
			_ = tx.Rollback()
		}
	}()
	value := func(id string) (it scanItem, err error) {
		l := s.ov.entry(id).src
		it = scanItem{id: []byte(id), src: l}
		err = guarded(l.path, func() error {
			tx, ok := txs[l]
			if !ok {
				var err error
				if tx, err = l.db.Begin(false); err != nil {
					return err
				}
				txs[l] = tx
			}
			if it.v = tx.Bucket(bucketStages).Get(it.id); it.v == nil {
				return corruptf(l.path, "stage %s is missing", id)
			}
			return nil
		})
		return it, err
	}
	batch := make([]scanItem, 0, scanBatch)
	flush := func() error {
		checkItems(batch)
		for _, it := range batch {
			if it.err != nil {
				return s.corrupt(&it)
			}
			if err := emit(it.id, it.raw); err != nil {
				return err
			}
		}
		batch = batch[:0]
		return nil
	}
	c := sb.Cursor()
	k, v := c.First()
	for h, j := 0, 0; k != nil || j < len(live); {
		if k != nil { // skip it if hidden: both walk in id order
			for h < len(hidden) && hidden[h] < string(k) {
				h++
			}
			if h < len(hidden) && hidden[h] == string(k) {
				k, v = c.Next()
				continue
			}
		}
		if k != nil && (j >= len(live) || string(k) < live[j]) {
			batch = append(batch, scanItem{id: k, v: v})
			k, v = c.Next()
		} else {
			it, err := value(live[j])
			if err != nil {
				return err
			}
			batch = append(batch, it)
			j++
		}
		if len(batch) == scanBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// checkItems sets the raw JSON or the error of every item, on up to
// GOMAXPROCS goroutines. A memory fault reading an item (a file cut
// short under its mapping) is that item's error.
func checkItems(items []scanItem) {
	check := func(part []scanItem) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		i := 0
		defer func() {
			if r := recover(); r != nil {
				part[i].err = fmt.Errorf("reading it panicked: %v", r)
			}
		}()
		for ; i < len(part); i++ {
			part[i].raw, part[i].err = recordRaw(part[i].id, part[i].v)
		}
	}
	workers := min(runtime.GOMAXPROCS(0), (len(items)+63)/64)
	if workers <= 1 {
		check(items)
		return
	}
	per := (len(items) + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < len(items); lo += per {
		wg.Go(func() { check(items[lo:min(lo+per, len(items))]) })
	}
	wg.Wait()
}
