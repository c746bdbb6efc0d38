package mirror

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"maps"
	"runtime/debug"
	"sync/atomic"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// Snapshot is one published snapshot pinned for reading: every read sees
// the same content however many snapshots are published meanwhile. It is
// safe for concurrent use. Close it when done; reads after Close fail with
// ErrClosed. Everything it returns is a copy owned by the caller.
type Snapshot struct {
	s      *snap
	path   string
	closed atomic.Bool
}

var (
	_ store.Reader        = (*Snapshot)(nil)
	_ store.PrefixScanner = (*Snapshot)(nil)
)

// Close unpins the snapshot. It is idempotent.
func (sn *Snapshot) Close() error {
	if sn.closed.CompareAndSwap(false, true) {
		sn.s.release()
	}
	return nil
}

func (sn *Snapshot) get() (*snap, error) {
	if sn.closed.Load() {
		return nil, fmt.Errorf("%w: snapshot of %s", ErrClosed, sn.path)
	}
	return sn.s, nil
}

// Meta describes the pinned snapshot (with the sidecar's freshness when
// it speaks for this generation).
func (sn *Snapshot) Meta() Meta { return sn.s.metaWithSidecar(sn.path) }

// chunkSize is how many records an iteration decodes per read
// transaction; the caller's loop body never runs inside a transaction.
const chunkSize = 256

// view runs fn in a read transaction. A panic inside bbolt (which it does
// on some damaged pages) or a memory fault becomes ErrCorrupt.
func (s *snap) view(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptf(s.meta.Path, "reading it failed: %v", r)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return s.db.View(fn)
}

func (s *snap) corruptRecord(id []byte, err error) error {
	return fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, s.meta.Path, id, err)
}

func (s *snap) missingBucket(name []byte) error {
	return corruptf(s.meta.Path, "bucket %q is missing", name)
}

// missingStage reports an index entry whose stage is not in the file.
func (s *snap) missingStage(index, id []byte) error {
	return corruptf(s.meta.Path, "index %s lists stage %s, which is missing", index, id)
}

// pointReader runs fn in one of the base file's pooled read transactions
// (dataFile.view), once its stages and index buckets are found, with the
// same panic protection as view.
func (s *snap) pointReader(fn func(r *fileTx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptf(s.meta.Path, "reading it failed: %v", p)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return s.file.view(func(r *fileTx) error {
		for _, b := range [][]byte{bucketStages, bucketByName, bucketBySig} {
			if r.bucket(b) == nil {
				return s.missingBucket(b)
			}
		}
		return fn(r)
	})
}

// keyBytes views s as bytes without copying, for look-up keys only: bbolt
// never modifies or retains a key passed to Get or Seek, and the slice must
// not be written to.
func keyBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// getRaw returns a copy of the stage JSON stored under id.
func (s *snap) getRaw(id store.StageID) ([]byte, error) {
	if e, ok, err := s.overlaid(id); err != nil {
		return nil, err
	} else if ok {
		return s.ovRaw(e, id)
	}
	var out []byte
	err := s.pointReader(func(r *fileTx) error {
		key := keyBytes(string(id))
		v := r.get(bucketStages, key)
		if v == nil {
			return store.NotFoundError(id)
		}
		raw, err := recordRaw(key, v)
		if err != nil {
			return s.corruptRecord(key, err)
		}
		out = bytes.Clone(raw)
		return nil
	})
	return out, err
}

func (s *snap) getRecord(id store.StageID) (Record, error) {
	if e, ok, err := s.overlaid(id); err != nil {
		return Record{}, err
	} else if ok {
		return s.ovRecord(e, id)
	}
	var rec Record
	err := s.pointReader(func(r *fileTx) error {
		var err error
		rec, err = s.recordIn(r, []byte(id))
		return err
	})
	return rec, err
}

func (s *snap) recordIn(r *fileTx, id []byte) (Record, error) {
	v := r.get(bucketStages, id)
	if v == nil {
		return Record{}, store.NotFoundError(store.StageID(id))
	}
	rec, err := decodeRecord(id, v)
	if err != nil {
		return Record{}, s.corruptRecord(id, err)
	}
	return rec, nil
}

func (s *snap) contains(id store.StageID) (bool, error) {
	if e, ok, err := s.overlaid(id); err != nil {
		return false, err
	} else if ok {
		return e.src != nil, nil
	}
	var ok bool
	err := s.pointReader(func(r *fileTx) error {
		ok = r.get(bucketStages, keyBytes(string(id))) != nil
		return nil
	})
	return ok, err
}

func (s *snap) page(kind store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	if offset < 0 || limit < 0 {
		return nil, 0, fmt.Errorf("page offset %d and limit %d must not be negative", offset, limit)
	}
	total := s.meta.count(kind)
	if offset >= total || limit == 0 {
		return nil, total, nil
	}
	limit = min(limit, total-offset)
	if s.ov != nil {
		return s.ovPage(kind, offset, limit, total)
	}
	out := make([][]byte, 0, limit)
	err := s.view(func(tx *bolt.Tx) error {
		pb, sb := tx.Bucket(posBucket(kind)), tx.Bucket(bucketStages)
		if pb == nil || sb == nil {
			return s.missingBucket(posBucket(kind))
		}
		size := 0
		c := pb.Cursor()
		for k, id := c.Seek(beUint64(uint64(offset))); k != nil && len(out) < limit; k, id = c.Next() {
			v := sb.Get(id)
			if v == nil {
				return s.missingStage(posBucket(kind), id)
			}
			raw, err := recordRaw(id, v)
			if err != nil {
				return s.corruptRecord(id, err)
			}
			out = append(out, raw)
			size += len(raw)
		}
		// One allocation for the whole page; each slice is capped so an
		// append by the caller cannot overwrite its neighbour.
		arena := make([]byte, 0, size)
		for i, raw := range out {
			start := len(arena)
			arena = append(arena, raw...)
			out[i] = arena[start:len(arena):len(arena)]
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, total, nil
}

// records iterates, in id order, over the records of one lifecycle kind
// (LifecycleUnknown: all) whose id starts with prefix.
func (s *snap) records(ctx context.Context, kind store.LifecycleKind, prefix []byte) iter.Seq2[Record, error] {
	if s.ov != nil {
		return s.ovRecords(ctx, kind, prefix)
	}
	return s.baseRecords(ctx, kind, prefix)
}

// baseRecords is records of the base file alone.
func (s *snap) baseRecords(ctx context.Context, kind store.LifecycleKind, prefix []byte) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		var from []byte // next key to seek: a stages key or a position
		if kind == store.LifecycleUnknown {
			from = append([]byte{}, prefix...)
		} else {
			from = beUint64(0)
		}
		for from != nil {
			if err := ctx.Err(); err != nil {
				yield(Record{}, err)
				return
			}
			var batch []Record
			err := s.view(func(tx *bolt.Tx) error {
				var err error
				batch, from, err = s.recordChunk(tx, kind, prefix, from)
				return err
			})
			if err != nil {
				yield(Record{}, err)
				return
			}
			for _, r := range batch {
				if !yield(r, nil) {
					return
				}
			}
		}
	}
}

// recordChunk decodes up to chunkSize records starting at from and returns
// where to continue (nil at the end). Each Raw is its own allocation; the
// chunk's small strings share a few arena blocks.
func (s *snap) recordChunk(tx *bolt.Tx, kind store.LifecycleKind, prefix, from []byte) ([]Record, []byte, error) {
	sb := tx.Bucket(bucketStages)
	if sb == nil {
		return nil, nil, s.missingBucket(bucketStages)
	}
	out := make([]Record, 0, chunkSize)
	a := &strArena{}
	sl := newSlab(chunkSize)
	add := func(k, v []byte) error {
		rec, err := decodeDetached(k, v, a, sl)
		if err != nil {
			return s.corruptRecord(k, err)
		}
		out = append(out, rec)
		return nil
	}
	if kind == store.LifecycleUnknown {
		c := sb.Cursor()
		for k, v := c.Seek(from); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(out) == chunkSize {
				return out, append([]byte(out[len(out)-1].ID), 0), nil
			}
			if err := add(k, v); err != nil {
				return nil, nil, err
			}
		}
		return out, nil, nil
	}
	pb := tx.Bucket(posBucket(kind))
	if pb == nil {
		return nil, nil, s.missingBucket(posBucket(kind))
	}
	c := pb.Cursor()
	for k, id := c.Seek(from); k != nil; k, id = c.Next() {
		if len(out) == chunkSize {
			return out, bytes.Clone(k), nil
		}
		v := sb.Get(id)
		if v == nil {
			return nil, nil, s.missingStage(posBucket(kind), id)
		}
		if err := add(id, v); err != nil {
			return nil, nil, err
		}
	}
	return out, nil, nil
}

func (s *snap) quarantined(ctx context.Context) iter.Seq2[QuarantineEntry, error] {
	if s.ov != nil {
		return s.ovQuarantined(ctx)
	}
	return s.baseQuarantined(ctx)
}

// baseQuarantined is quarantined of the base file alone.
func (s *snap) baseQuarantined(ctx context.Context) iter.Seq2[QuarantineEntry, error] {
	return func(yield func(QuarantineEntry, error) bool) {
		from := []byte{}
		for from != nil {
			if err := ctx.Err(); err != nil {
				yield(QuarantineEntry{}, err)
				return
			}
			var batch []QuarantineEntry
			err := s.view(func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketQuarantine)
				if b == nil {
					return s.missingBucket(bucketQuarantine)
				}
				c := b.Cursor()
				var last []byte
				for k, v := c.Seek(from); ; k, v = c.Next() {
					if k == nil {
						from = nil
						return nil
					}
					if len(batch) == chunkSize {
						from = append(bytes.Clone(last), 0)
						return nil
					}
					q, err := decodeQuarantine(k, v)
					if err != nil {
						return fmt.Errorf("%w: %s: quarantine entry %q: %v: run `mirror sync` to repair", ErrCorrupt, s.meta.Path, k, err)
					}
					batch = append(batch, q)
					last = k
				}
			})
			if err != nil {
				yield(QuarantineEntry{}, err)
				return
			}
			for _, q := range batch {
				if !yield(q, nil) {
					return
				}
			}
		}
	}
}

// indexed returns copies of the raw JSON of the stages an index lists
// under value (keys value 0x00 id), in id order, that keep accepts (given
// the index entry's value); first stops at the first one. An entry whose
// id part contains 0x00 might belong to a longer value that starts with
// value 0x00, so it is confirmed against its record; any other entry is
// exactly value's.
func (s *snap) indexed(sig bool, value string, keep func(v []byte) bool, first bool) ([][]byte, error) {
	var out, ids [][]byte
	baseFirst := first && s.ov == nil // with an overlay, an earlier id may come from it
	err := s.pointReader(func(r *fileTx) error {
		var buf [80]byte // holds a signature id or a typical name without allocating
		p := append(append(buf[:0], value...), 0)
		c := r.cursor(indexBucket(sig))
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if !keep(v) {
				continue
			}
			id := k[len(p):]
			if s.ov != nil {
				if _, t, err := s.ov.touched(id); err != nil {
					return err
				} else if t {
					continue
				}
			}
			ambiguous := bytes.IndexByte(id, 0) >= 0
			val := r.get(bucketStages, id)
			if val == nil {
				if ambiguous {
					continue // a longer value's entry
				}
				return corruptf(s.meta.Path, "an index lists stage %s, which is missing", id)
			}
			if ambiguous {
				rec, err := decodeRecord(id, val)
				if err != nil {
					return s.corruptRecord(id, err)
				}
				if (sig && string(rec.SignatureID) != value) || (!sig && (!rec.HasName || rec.Name != value)) {
					continue
				}
			}
			raw, err := recordRaw(id, val)
			if err != nil {
				return s.corruptRecord(id, err)
			}
			out = append(out, bytes.Clone(raw))
			if s.ov != nil {
				ids = append(ids, id) // the file's memory: used inside the transaction
			}
			if baseFirst {
				return nil
			}
		}
		if s.ov != nil {
			var err error
			out, err = s.ovIndexed(sig, value, keep, first, ids, out)
			return err
		}
		return nil
	})
	return out, err
}

func (s *snap) byName(name string) ([][]byte, error) {
	return s.indexed(false, name, func([]byte) bool { return true }, false)
}

func isActive(v []byte) bool {
	return len(v) == 1 && store.LifecycleKind(v[0]) == store.LifecycleActive
}

func (s *snap) activeBySig(sig store.SignatureID, first bool) ([][]byte, error) {
	if sig == "" {
		return nil, nil
	}
	return s.indexed(true, string(sig), isActive, first)
}

func (s *snap) stats() store.Stats {
	st := store.Stats{Total: s.meta.Total, ByLifecycle: map[string]int{}, ByEffect: maps.Clone(s.meta.ByEffect)}
	for k, n := range s.meta.Counts {
		if n > 0 {
			st.ByLifecycle[k] = n
		}
	}
	if st.ByEffect == nil {
		st.ByEffect = map[string]int{}
	}
	return st
}

// decodeAll decodes stage JSON read from the snapshot at path.
func decodeAll(path string, raws [][]byte) ([]*store.Stage, error) {
	out := make([]*store.Stage, 0, len(raws))
	for _, raw := range raws {
		s, err := store.DecodeStage(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// filterKind picks the index that serves f and reports whether f can
// match anything at all.
func filterKind(f store.Filter) (store.LifecycleKind, bool) {
	if f.Lifecycle != nil {
		if f.Kind != store.LifecycleUnknown && f.Kind != f.Lifecycle.Kind {
			return 0, false
		}
		return f.Lifecycle.Kind, true
	}
	return f.Kind, true
}

// stages iterates over the decoded stages f selects, in id order.
func (s *snap) stages(ctx context.Context, f store.Filter, prefix []byte) iter.Seq2[*store.Stage, error] {
	return func(yield func(*store.Stage, error) bool) {
		kind, ok := filterKind(f)
		if !ok {
			return
		}
		for r, err := range s.records(ctx, kind, prefix) {
			if err != nil {
				yield(nil, err)
				return
			}
			if f.Lifecycle != nil && r.Lifecycle != *f.Lifecycle {
				continue
			}
			st, err := r.Decode()
			if err != nil {
				yield(nil, err)
				return
			}
			if !f.Match(st) {
				continue
			}
			if !yield(st, nil) {
				return
			}
		}
	}
}
