package mirror

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/store"
)

// deltaContent is what one delta file holds: each touched stage id with
// its record value (nil: removed) and where the base had it, and each
// touched quarantine key with its entry (nil: removed). A merged one
// holds what the whole chain of deltas over the base says (see
// overlay.deep). The stages a merge carries over from the chain are
// kept as the chain's entries, their records read from their delta
// files only as the file is written: a merged delta can hold tens of
// thousands.
type deltaContent struct {
	stages   map[string][]byte   // the change set's
	carried  map[string]*ovEntry // the chain's, for ids stages lacks
	baseKind map[string][2]byte  // every id of stages and carried
	quar     map[string][]byte
	merged   bool
}

// size is how many keys d touches.
func (d *deltaContent) size() int { return len(d.stages) + len(d.carried) + len(d.quar) }

// deltaOf is the delta that takes cur to cur with cs applied.
func deltaOf(cur *snap, cs *changeSet) (*deltaContent, error) {
	d := &deltaContent{stages: maps.Clone(cs.stages), carried: map[string]*ovEntry{}, baseKind: make(map[string][2]byte, len(cs.stages)), quar: maps.Clone(cs.quar)}
	for id := range d.stages {
		bk, err := cur.baseKindOf(id)
		if err != nil {
			return nil, err
		}
		d.baseKind[id] = bk
	}
	return d, nil
}

// mergeChain makes d a merged delta: it also carries everything cur's
// own deltas hold (where d says nothing of a key), so that the new
// generation is its base and this one delta.
func (d *deltaContent) mergeChain(cur *snap) error {
	d.merged = true
	if cur.ov == nil {
		return nil
	}
	all, err := cur.ov.entries()
	if err != nil {
		return err
	}
	return d.carry(cur.ov, all, 0)
}

// tailRatio is how much larger than what a merge of the chain's tail
// holds so far the delta before the tail must be to stay out of it (see
// mergeTail).
const tailRatio = 2

// mergeTail makes room for d in cur's chain of deltas when d would make
// it longer than maxLayers: d carries what the newest deltas say (where
// d says nothing of a key), and it returns how many of cur's deltas stay
// beneath d (all of them when the chain has room). A merged first delta
// always stays; with no room even for it and d, d merges the chain.
//
// The tail is as short as the room needs, then grows by each older delta
// that holds at most tailRatio times what the tail holds so far (the
// keys whose latest word it says): deltas of like size are merged
// together, a large old one is left alone. Like an LSM tree's tiers,
// the chain's deltas then grow geometrically with age, so a stage is
// rewritten a few times in the chain's life, not once every few
// publishes, and most merges are small.
func (d *deltaContent) mergeTail(cur *snap, maxLayers int) (keep int, err error) {
	n := len(cur.gen.Deltas)
	if n+1 <= maxLayers {
		return n, nil
	}
	first := 0
	if cur.deep() {
		first = 1
	}
	if first+1 > maxLayers {
		return 0, d.mergeChain(cur)
	}
	words := cur.ov.words()
	keep, held := n, d.size()
	for keep+1 > maxLayers || (keep > first && words[keep-1] <= tailRatio*held) {
		keep--
		held += words[keep]
	}
	return keep, d.carry(cur.ov, cur.ov.stages, keep)
}

// carry adds to d the entries (of ov) whose latest word one of ov's
// layers from the first on says, where d says nothing of their key, and
// ov's quarantine words those layers say or removals. A removal of what
// the base never had is dropped when no layer stays beneath d: one of
// them may have added the stage.
func (d *deltaContent) carry(ov *overlay, entries map[string]*ovEntry, from int) (err error) {
	merging := map[*layer]bool{}
	for _, l := range ov.layers[from:] {
		merging[l] = true
	}
	for id, e := range entries {
		if _, set := d.stages[id]; set || !merging[e.word] || (e.src == nil && !e.inBase && from == 0) {
			continue // d's word, a layer's that stays, or a removal of what the base never had
		}
		d.carried[id] = e
		d.baseKind[id] = e.baseKindValue()
	}
	for k, l := range ov.quar {
		if _, set := d.quar[k]; set || (l != nil && !merging[l]) {
			continue // d's word, or a layer's that stays
		}
		var v []byte
		if l != nil {
			if v, err = l.value(bucketQuarantine, []byte(k)); err != nil {
				return err
			}
		}
		d.quar[k] = v
	}
	return nil
}

// baseKindOf returns the base_kind value of stage id: whether the
// generation's base holds it, and its lifecycle kind there.
func (s *snap) baseKindOf(id string) ([2]byte, error) {
	if e, ok, err := s.overlaid(store.StageID(id)); err != nil {
		return [2]byte{}, err
	} else if ok {
		return e.baseKindValue(), nil
	}
	return s.baseKindFile(id)
}

// overlayKeys counts the keys of a generation made of the first keep of
// cur's deltas and d (d merged: d alone): at most all of them (see
// overlay.size), and the stage ids and the quarantine keys a reader folds
// at open (every quarantine key; not a merged d's stage ids). The deltas
// after the first keep must be merged into d (see mergeTail).
func (d *deltaContent) overlayKeys(cur *snap, keep int) (total, stages, quar int) {
	var under *overlay // the deltas d goes over
	if !d.merged && keep > 0 {
		under = cur.ov
	}
	quar = len(d.quar)
	stages = len(d.stages) + len(d.carried)
	if under == nil {
		if d.merged {
			return d.size(), 0, quar
		}
		return d.size(), stages, quar
	}
	for k := range under.quar {
		if _, ok := d.quar[k]; !ok {
			quar++
		}
	}
	for id := range under.stages {
		if _, ok := d.baseKind[id]; !ok {
			stages++
		}
	}
	return under.deepKeys + stages + quar, stages, quar
}

// write writes d as the delta file of generation gen in dir, fsynced and
// fully checked, and returns it open as a reader opens it (one
// reference, the caller's), and its size.
func (d *deltaContent) write(dir string, gen uint64, opts Options) (*dataFile, int64, error) {
	final := filepath.Join(dir, deltaName(gen))
	tmp := tempName(final)
	db, fi, err := d.load(tmp, gen, opts)
	if err != nil {
		os.Remove(tmp)
		return nil, 0, noSpace(fmt.Errorf("writing the delta %s: %w", tmp, err), tmp, 0)
	}
	if err := os.Rename(tmp, final); err != nil {
		_ = db.Close()
		os.Remove(tmp)
		return nil, 0, fmt.Errorf("writing the delta %s: %w", final, err)
	}
	return newDataFile(final, db, fi), fi.Size(), nil
}

// load writes d to the file name and returns it open once checked.
func (d *deltaContent) load(name string, gen uint64, opts Options) (*bolt.DB, os.FileInfo, error) {
	meta := []metaEntry{{metaDelta, []byte("1")}, {metaGeneration, beUint64(gen)}}
	if d.merged {
		meta = append(meta, metaEntry{metaMerged, beUint64(uint64(len(d.baseKind)))})
	}
	if err := writeSmallFile(name, opts, deltaBuckets(d.merged), d.put, meta...); err != nil {
		return nil, nil, err
	}
	return openChecked(name, opts, func(tx *bolt.Tx) error {
		ov := &overlay{stages: map[string]*ovEntry{}, quar: map[string]*layer{}}
		if err := ov.fold(tx, &layer{&dataFile{path: name}}); err != nil {
			return err
		}
		if len(ov.stages) != len(d.baseKind) || len(ov.quar) != len(d.quar) {
			return fmt.Errorf("it reads back %d stages and %d quarantine keys, want %d and %d",
				len(ov.stages), len(ov.quar), len(d.baseKind), len(d.quar))
		}
		if d.merged {
			return checkMerged(tx)
		}
		return nil
	})
}

// put puts every bucket of d but meta, in order.
func (d *deltaContent) put(l boltfile.Loader) error {
	ids := slices.Sorted(maps.Keys(d.baseKind))
	var gone []string
	ix := make(map[string][]byte, len(ids))
	names, sigs := map[string][]byte{}, map[string][]byte{}
	for _, k := range ids {
		v, live, err := d.value(k)
		if err != nil {
			return err
		}
		if !live {
			gone = append(gone, k)
			continue
		}
		if err := l.Put(bucketStages, []byte(k), v); err != nil {
			return err
		}
		e, err := d.entry(k, v)
		if err != nil {
			return err
		}
		ix[k] = indexOf(e.kind, e.hasName, e.name, e.sig)
		if e.hasName {
			names[e.name+"\x00"+k] = []byte{}
		}
		if e.sig != "" {
			sigs[string(e.sig)+"\x00"+k] = []byte{}
		}
	}
	bk := make(map[string][]byte, len(d.baseKind))
	for k, v := range d.baseKind {
		bk[k] = []byte{v[0], v[1]}
	}
	removed := make(map[string][]byte, len(gone))
	for _, k := range gone {
		removed[k] = []byte{}
	}
	qlive, qgone := map[string][]byte{}, map[string][]byte{}
	for k, v := range d.quar {
		if v != nil {
			qlive[k] = v
		} else {
			qgone[k] = []byte{}
		}
	}
	type fill struct {
		bucket []byte
		m      map[string][]byte
	}
	buckets := []fill{{bucketIndex, ix}, {bucketRemoved, removed}, {bucketBaseKind, bk}, {bucketQuarantine, qlive}, {bucketQRemoved, qgone}}
	if d.merged {
		buckets = append(buckets, fill{bucketNames, names}, fill{bucketSigs, sigs})
	}
	for _, b := range buckets {
		for _, k := range slices.Sorted(maps.Keys(b.m)) {
			if err := l.Put(b.bucket, []byte(k), b.m[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// value returns the record d holds for stage id, and whether it holds
// one (else the stage is removed): the change set's, or the one a
// carried entry's delta file holds.
func (d *deltaContent) value(id string) ([]byte, bool, error) {
	if v, ok := d.stages[id]; ok {
		return v, v != nil, nil
	}
	e := d.carried[id]
	if e.src == nil {
		return nil, false, nil
	}
	v, err := e.src.value(bucketStages, []byte(id))
	if err == nil && v == nil {
		err = corruptf(e.src.path, "stage %s is missing", id)
	}
	if err == nil { // copied as it is: its checksum is checked here
		if _, cerr := recordRaw([]byte(id), v); cerr != nil {
			err = fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, e.src.path, id, cerr)
		}
	}
	return v, v != nil, err
}

// entry returns what the overlay needs of the live stage id whose record
// is v: a carried entry's fields, or the record's.
func (d *deltaContent) entry(id string, v []byte) (*ovEntry, error) {
	if e, ok := d.carried[id]; ok {
		return e, nil
	}
	rec, err := decodeBorrowed([]byte(id), v)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", id, err)
	}
	return &ovEntry{kind: rec.Lifecycle.Kind, hasName: rec.HasName, name: rec.Name, sig: rec.SignatureID}, nil
}
