package mirror

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/lthash"
	"github.com/noether-mirror/mirror/store"
)

// changeSet is what a publish changes in the current generation: for
// each stage id and quarantine key, its new stored value, or nil when it
// goes. No-ops (a value equal to the current one, the removal of
// something absent) are never in it.
type changeSet struct {
	stages map[string][]byte
	quar   map[string][]byte
	bytes  int // of the values held
}

// maxChangeBytes bounds the bytes of records a change set holds in
// memory: a publish whose changes pass it compacts (a compaction streams
// from the staging file) instead of writing a delta. 128 MiB is ~20k
// registry stages, more than MaxOverlay at 1M stages (15,625).
const maxChangeBytes = 128 << 20

func (cs *changeSet) size() int { return len(cs.stages) + len(cs.quar) }

// errTooBig: the change set passed the limit it was collected under (or
// maxChangeBytes), so the publish compacts into a new base instead of
// writing a delta.
var errTooBig = errors.New("mirror: more changes than a delta takes")

// collectChanges compares what the writer staged with cur, the current
// generation, and returns the change set, or errTooBig as soon as it
// holds more than limit entries or maxChangeBytes of values. What is not
// staged stays as cur has it when the staging file retains (a local
// writer, a sync after Fill), and goes otherwise (an import replaces the
// mirror).
func (w *Writer) collectChanges(ctx context.Context, cur *snap, limit int) (*changeSet, error) {
	cs := &changeSet{stages: map[string][]byte{}, quar: map[string][]byte{}}
	maxBytes := cmp.Or(w.m.opts.changeBytes, maxChangeBytes)
	over := func() error {
		if cs.size() > limit || cs.bytes > maxBytes {
			return errTooBig
		}
		return nil
	}
	// stage and quarantine add a staged value unless cur holds it already
	// (a replacing writer stages everything).
	stage := func(id string, v []byte) error {
		if old, ok, err := cur.stageValue(id); err != nil || (ok && bytes.Equal(old, v)) {
			return err
		}
		cs.stages[id] = bytes.Clone(v)
		cs.bytes += len(v)
		return over()
	}
	quarantine := func(key string, v []byte) error {
		if old, ok, err := cur.quarValue(key); err != nil || (ok && bytes.Equal(old, v)) {
			return err
		}
		cs.quar[key] = bytes.Clone(v)
		cs.bytes += len(v)
		return over()
	}
	retain := false
	err := w.db.View(func(tx *bolt.Tx) error {
		retain = tx.Bucket(bucketWriter).Get(wkRetain) != nil
		err := tx.Bucket(bucketLog).ForEach(func(_, v []byte) error {
			id, rec, err := splitLogValue(v)
			if err != nil {
				return fmt.Errorf("%w: a staged log entry is damaged (%v); abort and run the sync again", ErrCorrupt, err)
			}
			return stage(string(id), rec)
		})
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketQuarantine).ForEach(func(k, v []byte) error {
			return quarantine(string(k), v)
		}); err != nil {
			return err
		}
		if !retain {
			return nil
		}
		for _, r := range []struct {
			bucket []byte
			into   map[string][]byte
		}{{bucketRemoved, cs.stages}, {bucketQRemoved, cs.quar}} {
			err := tx.Bucket(r.bucket).ForEach(func(k, _ []byte) error {
				if _, ok := w.log.get(string(k)); ok || tx.Bucket(bucketQuarantine).Get(k) != nil {
					return nil // staged: a removal never outlives a later put
				}
				r.into[string(k)] = nil
				return over()
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !retain {
		if err := replaceAll(ctx, cur, cs, w.stagedAt, over); err != nil {
			return nil, err
		}
	}
	if err := crossRemovals(cur, cs); err != nil {
		return nil, err
	}
	return cs, dropNoOps(cur, cs)
}

// replaceAll marks for removal every stage and quarantine entry of cur
// that the change set does not stage.
func replaceAll(ctx context.Context, cur *snap, cs *changeSet, staged func(key string) bool, over func() error) error {
	err := cur.scanRaw(ctx, store.LifecycleUnknown, func(id store.StageID, _ []byte) error {
		if staged(string(id)) {
			return nil
		}
		cs.stages[string(id)] = nil
		return over()
	})
	if err != nil {
		return err
	}
	for q, err := range cur.quarantined(ctx) {
		if err != nil {
			return err
		}
		if staged(q.Key) {
			continue
		}
		cs.quar[q.Key] = nil
		if err := over(); err != nil {
			return err
		}
	}
	return nil
}

// crossRemovals keeps a key out of stages and quarantine at once: a
// stage staged under a key cur quarantines takes the quarantine entry
// away, and a quarantine entry staged under a stage's id the stage.
func crossRemovals(cur *snap, cs *changeSet) error {
	for k, v := range cs.stages {
		if _, set := cs.quar[k]; v == nil || set {
			continue
		}
		if _, ok, err := cur.quarValue(k); err != nil {
			return err
		} else if ok {
			cs.quar[k] = nil
		}
	}
	for k, v := range cs.quar {
		if _, set := cs.stages[k]; v == nil || set {
			continue
		}
		if _, ok, err := cur.stageValue(k); err != nil {
			return err
		} else if ok {
			cs.stages[k] = nil
		}
	}
	return nil
}

// dropNoOps removes from cs the removals of what cur does not hold. (A
// staged value equal to cur's never entered cs: collectChanges compared
// it as it read it.)
func dropNoOps(cur *snap, cs *changeSet) error {
	for _, t := range []struct {
		m   map[string][]byte
		get func(string) ([]byte, bool, error)
	}{{cs.stages, cur.stageValue}, {cs.quar, cur.quarValue}} {
		for k, v := range t.m {
			if v != nil {
				continue
			}
			if _, ok, err := t.get(k); err != nil {
				return err
			} else if !ok {
				delete(t.m, k)
			}
		}
	}
	return nil
}

// stageValue returns a copy of the stored record of stage id in the
// generation, if it has one.
func (s *snap) stageValue(id string) ([]byte, bool, error) {
	if e, ok, err := s.overlaid(store.StageID(id)); err != nil {
		return nil, false, err
	} else if ok {
		if e.src == nil {
			return nil, false, nil
		}
		v, err := e.src.value(bucketStages, []byte(id))
		return v, v != nil, err
	}
	return s.baseValue(bucketStages, id)
}

// quarValue returns a copy of the stored quarantine entry under key in
// the generation, if it has one.
func (s *snap) quarValue(key string) ([]byte, bool, error) {
	if s.ov != nil {
		if l, ok := s.ov.quar[key]; ok {
			if l == nil {
				return nil, false, nil
			}
			v, err := l.value(bucketQuarantine, []byte(key))
			return v, v != nil, err
		}
	}
	return s.baseValue(bucketQuarantine, key)
}

// baseValue returns a copy of the value under key in bucket of the base
// file.
func (s *snap) baseValue(bucket []byte, key string) (out []byte, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return s.missingBucket(bucket)
		}
		out = bytes.Clone(b.Get([]byte(key)))
		return nil
	})
	return out, out != nil, err
}

// Content hash elements: a stage is ("s", id, raw JSON), a quarantine
// entry ("q", key, raw bytes). Only the bytes a registry served count, so
// mirrors of the same content have the same digest however they got it.
var (
	tagStage      = []byte("s")
	tagQuarantine = []byte("q")
)

// tally is a generation's counts as a publish updates them.
type tally struct {
	rec   genRecord
	state lthash.State
	h     *lthash.Hasher
}

// newTally starts from cur's counts and content hash.
func newTally(cur *snap) *tally {
	t := &tally{rec: genRecord{
		Counts: maps.Clone(cur.meta.Counts), ByEffect: maps.Clone(cur.meta.ByEffect),
		Total: cur.meta.Total, Quarantined: cur.meta.Quarantined,
	}, state: cur.mf.state, h: lthash.NewHasher()}
	if t.rec.Counts == nil {
		t.rec.Counts = map[string]int{}
	}
	if t.rec.ByEffect == nil {
		t.rec.ByEffect = map[string]int{}
	}
	return t
}

// stage counts stage id going from old to new (nil: absent).
func (t *tally) stage(id string, old, new []byte) error {
	var was, is Record
	var err error
	if old != nil {
		if was, err = decodeRecord([]byte(id), old); err != nil {
			return fmt.Errorf("%w: stage %s of the current generation: %v: run `mirror verify`", ErrCorrupt, id, err)
		}
		t.count(&was, -1)
		t.h.Remove(&t.state, tagStage, []byte(id), was.Raw)
	}
	if new != nil {
		if is, err = decodeRecord([]byte(id), new); err != nil {
			return fmt.Errorf("%w: staged stage %s: %v: abort and run the sync again", ErrCorrupt, id, err)
		}
		t.count(&is, +1)
		t.h.Add(&t.state, tagStage, []byte(id), is.Raw)
	}
	c := &t.rec.Changes
	switch {
	case old == nil:
		c.Added++
	case new == nil:
		c.Removed++
	case was.Lifecycle != is.Lifecycle:
		c.Lifecycle++
	default:
		c.Changed++
	}
	return nil
}

func (t *tally) count(r *Record, d int) {
	t.rec.Total += d
	bump(t.rec.Counts, r.Lifecycle.Kind.Name(), d)
	for _, e := range r.Effects {
		bump(t.rec.ByEffect, e, d)
	}
}

func bump(m map[string]int, k string, d int) {
	if m[k] += d; m[k] == 0 {
		delete(m, k)
	}
}

// quarantine counts the entry under key going from old to new.
func (t *tally) quarantine(key string, old, new []byte) error {
	for _, v := range []struct {
		b   []byte
		add bool
	}{{old, false}, {new, true}} {
		if v.b == nil {
			continue
		}
		q, err := decodeQuarantine([]byte(key), v.b)
		if err != nil {
			return fmt.Errorf("%w: quarantine entry %q: %v", ErrCorrupt, key, err)
		}
		if v.add {
			t.rec.Quarantined++
			t.h.Add(&t.state, tagQuarantine, []byte(key), q.Raw)
		} else {
			t.rec.Quarantined--
			t.h.Remove(&t.state, tagQuarantine, []byte(key), q.Raw)
		}
	}
	switch {
	case old == nil:
		t.rec.Changes.QuarantineIn++
	case new == nil:
		t.rec.Changes.QuarantineOut++
	}
	return nil
}

// apply counts the whole change set against cur.
func (t *tally) apply(cur *snap, cs *changeSet) error {
	for id, v := range cs.stages {
		old, _, err := cur.stageValue(id)
		if err != nil {
			return err
		}
		if err := t.stage(id, old, v); err != nil {
			return err
		}
	}
	for k, v := range cs.quar {
		old, _, err := cur.quarValue(k)
		if err != nil {
			return err
		}
		if err := t.quarantine(k, old, v); err != nil {
			return err
		}
	}
	return nil
}
