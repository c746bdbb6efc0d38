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
	n := 0
	emit := func(id, raw []byte) error {
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
		switch {
		case kind == store.LifecycleUnknown && s.ov != nil:
			return s.scanMerged(sb, hidden, live, emit)
		case kind == store.LifecycleUnknown:
			return s.scanChecked(sb, emit)
		}
		pb := tx.Bucket(posBucket(kind))
		if pb == nil {
			return s.missingBucket(posBucket(kind))
		}
		if s.ov != nil {
			return s.mergeFrom(posBucket(kind), pb, sb, 0, hidden, live, 0, func(id, raw []byte) (bool, error) {
				err := emit(id, raw)
				return err == nil, err
			})
		}
		c := pb.Cursor()
		for _, id := c.First(); id != nil; _, id = c.Next() {
			v := sb.Get(id)
			if v == nil {
				return s.missingStage(posBucket(kind), id)
			}
			raw, err := recordRaw(id, v)
			if err != nil {
				return s.corruptRecord(id, err)
			}
			if err := emit(id, raw); err != nil {
				return err
			}
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
// stages bucket sb, in order, after checking each record's checksum
// (see checker).
func (s *snap) scanChecked(sb *bolt.Bucket, emit func(id, raw []byte) error) error {
	ck := &checker{s: s, emit: emit}
	defer ck.stop()
	c := sb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := ck.add(scanItem{id: k, v: v}); err != nil {
			return err
		}
	}
	return ck.finish()
}

// scanMerged is scanChecked over base and overlay: the base's records
// but those the overlay touches (the sorted ids hidden), merged in id
// order with the overlay's live ones (the sorted ids live), each read
// from its delta in a read transaction held for the scan.
func (s *snap) scanMerged(sb *bolt.Bucket, hidden, live []string, emit func(id, raw []byte) error) error {
	txs := map[*layer]*bolt.Tx{}
	defer func() {
		for _, tx := range txs {
			_ = tx.Rollback()
		}
	}()
	ck := &checker{s: s, emit: emit}
	defer ck.stop() // before the deltas' transactions end
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
		it := scanItem{id: k, v: v}
		if k != nil && (j >= len(live) || string(k) < live[j]) {
			k, v = c.Next()
		} else {
			var err error
			if it, err = value(live[j]); err != nil {
				return err
			}
			j++
		}
		if err := ck.add(it); err != nil {
			return err
		}
	}
	return ck.finish()
}

// checker checks a scan's records (a CRC-32C of each record's bytes:
// most of a scan's time, bound by memory bandwidth) a batch at a time on
// up to GOMAXPROCS goroutines, while the scan collects the next batch and
// emits the one checked before; emit runs on the scan's goroutine, in
// order, and a damaged record stops the scan where it is. The items are
// the files' memory: stop must return before the scan's transactions
// end.
type checker struct {
	s       *snap
	emit    func(id, raw []byte) error
	batch   []scanItem    // being collected
	pending []scanItem    // being checked, until done is closed
	done    chan struct{} // nil: nothing pending
}

// add collects it, and flushes a full batch.
func (c *checker) add(it scanItem) error {
	c.batch = append(c.batch, it)
	if len(c.batch) < scanBatch {
		return nil
	}
	return c.flush()
}

// flush starts checking the collected batch, then emits the one checked
// before it.
func (c *checker) flush() error {
	prev := c.wait()
	c.pending, c.done = c.batch, make(chan struct{})
	go func(items []scanItem, done chan struct{}) {
		checkItems(items)
		close(done)
	}(c.pending, c.done)
	err := c.emitAll(prev)
	c.batch = prev[:0]
	if c.batch == nil {
		c.batch = make([]scanItem, 0, scanBatch)
	}
	return err
}

// finish checks and emits what is left.
func (c *checker) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	return c.emitAll(c.wait())
}

// wait waits for the pending batch's checks and returns it.
func (c *checker) wait() []scanItem {
	if c.done == nil {
		return nil
	}
	<-c.done
	c.done = nil
	prev := c.pending
	c.pending = nil
	return prev
}

// stop waits for any check still running (after an error).
func (c *checker) stop() { c.wait() }

// emitAll emits checked items in order, stopping at a damaged one.
func (c *checker) emitAll(items []scanItem) error {
	for i := range items {
		if items[i].err != nil {
			return c.s.corrupt(&items[i])
		}
		if err := c.emit(items[i].id, items[i].raw); err != nil {
			return err
		}
	}
	return nil
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
