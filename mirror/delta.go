package mirror

import (
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// deltaContent is what one delta file holds: each touched stage id with
// its record value (nil: removed) and where the base had it, and each
// touched quarantine key with its entry (nil: removed).
type deltaContent struct {
	stages   map[string][]byte
	baseKind map[string][2]byte
	quar     map[string][]byte
}

// deltaOf is the delta that takes cur to cur with cs applied. With merge,
// it also carries everything cur's own deltas hold, so that the new
// generation is its base and this one delta (the chain was too long).
func deltaOf(cur *snap, cs *changeSet, merge bool) (*deltaContent, error) {
	d := &deltaContent{stages: map[string][]byte{}, baseKind: map[string][2]byte{}, quar: map[string][]byte{}}
	if merge && cur.ov != nil {
		for id, e := range cur.ov.stages {
			if _, set := cs.stages[id]; set || (e.src == nil && !e.inBase) {
				continue // replaced below, or a removal of what the base never had
			}
			var v []byte
			if e.src != nil {
				var err error
				if v, err = e.src.value(bucketStages, []byte(id)); err != nil {
					return nil, err
				}
			}
			d.stages[id] = v
		}
		for k, l := range cur.ov.quar {
			if _, set := cs.quar[k]; set {
				continue
			}
			var v []byte
			if l != nil {
				var err error
				if v, err = l.value(bucketQuarantine, []byte(k)); err != nil {
					return nil, err
				}
			}
			d.quar[k] = v
		}
	}
	for id, v := range cs.stages {
		d.stages[id] = v
	}
	for k, v := range cs.quar {
		d.quar[k] = v
	}
	for id := range d.stages {
		bk, err := cur.baseKindOf(id)
		if err != nil {
			return nil, err
		}
		d.baseKind[id] = bk
	}
	return d, nil
}

// baseKindOf returns the base_kind value of stage id: whether the
// generation's base holds it, and its lifecycle kind there.
func (s *snap) baseKindOf(id string) ([2]byte, error) {
	if e, ok := s.overlaid(store.StageID(id)); ok {
		if !e.inBase {
			return [2]byte{}, nil
		}
		return [2]byte{1, byte(e.baseKind)}, nil
	}
	return s.baseKindFile(id)
}

// overlaySize is how many keys a generation made of cur's deltas and d
// touches (merge: d alone).
func (d *deltaContent) overlaySize(cur *snap, merge bool) int {
	n := len(d.stages) + len(d.quar)
	if merge || cur.ov == nil {
		return n
	}
	for id := range cur.ov.stages {
		if _, ok := d.stages[id]; !ok {
			n++
		}
	}
	for k := range cur.ov.quar {
		if _, ok := d.quar[k]; !ok {
			n++
		}
	}
	return n
}

// write writes d as the delta file of generation gen in dir, fsynced and
// fully checked, and returns its size.
func (d *deltaContent) write(dir string, gen uint64, opts Options) (int64, error) {
	final := filepath.Join(dir, deltaName(gen))
	tmp := tempName(final)
	err := d.load(tmp, gen, opts)
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, noSpace(fmt.Errorf("writing the delta %s: %w", tmp, err), tmp, 0)
	}
	fi, err := os.Stat(tmp)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("writing the delta %s: %w", final, err)
	}
	return fi.Size(), nil
}

func (d *deltaContent) load(name string, gen uint64, opts Options) (err error) {
	l, err := newFileLoader(name, opts, deltaBuckets()...)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	put := func(bucket []byte, m map[string][]byte, live bool) error {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if v := m[k]; (v != nil) == live {
				if !live {
					v = []byte{}
				}
				if err := l.Put(bucket, []byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	}
	bk := make(map[string][]byte, len(d.baseKind))
	for k, v := range d.baseKind {
		bk[k] = []byte{v[0], v[1]}
	}
	ix := make(map[string][]byte, len(d.stages))
	for k, v := range d.stages {
		if v == nil {
			continue
		}
		rec, err := decodeBorrowed([]byte(k), v)
		if err != nil {
			return fmt.Errorf("stage %s: %w", k, err)
		}
		ix[k] = indexValue(&rec)
	}
	for _, p := range []struct {
		bucket []byte
		m      map[string][]byte
		live   bool
	}{
		{bucketStages, d.stages, true}, {bucketIndex, ix, true}, {bucketRemoved, d.stages, false}, {bucketBaseKind, bk, true},
		{bucketQuarantine, d.quar, true}, {bucketQRemoved, d.quar, false},
	} {
		if err := put(p.bucket, p.m, p.live); err != nil {
			return err
		}
	}
	fv := make([]byte, 4)
	binary.BigEndian.PutUint32(fv, FormatVersion)
	for _, e := range []metaEntry{ // in key order
		{metaDelta, []byte("1")},
		{metaFormatVersion, fv},
		{metaGeneration, beUint64(gen)},
		{metaMagic, []byte(magic)},
	} {
		if err := l.Put(bucketMeta, []byte(e.k), e.v); err != nil {
			return err
		}
	}
	if err := l.Finish(); err != nil {
		return err
	}
	return checkSmallFile(name, opts, func(tx *bolt.Tx) error {
		ov := &overlay{stages: map[string]*ovEntry{}, quar: map[string]*layer{}}
		if err := ov.fold(tx, &layer{&dataFile{path: name}}); err != nil {
			return err
		}
		if len(ov.stages) != len(d.stages) || len(ov.quar) != len(d.quar) {
			return fmt.Errorf("it reads back %d stages and %d quarantine keys, want %d and %d",
				len(ov.stages), len(ov.quar), len(d.stages), len(d.quar))
		}
		return nil
	})
}
