package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"

	bolt "go.etcd.io/bbolt"
)

// A merged delta is the first delta of a chain when it holds what a
// chain of earlier deltas did (meta "merged"). It can touch up to
// Options.MaxMerged keys, so readers do not fold it at open: they look
// it up on disk until a read needs the overlay's sorted lists (see
// overlay). This file holds what reads and checks it.

// mergedKeys returns how many stage ids a merged delta touches (as its
// meta says: checkMerged checks it, and an allocation sized by it is
// capped), and whether the delta in tx is one. A delta without a valid
// count is not one: it is folded at open, as any delta, which checks it.
func mergedKeys(tx *bolt.Tx) (int, bool) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, false
	}
	v := meta.Get([]byte(metaMerged))
	if len(v) != 8 {
		return 0, false
	}
	return int(min(binary.BigEndian.Uint64(v), 1<<40)), true
}

// openDeep makes the merged delta l, the chain's first, the overlay's
// deep delta: only its quarantine keys are folded (they are few, and
// every quarantine read needs them).
func (ov *overlay) openDeep(tx *bolt.Tx, l *layer, n int) error {
	if _, err := deltaTx(tx, l, true); err != nil {
		return err
	}
	ov.deep, ov.deepKeys = l, n
	return ov.foldQuarantine(tx, l)
}

// entry returns what the merged delta l says of stage id, if it touches
// it, as its fold would.
func (l *layer) entry(id []byte) (e *ovEntry, ok bool, err error) {
	err = guarded(l.path, func() error {
		return l.view(func(t *fileTx) error {
			if t.bucket(bucketBaseKind) == nil || t.bucket(bucketIndex) == nil || t.bucket(bucketRemoved) == nil {
				return corruptf(l.path, "bucket %q, %q or %q is missing", bucketBaseKind, bucketIndex, bucketRemoved)
			}
			v := t.get(bucketBaseKind, id)
			if v == nil {
				// Untouched, unless the entry is what is damaged: the fold
				// at open that a merged delta skips would have said so.
				if t.get(bucketIndex, id) != nil || t.get(bucketRemoved, id) != nil {
					return corruptf(l.path, "stage %s has no base_kind entry", id)
				}
				return nil
			}
			inBase, kind, valid := parseBaseKind(v)
			if !valid {
				return corruptf(l.path, "base_kind entry of %s is damaged", id)
			}
			e, ok = &ovEntry{inBase: inBase, baseKind: kind, word: l}, true
			iv := t.get(bucketIndex, id)
			if iv == nil {
				return nil // removed (or a removal of what the base never had)
			}
			a := strArena{buf: make([]byte, 0, len(iv))}
			if err := parseIndex(iv, e, &a); err != nil {
				return corruptf(l.path, "stage %s: %v", id, err)
			}
			e.src = l
			return nil
		})
	})
	return e, ok, err
}

// entries returns the fold of every delta, deep's too, building it on
// first use. It never changes after.
func (ov *overlay) entries() (map[string]*ovEntry, error) {
	if ov.deep == nil {
		return ov.stages, nil
	}
	if ov.allDone.Load() {
		return ov.all, nil
	}
	ov.allOnce.Do(func() {
		// Sized as the meta says, up to the default MaxMerged (a damaged
		// count allocates no more); it grows past that if it must.
		hint := min(ov.deepKeys, defaultMaxMerged) + len(ov.stages)
		d := &overlay{stages: make(map[string]*ovEntry, hint), quar: map[string]*layer{}}
		ov.allErr = guarded(ov.deep.path, func() error {
			return ov.deep.db.View(func(tx *bolt.Tx) error { return d.fold(tx, ov.deep) })
		})
		if ov.allErr != nil {
			return
		}
		maps.Copy(d.stages, ov.stages) // a later delta's word replaces the deep one's
		ov.all = d.stages
		ov.allDone.Store(true)
	})
	return ov.all, ov.allErr
}

// entry returns the full fold's entry for id; only after entries (or
// lists) succeeded.
func (ov *overlay) entry(id string) *ovEntry {
	if ov.deep == nil {
		return ov.stages[id]
	}
	return ov.all[id]
}

// liveWith returns the ids of the live stages of the merged delta l whose
// name (sig: signature id) is value, but those later deltas touch (in
// skip), from its names (sigs) index, in id order.
func (l *layer) liveWith(sig bool, value string, skip map[string]*ovEntry) (ids []string, err error) {
	bucket := bucketNames
	if sig {
		bucket = bucketSigs
	}
	err = guarded(l.path, func() error {
		return l.view(func(t *fileTx) error {
			b := t.bucket(bucket)
			if b == nil || t.bucket(bucketIndex) == nil {
				return corruptf(l.path, "bucket %q or %q is missing", bucket, bucketIndex)
			}
			p := append([]byte(value), 0)
			c := b.Cursor()
			for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
				id := k[len(p):]
				if _, later := skip[string(id)]; later {
					continue
				}
				iv := t.get(bucketIndex, id)
				if iv == nil && bytes.IndexByte(id, 0) >= 0 {
					continue // a longer value's entry: value 0x00 ...
				}
				if iv == nil {
					return corruptf(l.path, "the %s index lists stage %s, which has no index entry", bucket, id)
				}
				var e ovEntry
				a := strArena{buf: make([]byte, 0, len(iv))}
				if err := parseIndex(iv, &e, &a); err != nil {
					return corruptf(l.path, "stage %s: %v", id, err)
				}
				if e.has(sig, value) { // else a longer value's entry: value 0x00 ...
					ids = append(ids, string(id))
				}
			}
			return nil
		})
	})
	return ids, err
}

// checkMerged checks what a merged delta adds to a delta: its names and
// sigs buckets hold exactly one entry for each name and signature id its
// index gives a stage, and its meta counts its base_kind entries.
func checkMerged(tx *bolt.Tx) error {
	ix, names, sigs := tx.Bucket(bucketIndex), tx.Bucket(bucketNames), tx.Bucket(bucketSigs)
	if ix == nil || names == nil || sigs == nil {
		return errors.New("a bucket of a merged delta is missing")
	}
	var nNames, nSigs int
	var a strArena
	err := ix.ForEach(func(k, v []byte) error {
		var e ovEntry
		if err := parseIndex(v, &e, &a); err != nil {
			return fmt.Errorf("stage %s: %v", k, err)
		}
		if e.hasName {
			nNames++
			if names.Get(append(append([]byte(e.name), 0), k...)) == nil {
				return fmt.Errorf("the names index does not list stage %s", k)
			}
		}
		if e.sig != "" {
			nSigs++
			if sigs.Get(append(append([]byte(e.sig), 0), k...)) == nil {
				return fmt.Errorf("the sigs index does not list stage %s", k)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n := names.Stats().KeyN; n != nNames {
		return fmt.Errorf("the names index has %d entries for %d named stages", n, nNames)
	}
	if n := sigs.Stats().KeyN; n != nSigs {
		return fmt.Errorf("the sigs index has %d entries for %d signed stages", n, nSigs)
	}
	if n, ok := mergedKeys(tx); !ok || n != tx.Bucket(bucketBaseKind).Stats().KeyN {
		return fmt.Errorf("its meta counts %d stage ids, it touches %d", n, tx.Bucket(bucketBaseKind).Stats().KeyN)
	}
	return nil
}
