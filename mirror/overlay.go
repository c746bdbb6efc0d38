package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// Delta file buckets (besides stages, quarantine and meta, as in a
// snapshot). removed and qremoved list the stage ids and quarantine keys
// the delta takes away; base_kind says, for every stage id the delta
// touches, whether the generation's base holds it and in which lifecycle
// (two bytes: 1 or 0, then the kind), so that readers can page through
// base and deltas together without looking each one up.
var (
	bucketRemoved  = []byte("removed")
	bucketQRemoved = []byte("qremoved")
	bucketBaseKind = []byte("base_kind")
	// bucketIndex holds, for every stage in bucket stages, what the
	// overlay needs of its record (see indexValue), so that opening a
	// generation reads a hundred bytes a changed stage, not its record.
	bucketIndex = []byte("index")
	// A merged delta (see overlay.deep) also indexes its live stages by
	// name and by signature id, as a snapshot does (keys value 0x00 id,
	// empty values), for look-ups without folding it.
	bucketNames = []byte("names")
	bucketSigs  = []byte("sigs")

	metaDelta = "delta"
	// metaMerged marks a merged delta: the number of stage ids it
	// touches (its base_kind entries), uint64 big-endian.
	metaMerged = "merged"
)

// deltaBuckets are a delta file's buckets (merged: a merged delta's).
func deltaBuckets(merged bool) [][]byte {
	if merged {
		return [][]byte{bucketStages, bucketIndex, bucketRemoved, bucketBaseKind, bucketQuarantine, bucketQRemoved, bucketNames, bucketSigs, bucketMeta}
	}
	return [][]byte{bucketStages, bucketIndex, bucketRemoved, bucketBaseKind, bucketQuarantine, bucketQRemoved, bucketMeta}
}

// indexValue encodes what the overlay needs of a record: its lifecycle
// kind, whether it has a name, the name (uvarint length first) and the
// signature id (the rest).
func indexValue(r *Record) []byte {
	return indexOf(r.Lifecycle.Kind, r.HasName, r.Name, r.SignatureID)
}

// indexOf is indexValue of a record with these fields.
func indexOf(kind store.LifecycleKind, hasName bool, name string, sig store.SignatureID) []byte {
	v := []byte{byte(kind), 0}
	if hasName {
		v[1] = 1
	}
	v = binary.AppendUvarint(v, uint64(len(name)))
	v = append(v, name...)
	return append(v, sig...)
}

// parseIndex decodes an indexValue into e, its strings from a.
func parseIndex(v []byte, e *ovEntry, a *strArena) error {
	if len(v) < 3 || v[0] >= classes || v[1] > 1 {
		return errors.New("damaged index entry")
	}
	n, w := binary.Uvarint(v[2:])
	if w <= 0 || n > uint64(len(v)-2-w) {
		return errors.New("damaged index entry")
	}
	name := v[2+w : 2+w+int(n)]
	e.kind, e.hasName = store.LifecycleKind(v[0]), v[1] == 1
	e.name, e.sig = a.strBytes(name), store.SignatureID(a.strBytes(v[2+w+int(n):]))
	return nil
}

// classes is the number of position classes: every stage (0), then one
// per lifecycle kind, indexed by store.LifecycleKind.
const classes = 5

// layer is one open delta file, shared by the overlays of every
// generation that reads it (see dataFile). Its records are read through
// the file's own transactions.
type layer struct{ *dataFile }

// value returns a copy of the value under key in bucket, or nil.
func (l *layer) value(bucket, key []byte) (out []byte, err error) {
	err = guarded(l.path, func() error {
		return l.view(func(t *fileTx) error {
			if t.bucket(bucket) == nil {
				return corruptf(l.path, "bucket %q is missing", bucket)
			}
			out = bytes.Clone(t.get(bucket, key))
			return nil
		})
	})
	return out, err
}

// raw returns a copy of the raw JSON of stage id, its record's checksum
// verified, without decoding the rest of the record.
func (l *layer) raw(id []byte) (out []byte, err error) {
	err = guarded(l.path, func() error {
		return l.view(func(t *fileTx) error {
			if t.bucket(bucketStages) == nil {
				return corruptf(l.path, "bucket %q is missing", bucketStages)
			}
			v := t.get(bucketStages, id)
			if v == nil {
				return corruptf(l.path, "stage %s is missing", id)
			}
			r, err := recordRaw(id, v)
			if err != nil {
				return fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, l.path, id, err)
			}
			out = bytes.Clone(r)
			return nil
		})
	})
	return out, err
}

// record returns the stage record the layer holds under id.
func (l *layer) record(id []byte) (Record, error) {
	v, err := l.value(bucketStages, id)
	if err != nil {
		return Record{}, err
	}
	if v == nil {
		return Record{}, corruptf(l.path, "stage %s is missing", id)
	}
	rec, err := decodeRecord(id, v)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %s: stage %s: %v: run `mirror verify`, then `mirror sync` to repair", ErrCorrupt, l.path, id, err)
	}
	return rec, nil
}

// ovEntry is what a generation's deltas say about one stage id: the
// layer holding its latest record (nil: removed), the layer that said
// that latest word (src, or the one that removed it), the fields the
// indexes need, and where the base had it.
type ovEntry struct {
	src      *layer
	word     *layer
	kind     store.LifecycleKind
	hasName  bool
	name     string
	sig      store.SignatureID
	inBase   bool
	baseKind store.LifecycleKind
}

// overlay is the fold of a generation's deltas, oldest first: for every
// key they touch, the latest word. It is built when the generation is
// opened (but for a merged delta, below) and what it says never changes;
// safe for concurrent reads.
//
// When the chain's first delta is a merged one (it holds what a chain of
// earlier deltas did, and can hold up to Options.MaxMerged keys), it is
// not folded at open: that would cost a reader time and memory in
// proportion to it. A point read looks it up on disk (deep) after the
// fold of the other deltas (stages); the full fold (all) is built when a
// read first needs the overlay's sorted lists.
type overlay struct {
	layers []*layer // one reference each, released by close
	// copied is how many of layers' fold the overlay copied from
	// another's (see copyFold): the entries whose word is one of them
	// are shared with it, and never changed.
	copied int
	// stages is the fold of every delta but deep.
	stages map[string]*ovEntry
	quar   map[string]*layer // nil: removed; every delta's, deep's too
	// deep is the merged first delta read on disk (nil: none), deepKeys
	// how many stage ids it touches.
	deep     *layer
	deepKeys int
	// slab holds the entries the overlay's own fold made, allocated in
	// blocks (stages also points into the slabs of the overlay it copied
	// its fold from: see copied); strs the bytes of their keys, names and
	// signature ids (a fold would otherwise allocate three strings a
	// stage).
	slab []ovEntry
	strs strArena

	// all is the fold of every delta, deep's too, when there is a deep
	// delta (else stages is), built by entries on first use.
	allOnce sync.Once
	all     map[string]*ovEntry
	allErr  error
	allDone atomic.Bool

	// The sorted lists that listings, pages and the name and signature
	// indexes merge with the base, built on first use (see lists): a
	// process that only reads stages by id never needs them.
	listOnce sync.Once
	ls       ovLists
	listed   atomic.Bool  // ls is built
	scans    atomic.Int32 // name and signature look-ups answered by a scan
}

// maxOverlayHint bounds the size hint a manifest can make a reader
// allocate up front.
const maxOverlayHint = 1 << 16

// newEntry returns a zero entry from the slab. A full block is never
// grown (stages points into it): a new one is started.
func (ov *overlay) newEntry() *ovEntry {
	if len(ov.slab) == cap(ov.slab) {
		ov.slab = make([]ovEntry, 0, max(256, cap(ov.slab)))
	}
	ov.slab = ov.slab[:len(ov.slab)+1]
	return &ov.slab[len(ov.slab)-1]
}

// own returns the entry of stage id k that ov's fold may change: a new
// one, or the one ov's stages holds, copied first when it is shared
// with the overlay ov copied its fold from (see copyFold).
func (ov *overlay) own(k []byte) *ovEntry {
	e, ok := ov.stages[string(k)]
	switch {
	case !ok:
		e = ov.newEntry()
		ov.stages[ov.strs.strBytes(k)] = e
	case slices.Contains(ov.layers[:ov.copied], e.word): // its word is a copied layer's
		c := ov.newEntry()
		*c = *e
		ov.stages[ov.strs.strBytes(k)] = c
		e = c
	}
	return e
}

// openOverlay opens the delta files names (in dir, oldest first) and
// folds them. hint is how many keys they touch together, as the manifest
// says (only a size hint: the maps are allocated once at that size
// instead of growing, unless prev's fold is copied). prev (nil: none) is
// an open overlay of the same mirror the caller holds: the files both
// read are shared, and when prev's deltas are the first of names, its
// fold is copied (see copyFold) and only the rest are folded. Nothing is
// open when it fails.
func openOverlay(dir string, names []string, hint int, opts Options, prev *overlay, handed []*dataFile) (*overlay, error) {
	ov := &overlay{}
	if err := ov.load(dir, names, min(max(hint, 0), maxOverlayHint), opts, prev, handed); err != nil {
		ov.close() // every layer it took a reference to, prev's too
		return nil, err
	}
	return ov, nil
}

// load folds the delta files names into the empty ov (see openOverlay).
// On error, the layers in ov.layers are the ones to release.
func (ov *overlay) load(dir string, names []string, hint int, opts Options, prev *overlay, handed []*dataFile) error {
	have := map[string]*layer{}
	for _, f := range handed {
		have[f.path] = &layer{f}
	}
	if prev != nil {
		for _, l := range prev.layers {
			have[l.path] = l
		}
		if prev.continuedBy(dir, names) {
			ov.copyFold(prev)
			names = names[len(prev.layers):]
		}
	}
	if ov.stages == nil {
		ov.stages, ov.quar, ov.slab = make(map[string]*ovEntry, hint), map[string]*layer{}, make([]ovEntry, 0, hint)
	}
	files, err := openLayers(dir, names, have, opts)
	if err != nil {
		return err
	}
	for i, f := range files {
		l := &layer{f}
		ov.layers = append(ov.layers, l)
		first := len(ov.layers) == 1
		err = guarded(f.path, func() error {
			return l.db.View(func(tx *bolt.Tx) error {
				if first {
					if n, ok := mergedKeys(tx); ok {
						return ov.openDeep(tx, l, n)
					}
				}
				return ov.fold(tx, l)
			})
		})
		if err != nil {
			for _, f := range files[i+1:] {
				f.release()
			}
			return err
		}
	}
	return nil
}

// openLayers returns the delta files names (in dir) open, a reference
// each: the ones have holds that are still those files, the others
// opened, several at a time (a file's open is mostly system calls and
// the check of its root pages). Nothing is open when it fails.
func openLayers(dir string, names []string, have map[string]*layer, opts Options) ([]*dataFile, error) {
	files := make([]*dataFile, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, n := range names {
		path := filepath.Join(dir, n)
		if l, ok := have[path]; ok {
			if files[i] = l.reuse(path); files[i] != nil {
				continue
			}
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			files[i], errs[i] = openDataFile(path, opts)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, f := range files {
			if f != nil {
				f.release()
			}
		}
		return nil, err // the oldest file's: the one a reader would meet first
	}
	return files, nil
}

// continuedBy reports whether the delta files names (in dir) start with
// every file ov folded, as they are on disk now.
func (ov *overlay) continuedBy(dir string, names []string) bool {
	if len(ov.layers) > len(names) {
		return false
	}
	for i, l := range ov.layers {
		if !l.isAt(filepath.Join(dir, names[i])) {
			return false
		}
	}
	return true
}

// copyFold makes the empty ov the fold prev holds, sharing its layers
// (a reference each) and its entries: prev's readers go on reading them,
// so ov's fold replaces an entry it changes by a copy (see own), and
// copies only what the deltas it folds next touch.
func (ov *overlay) copyFold(prev *overlay) {
	for _, l := range prev.layers {
		l.refs.Add(1)
		ov.layers = append(ov.layers, l)
	}
	ov.deep, ov.deepKeys = prev.deep, prev.deepKeys
	ov.stages, ov.quar = maps.Clone(prev.stages), maps.Clone(prev.quar)
	ov.copied = len(ov.layers)
}

// close releases every layer; a nil overlay is fine.
func (ov *overlay) close() {
	if ov == nil {
		return
	}
	for _, l := range ov.layers {
		l.release()
	}
}

// size is at most the number of keys the overlay touches (exactly, but
// for keys both the deep delta and a later one touch, counted twice).
func (ov *overlay) size() int {
	if ov == nil {
		return 0
	}
	return ov.deepKeys + len(ov.stages) + len(ov.quar)
}

// words returns, for each of the overlay's layers, how many keys it says
// the latest word of, counting the stage ids of the folded deltas and
// the quarantine keys it holds; a merged first delta counts the stage ids
// it touches.
func (ov *overlay) words() []int {
	at := make(map[*layer]int, len(ov.layers))
	for i, l := range ov.layers {
		at[l] = i
	}
	n := make([]int, len(ov.layers))
	if ov.deep != nil {
		n[0] = ov.deepKeys
	}
	for _, e := range ov.stages {
		if i, ok := at[e.word]; ok {
			n[i]++
		}
	}
	for _, l := range ov.quar {
		if i, ok := at[l]; ok {
			n[i]++
		}
	}
	return n
}

// deep reports whether s reads a merged delta.
func (s *snap) deep() bool { return s.ov != nil && s.ov.deep != nil }

// folded is the number of keys the overlay holds in memory from its open.
func (ov *overlay) folded() int {
	if ov == nil {
		return 0
	}
	return len(ov.stages) + len(ov.quar)
}

// deltaTx returns the buckets of the delta file l (merged: a merged
// delta's) read in tx, by name, once it checked they are all there and
// that the file is a delta.
func deltaTx(tx *bolt.Tx, l *layer, merged bool) (map[string]*bolt.Bucket, error) {
	bk := map[string]*bolt.Bucket{}
	for _, name := range deltaBuckets(merged) {
		b := tx.Bucket(name)
		if b == nil {
			return nil, corruptf(l.path, "bucket %q is missing", name)
		}
		bk[string(name)] = b
	}
	meta := bk[string(bucketMeta)]
	if string(meta.Get([]byte(metaMagic))) != magic || meta.Get([]byte(metaDelta)) == nil {
		return nil, corruptf(l.path, "not a noether-mirror delta")
	}
	return bk, nil
}

// parseBaseKind decodes a base_kind value: whether the base holds the
// stage, and its lifecycle kind there.
func parseBaseKind(v []byte) (inBase bool, kind store.LifecycleKind, ok bool) {
	if len(v) != 2 || v[0] > 1 || v[1] >= classes {
		return false, 0, false
	}
	return v[0] == 1, store.LifecycleKind(v[1]), true
}

// baseKindValue is the base_kind value of e.
func (e *ovEntry) baseKindValue() [2]byte {
	if !e.inBase {
		return [2]byte{}
	}
	return [2]byte{1, byte(e.baseKind)}
}

// fold applies one delta file to the overlay.
func (ov *overlay) fold(tx *bolt.Tx, l *layer) error {
	bk, err := deltaTx(tx, l, false)
	if err != nil {
		return err
	}
	// Every stage id the delta touches has a base_kind entry: the loops
	// after this one change only entries this one made l's word.
	err = bk[string(bucketBaseKind)].ForEach(func(k, v []byte) error {
		inBase, kind, ok := parseBaseKind(v)
		if !ok {
			return corruptf(l.path, "base_kind entry of %s is damaged", k)
		}
		e := ov.own(k)
		e.inBase, e.baseKind, e.word = inBase, kind, l
		return nil
	})
	if err != nil {
		return err
	}
	err = bk[string(bucketRemoved)].ForEach(func(k, _ []byte) error {
		e, ok := ov.stages[string(k)]
		if !ok || e.word != l {
			return corruptf(l.path, "removed stage %s has no base_kind entry", k)
		}
		e.src = nil
		return nil
	})
	if err != nil {
		return err
	}
	// The records themselves are read (and their checksums checked) when
	// a read asks for them; Verify checks the index against them.
	err = bk[string(bucketIndex)].ForEach(func(k, v []byte) error {
		e, ok := ov.stages[string(k)]
		if !ok || e.word != l {
			return corruptf(l.path, "stage %s has no base_kind entry", k)
		}
		if err := parseIndex(v, e, &ov.strs); err != nil {
			return corruptf(l.path, "stage %s: %v", k, err)
		}
		e.src = l
		return nil
	})
	if err != nil {
		return err
	}
	return ov.foldQuarantine(tx, l)
}

// foldQuarantine applies one delta file's quarantine keys to the overlay.
func (ov *overlay) foldQuarantine(tx *bolt.Tx, l *layer) error {
	if err := tx.Bucket(bucketQuarantine).ForEach(func(k, _ []byte) error { ov.quar[string(k)] = l; return nil }); err != nil {
		return err
	}
	return tx.Bucket(bucketQRemoved).ForEach(func(k, _ []byte) error { ov.quar[string(k)] = nil; return nil })
}

// touched returns the overlay's entry for a stage id, if any: from the
// folded deltas, else from the deep delta on disk (until the full fold
// is built).
func (ov *overlay) touched(id []byte) (*ovEntry, bool, error) {
	if ov.deep == nil {
		e, ok := ov.stages[string(id)]
		return e, ok, nil
	}
	if ov.allDone.Load() { // read once: entries may finish meanwhile
		e, ok := ov.all[string(id)]
		return e, ok, nil
	}
	if e, ok := ov.stages[string(id)]; ok {
		return e, true, nil
	}
	return ov.deep.entry(id)
}
