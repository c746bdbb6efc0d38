package mirror

import (
	"bytes"
	"maps"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// generation verifies what a generation adds to its base: every
// delta file, then the generation's counts and content digest.
func (v *verifier) generation() error {
	s := v.s
	if s.ov != nil {
		for _, l := range s.ov.layers {
			if err := v.layer(l); err != nil {
				return err
			}
		}
	}
	counts, byEffect, total := map[string]int{}, map[string]int{}, 0
	for rec, err := range s.records(v.ctx, store.LifecycleUnknown, nil) {
		if err != nil {
			return err
		}
		total++
		counts[rec.Lifecycle.Kind.Name()]++
		for _, e := range rec.Effects {
			byEffect[e]++
		}
		if _, ok, err := s.quarValue(string(rec.ID)); err != nil {
			return err
		} else if ok {
			v.problem(string(rec.ID), "generation %d both serves and quarantines it", s.meta.Generation)
		}
	}
	m := s.meta
	if total != m.Total || !maps.Equal(counts, m.Counts) || !maps.Equal(byEffect, m.ByEffect) {
		v.problem("", "generation %d: the manifest counts %d stages %v, its files hold %d %v", m.Generation, m.Total, m.Counts, total, counts)
	}
	st, err := contentHash(v.ctx, s)
	if err != nil {
		return err
	}
	if got := digestHex(&st); got != m.Digest {
		v.problem("", "generation %d: its content digests to %s, the manifest says %s: a file was modified after it was written", m.Generation, got, m.Digest)
	}
	if s.mf.current == m.Generation {
		if want := digestHex(&s.mf.state); want != m.Digest {
			v.problem("", "the manifest's content hash digests to %s, its current generation says %s", want, m.Digest)
		}
	}
	return nil
}

// layer verifies one delta file: every record against its JSON and
// store.Verify, every quarantine entry, every base_kind entry against the
// base, a merged delta's name and signature indexes and count, then
// bbolt's consistency walk.
func (v *verifier) layer(l *layer) error {
	err := guarded(l.path, func() error {
		return l.db.View(func(tx *bolt.Tx) error {
			ix := tx.Bucket(bucketIndex)
			n := 0
			err := tx.Bucket(bucketStages).ForEach(func(k, val []byte) error {
				v.res.Checked++
				n++
				rec, err := decodeRecord(k, val)
				if err != nil {
					v.problem(string(k), "%s: record: %v", l.path, err)
					return nil
				}
				if want := indexValue(&rec); !bytes.Equal(ix.Get(k), want) {
					v.problem(string(k), "%s: index entry %x, the record says %x", l.path, ix.Get(k), want)
				}
				v.stage(string(k), &rec)
				return v.ctx.Err()
			})
			if err == nil && ix.Stats().KeyN != n {
				v.problem("", "%s: %d index entries for %d stages", l.path, ix.Stats().KeyN, n)
			}
			if err != nil {
				return err
			}
			err = tx.Bucket(bucketBaseKind).ForEach(func(k, val []byte) error {
				want, err := v.s.baseKindFile(string(k))
				if err != nil {
					return err
				}
				if len(val) != 2 || [2]byte(val) != want {
					v.problem(string(k), "%s: base_kind %x, the base says %x", l.path, val, want)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if _, merged := mergedKeys(tx); merged {
				if err := checkMerged(tx); err != nil {
					v.problem("", "%s: merged delta: %v", l.path, err)
				}
			}
			return tx.Bucket(bucketQuarantine).ForEach(func(k, val []byte) error {
				if _, err := decodeQuarantine(k, val); err != nil {
					v.problem(string(k), "%s: quarantine entry: %v", l.path, err)
				}
				return nil
			})
		})
	})
	if err != nil {
		return err
	}
	_ = l.db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			v.problem("", "%s: bbolt consistency: %v", l.path, cerr)
		}
		return nil
	})
	return nil
}

// baseKindFile is baseKindOf asked of the base file alone (the overlay
// aside): what a delta's base_kind entry for id must say.
func (s *snap) baseKindFile(id string) ([2]byte, error) {
	val, ok, err := s.baseValue(bucketStages, id)
	if err != nil || !ok {
		return [2]byte{}, err
	}
	rec, err := decodeBorrowed([]byte(id), val)
	if err != nil {
		return [2]byte{}, s.corruptRecord([]byte(id), err)
	}
	return [2]byte{1, byte(rec.Lifecycle.Kind)}, nil
}
