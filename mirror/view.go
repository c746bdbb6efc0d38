package mirror

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"maps"
	"slices"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// The reads of a generation whose deltas change its base: each merges the
// base file with the overlay, in id order, as if the generation were one
// file. A stage the overlay touches is read from its delta (or is gone);
// any other from the base.

// ovRaw returns a copy of the raw JSON of a touched stage.
func (s *snap) ovRaw(e *ovEntry, id store.StageID) ([]byte, error) {
	if e.src == nil {
		return nil, store.NotFoundError(id)
	}
	return e.src.raw([]byte(id))
}

// ovRecord returns the record of a touched stage.
func (s *snap) ovRecord(e *ovEntry, id store.StageID) (Record, error) {
	if e.src == nil {
		return Record{}, store.NotFoundError(id)
	}
	return e.src.record([]byte(id))
}

// overlaid reports the overlay's entry for id when the generation has
// deltas that touch it.
func (s *snap) overlaid(id store.StageID) (*ovEntry, bool, error) {
	if s.ov == nil {
		return nil, false, nil
	}
	return s.ov.touched(keyBytes(string(id)))
}

// class is the position class of a lifecycle kind (LifecycleUnknown:
// every stage).
func class(kind store.LifecycleKind) int {
	if int(kind) >= classes {
		return 0
	}
	return int(kind)
}

// ovPage is page over base and overlay. The generation's stages of a
// class are the base's, less those the overlay touches (hidden), plus
// the overlay's live ones, all in id order. The position of the base's
// q-th stage in that order is q less the hidden ids below it plus the
// live ids below it, which grows with q: a binary search over base
// positions finds where offset falls, and a merge walks on from there.
// The caller has checked offset and limit against the total, as page does.
func (s *snap) ovPage(kind store.LifecycleKind, offset, limit, total int) ([][]byte, int, error) {
	ls, err := s.ov.lists()
	if err != nil {
		return nil, 0, err
	}
	c := class(kind)
	hidden, live := ls.hidden[c], ls.live[c]
	nb := s.base.count(kind)
	var out [][]byte
	err = s.view(func(tx *bolt.Tx) error {
		pb, sb := tx.Bucket(posBucket(kind)), tx.Bucket(bucketStages)
		if pb == nil || sb == nil {
			return s.missingBucket(posBucket(kind))
		}
		var probeErr error
		rank := func(q int) int { // merged position of base stage q
			if q >= nb {
				return total
			}
			id := pb.Get(beUint64(uint64(q)))
			if id == nil {
				probeErr = s.missingStage(posBucket(kind), beUint64(uint64(q)))
				return total
			}
			return q - countBelow(hidden, id) + countBelow(live, id)
		}
		// The first base stage whose rank passes offset; start one before.
		q := sort.Search(nb+1, func(q int) bool { return rank(q) > offset })
		if probeErr != nil {
			return probeErr
		}
		pos, j := 0, 0
		if q > 0 {
			q--
			pos = rank(q)
			id := pb.Get(beUint64(uint64(q)))
			j = countBelow(live, id)
		}
		return s.mergeFrom(posBucket(kind), pb, sb, q, hidden, live, j, func(id []byte, raw []byte) (bool, error) {
			if pos >= offset {
				out = append(out, bytes.Clone(raw))
			}
			pos++
			return len(out) < limit, nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	return out, total, nil
}

// mergeFrom walks, in id order, the base stages of position bucket pb
// from position q but those the overlay touches (the sorted ids hidden:
// the overlay's lists for pb's class), merged with live[j:], calling fn
// with each id and raw JSON (valid only during the call) until it
// returns false. (A scan is scanMerged.)
func (s *snap) mergeFrom(name []byte, pb, sb *bolt.Bucket, q int, hidden, live []string, j int, fn func(id, raw []byte) (bool, error)) error {
	next := baseWalk(pb, sb, q)
	bid, v := next()
	h := -1 // hidden[h] is the first hidden id not below bid
	for {
		for bid != nil {
			if h < 0 {
				h = countBelow(hidden, bid)
			}
			for h < len(hidden) && hidden[h] < string(bid) {
				h++
			}
			if h >= len(hidden) || hidden[h] != string(bid) {
				break
			}
			bid, v = next()
		}
		if bid == nil && j >= len(live) {
			return nil
		}
		var id, raw []byte
		if bid != nil && (j >= len(live) || string(bid) < live[j]) {
			if v == nil {
				return s.missingStage(name, bid)
			}
			r, err := recordRaw(bid, v)
			if err != nil {
				return s.corruptRecord(bid, err)
			}
			id, raw = bid, r
			bid, v = next()
		} else {
			r, err := s.ov.entry(live[j]).src.raw([]byte(live[j]))
			if err != nil {
				return err
			}
			id, raw = []byte(live[j]), r
			j++
		}
		more, err := fn(id, raw)
		if err != nil || !more {
			return err
		}
	}
}

// baseWalk returns an iterator over (id, record value) of the base's
// stages from position q of pb (a value is nil when the position lists a
// missing stage). It returns a nil id at the end.
func baseWalk(pb, sb *bolt.Bucket, q int) func() (id, v []byte) {
	c := pb.Cursor()
	k, id := c.Seek(beUint64(uint64(q)))
	return func() ([]byte, []byte) {
		if k == nil {
			return nil, nil
		}
		out := id
		k, id = c.Next()
		return out, sb.Get(out)
	}
}

// ovRecords is records over base and overlay.
func (s *snap) ovRecords(ctx context.Context, kind store.LifecycleKind, prefix []byte) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		ls, err := s.ov.lists()
		if err != nil {
			yield(Record{}, err)
			return
		}
		live := ls.live[class(kind)]
		j := countBelow(live, prefix)
		next := func() (Record, bool, error) { // the next live overlay record with prefix
			if j >= len(live) || !strings.HasPrefix(live[j], string(prefix)) {
				return Record{}, false, nil
			}
			id := live[j]
			j++
			rec, err := s.ov.entry(id).src.record([]byte(id))
			return rec, err == nil, err
		}
		ov, ok, err := next()
		for r, err2 := range s.baseRecords(ctx, kind, prefix) {
			if err2 != nil {
				yield(Record{}, err2)
				return
			}
			if _, t, err := s.ov.touched([]byte(r.ID)); err != nil {
				yield(Record{}, err)
				return
			} else if t {
				continue
			}
			for ok && ov.ID < r.ID {
				if !yield(ov, nil) {
					return
				}
				ov, ok, err = next()
			}
			if err != nil {
				yield(Record{}, err)
				return
			}
			if !yield(r, nil) {
				return
			}
		}
		for ok {
			if !yield(ov, nil) {
				return
			}
			ov, ok, err = next()
		}
		if err != nil {
			yield(Record{}, err)
		}
	}
}

// ovQuarantined is quarantined over base and overlay.
func (s *snap) ovQuarantined(ctx context.Context) iter.Seq2[QuarantineEntry, error] {
	return func(yield func(QuarantineEntry, error) bool) {
		keys := slices.Sorted(maps.Keys(s.ov.quar))
		j := 0
		// emit yields the overlay's live entries below key ("" : all).
		emit := func(below string, all bool) bool {
			for ; j < len(keys) && (all || keys[j] < below); j++ {
				l := s.ov.quar[keys[j]]
				if l == nil {
					continue
				}
				v, err := l.value(bucketQuarantine, []byte(keys[j]))
				if err == nil && v == nil {
					err = corruptf(l.path, "quarantine entry %q is missing", keys[j])
				}
				var q QuarantineEntry
				if err == nil {
					if q, err = decodeQuarantine([]byte(keys[j]), v); err != nil {
						err = fmt.Errorf("%w: %s: quarantine entry %q: %v: run `mirror sync` to repair", ErrCorrupt, l.path, keys[j], err)
					}
				}
				if err != nil {
					yield(QuarantineEntry{}, err)
					return false
				}
				if !yield(q, nil) {
					return false
				}
			}
			return true
		}
		for q, err := range s.baseQuarantined(ctx) {
			if err != nil {
				yield(QuarantineEntry{}, err)
				return
			}
			if !emit(q.Key, false) {
				return
			}
			if _, t := s.ov.quar[q.Key]; t {
				continue
			}
			if !yield(q, nil) {
				return
			}
		}
		emit("", true)
	}
}

// ovIndexed adds the overlay's live stages to what the base's index
// found (ids and raws in id order, those the overlay touches already
// left out), keeping id order.
func (s *snap) ovIndexed(sig bool, value string, keep func(v []byte) bool, first bool, ids [][]byte, raws [][]byte) ([][]byte, error) {
	list, err := s.ov.liveWith(sig, value)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	i := 0
	for _, id := range list {
		e, _, err := s.ov.touched(keyBytes(id))
		if err != nil {
			return nil, err
		}
		if !keep([]byte{byte(e.kind)}) {
			continue
		}
		for i < len(ids) && string(ids[i]) < id {
			out = append(out, raws[i])
			i++
		}
		raw, err := e.src.raw(keyBytes(id))
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	if out == nil { // nothing from the overlay: the base's list as is
		out = raws
	} else {
		out = append(out, raws[i:]...)
	}
	if first && len(out) > 1 {
		out = out[:1]
	}
	return out, nil
}
