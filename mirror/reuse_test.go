package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// sameFold fails unless the overlays got and want (nil: none) hold the
// same word for every key, from delta files of the same names.
func sameFold(t *testing.T, when string, got, want *overlay) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("%s: overlay %v, want %v", when, got != nil, want != nil)
	}
	if got == nil {
		return
	}
	name := func(l *layer) string {
		if l == nil {
			return "(removed)"
		}
		return filepath.Base(l.path)
	}
	if len(got.layers) != len(want.layers) || len(got.stages) != len(want.stages) || len(got.quar) != len(want.quar) {
		t.Fatalf("%s: %d layers, %d stages, %d quarantine keys; want %d, %d, %d", when,
			len(got.layers), len(got.stages), len(got.quar), len(want.layers), len(want.stages), len(want.quar))
	}
	if name(got.deep) != name(want.deep) || got.deepKeys != want.deepKeys {
		t.Fatalf("%s: merged delta %s (%d keys), want %s (%d)", when, name(got.deep), got.deepKeys, name(want.deep), want.deepKeys)
	}
	for i := range got.layers {
		if name(got.layers[i]) != name(want.layers[i]) {
			t.Fatalf("%s: layer %d is %s, want %s", when, i, name(got.layers[i]), name(want.layers[i]))
		}
	}
	for k, w := range want.stages {
		g, ok := got.stages[k]
		if !ok {
			t.Fatalf("%s: stage %.12s is not in the fold", when, k)
		}
		gc, wc := *g, *w
		gs, ws := name(gc.src), name(wc.src)
		if name(gc.word) != name(wc.word) {
			t.Fatalf("%s: stage %.12s's latest word is from %s, want %s", when, k, name(gc.word), name(wc.word))
		}
		gc.src, wc.src, gc.word, wc.word = nil, nil, nil, nil
		if gs == "(removed)" && ws == gs { // what a removed stage's entry says besides is never read
			gc, wc = ovEntry{inBase: gc.inBase, baseKind: gc.baseKind}, ovEntry{inBase: wc.inBase, baseKind: wc.baseKind}
		}
		if gc != wc || gs != ws {
			t.Fatalf("%s: stage %.12s folds to %+v from %s, want %+v from %s", when, k, gc, gs, wc, ws)
		}
	}
	for k, w := range want.quar {
		if g, ok := got.quar[k]; !ok || name(g) != name(w) {
			t.Fatalf("%s: quarantine key %.12s folds to %s, want %s", when, k, name(g), name(w))
		}
	}
}

// sameManifest fails unless got lists the generations want lists, with
// the same entries, current generation and content hash.
func sameManifest(t *testing.T, when string, got, want *manifest) {
	t.Helper()
	if got.current != want.current || !got.state.Equal(&want.state) || len(got.gens) != len(want.gens) || got.version != want.version {
		t.Fatalf("%s: manifest of %d generations, current %d, format %d; want %d, %d, %d", when,
			len(got.gens), got.current, got.version, len(want.gens), want.current, want.version)
	}
	if len(got.spans) != len(want.spans) || got.narch != want.narch {
		t.Fatalf("%s: %d archive entries of %d generations, want %d of %d", when, len(got.spans), got.narch, len(want.spans), want.narch)
	}
	for i, sp := range got.spans {
		w := want.spans[i]
		if sp.id != w.id || sp.damaged != w.damaged || !slices.Equal(sp.gens, w.gens) || !bytes.Equal(sp.entry, w.entry) {
			t.Fatalf("%s: archive entry %d lists %v, want %d: %v", when, sp.id, sp.gens, w.id, w.gens)
		}
	}
	for i, g := range got.gens {
		w := want.gens[i]
		if g.Generation != w.Generation || g.archived || w.archived || !g.Published.Equal(w.Published) || !bytes.Equal(g.val, w.val) {
			t.Fatalf("%s: generation %d is listed as %+v, want %+v", when, w.Generation, g, w)
		}
	}
}

// TestReloadReusesFiles publishes local edits through one Mirror (deltas,
// merges of the chain or of its tail, a compaction) and checks after each that its
// reloaded generation shares the files it has in common with the one
// before, folds to exactly what a fresh Open folds, and that the files
// of generations nobody holds any more are closed.
func TestReloadReusesFiles(t *testing.T) {
	m := layeredMirror(t, Options{MaxLayers: 3, MaxOverlay: 6, MaxMerged: 14})
	syncAll(t, m, stdlibStages(t)[:20], PublishInfo{})
	ctx := t.Context()
	var reused, merges, folds, compactions int
	for i := range 30 {
		prev, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Put(ctx, genStage(t, 1000+i, 100, testKey())); err != nil {
			t.Fatal(err)
		}
		cur, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case cur.gen.Base != prev.gen.Base:
			compactions++
			if cur.file == prev.file {
				t.Fatalf("edit %d: a new base shares the old one's file", i)
			}
		case cur.file != prev.file:
			t.Fatalf("edit %d: the base %s was opened again", i, cur.gen.Base)
		case len(cur.gen.Deltas) == 1 && len(prev.gen.Deltas) > 0:
			merges++
		case len(cur.gen.Deltas) <= len(prev.gen.Deltas):
			folds++ // the chain's tail merged into the new delta, the deltas before it kept
			if cur.ov.deep != cur.ov.layers[0] {
				t.Fatalf("edit %d: the chain's merged delta %s was not kept", i, prev.gen.Deltas[0])
			}
			for j, l := range cur.ov.layers[:len(cur.ov.layers)-1] {
				if cur.gen.Deltas[j] != prev.gen.Deltas[j] || l.dataFile != prev.ov.layers[j].dataFile {
					t.Fatalf("edit %d: delta %s, kept beneath the merged tail, was opened again", i, prev.gen.Deltas[j])
				}
			}
		default:
			reused++
			for j, l := range prev.ovLayers() {
				if cur.ov.layers[j] != l {
					t.Fatalf("edit %d: delta %s was opened again", i, filepath.Base(l.path))
				}
			}
		}
		fresh, err := Open(m.Path(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		want, err := fresh.acquire()
		if err != nil {
			t.Fatal(err)
		}
		sameFold(t, fmt.Sprintf("after edit %d", i), cur.ov, want.ov)
		sameManifest(t, fmt.Sprintf("after edit %d", i), cur.mf, want.mf)
		// The delta the edit wrote was handed over open, as the check
		// opened it under its temporary name, not opened again.
		if cur.gen.Base == prev.gen.Base {
			if last := cur.ov.layers[len(cur.ov.layers)-1]; !strings.Contains(last.db.Path(), ".tmp-") {
				t.Fatalf("edit %d: the new delta was opened again, from %s", i, last.db.Path())
			}
		}
		want.release()
		fresh.Close()
		old := append([]*layer{{prev.file}}, prev.ovLayers()...)
		prev.release()
		cur.release()
		for _, l := range old {
			if !cur.holds(l.dataFile) && l.refs.Load() != 0 {
				t.Fatalf("edit %d: %s, which generation %d no longer reads, still has %d references",
					i, filepath.Base(l.path), cur.gen.Generation, l.refs.Load())
			}
		}
	}
	if reused == 0 || merges == 0 || folds == 0 || compactions == 0 {
		t.Fatalf("%d reloads continued a chain, %d merged it, %d merged its tail, %d compacted: want each",
			reused, merges, folds, compactions)
	}
}

// ovLayers returns the delta files s reads.
func (s *snap) ovLayers() []*layer {
	if s.ov == nil {
		return nil
	}
	return s.ov.layers
}

// holds reports whether s reads f.
func (s *snap) holds(f *dataFile) bool {
	if s.file == f {
		return true
	}
	for _, l := range s.ovLayers() {
		if l.dataFile == f {
			return true
		}
	}
	return false
}

// TestReloadAfterRebuildInPlace replaces a mirror under an open Mirror by
// another one built at the same path, whose files have the same names:
// the reload must read the new files, not the open ones of those names.
func TestReloadAfterRebuildInPlace(t *testing.T) {
	ss := stdlibStages(t)
	m := layeredMirror(t, Options{})
	syncAll(t, m, ss[:10], PublishInfo{})
	if _, err := m.Put(t.Context(), ss[10]); err != nil {
		t.Fatal(err)
	}
	path := m.Path()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gensDir(path)); err != nil {
		t.Fatal(err)
	}
	other, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	syncAll(t, other, ss[20:30], PublishInfo{})
	if _, err := other.Put(t.Context(), ss[30]); err != nil {
		t.Fatal(err)
	}
	if g, og := m.Meta().Generation, other.Meta().Generation; g != og {
		t.Fatalf("the rebuilt mirror is at generation %d, the old one at %d: the test needs the same file names", og, g)
	}
	other.Close()
	if _, err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, s := range ss[20:31] {
		if _, err := m.GetRaw(t.Context(), s.ID); err != nil {
			t.Fatalf("stage %s of the rebuilt mirror: %v", s.ID, err)
		}
	}
	if ok, _ := m.Contains(t.Context(), ss[0].ID); ok {
		t.Fatalf("stage %s of the replaced mirror is still read", ss[0].ID)
	}
	mustVerify(t, m)
}

// TestManifestRecordsReused checks readManifest against a manifest read
// before: a record with the same bytes is taken from it, one whose bytes
// differ under the same generation (another mirror built in its place)
// is decoded anew.
func TestManifestRecordsReused(t *testing.T) {
	m := layeredMirror(t, Options{})
	ss := stdlibStages(t)
	syncAll(t, m, ss[:5], PublishInfo{})
	for _, s := range ss[5:8] {
		if _, err := m.Put(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	read := func(prev *manifest) *manifest { t.Helper(); return readManifestFile(t, m.Path(), prev) }
	first := read(nil)
	for _, g := range first.gens {
		if g.lazy != (g.Generation != first.current) {
			t.Errorf("generation %d (current %d) read lazy=%v: only the current one is decoded at once", g.Generation, first.current, g.lazy)
		}
	}
	again := read(first)
	for i := range first.gens {
		if again.gens[i] != first.gens[i] {
			t.Errorf("generation %d was read again, not taken from the manifest read before", first.gens[i].Generation)
		}
	}
	want, err := first.records()
	if err != nil {
		t.Fatal(err)
	}
	// Decoded records pass on to the next read.
	for _, g := range read(first).gens {
		if g.lazy {
			t.Errorf("generation %d is lazy again after the manifest before decoded it", g.Generation)
		}
	}
	// The same generation numbers with other records.
	stale := &manifest{}
	for _, w := range want {
		g := new(genRecord)
		*g = *w
		stale.gens = append(stale.gens, g)
		g.Total, g.Base = -1, "elsewhere"
		g.raw, _ = json.Marshal(g)
		g.val = g.entry()
	}
	got, err := read(stale).records()
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range got {
		if g.Total != want[i].Total || g.Base != want[i].Base || !bytes.Equal(g.raw, want[i].raw) {
			t.Errorf("generation %d was taken from a manifest whose record differs", g.Generation)
		}
	}
}

// TestDamagedHistoryRecord damages the manifest's record of a generation
// before the current one: reads of the current generation go on (its
// record is the only one decoded to open it), and whatever needs the
// history (log, a digest prefix, --at, a publish) fails with ErrCorrupt
// instead of acting on a history it cannot read.
func TestDamagedHistoryRecord(t *testing.T) {
	ss := stdlibStages(t)
	m := layeredMirror(t, Options{})
	syncAll(t, m, ss[:5], PublishInfo{})
	old := m.Meta().Generation
	if _, err := m.Put(t.Context(), ss[5]); err != nil {
		t.Fatal(err)
	}
	path := editManifest(t, m, func(tx *bolt.Tx) error { return tx.Bucket(bucketGens).Put(beUint64(old), []byte("{damaged")) })
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("open with a damaged old record: %v", err)
	}
	defer m.Close()
	if _, err := m.GetRaw(t.Context(), ss[5].ID); err != nil {
		t.Fatalf("read of the current generation: %v", err)
	}
	checks := map[string]func() error{
		"Generations": func() error { _, err := m.Generations(t.Context()); return err },
		"Resolve":     func() error { _, err := m.Resolve(t.Context(), m.Meta().Digest[:8]); return err },
		"SnapshotAt": func() error {
			sn, err := m.SnapshotAt(t.Context(), fmt.Sprint(old))
			if err == nil {
				sn.Close()
			}
			return err
		},
		"Put": func() error { _, err := m.Put(t.Context(), ss[6]); return err },
	}
	for name, check := range checks {
		if err := check(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if ok, _ := m.Contains(t.Context(), ss[6].ID); ok {
		t.Error("a publish over a damaged history went through")
	}
	res, err := m.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || !strings.Contains(fmt.Sprint(res.Problems), "manifest is damaged") {
		t.Errorf("verify of a damaged history record: ok=%v, problems %v", res.OK(), res.Problems)
	}
}

// TestFailedReloadReleases: a reload onto a generation whose newest delta
// is damaged fails after copying the fold of the chain it continues
// (taking a reference to each of its files); the Mirror keeps reading
// the generation it has, and once it is closed every file of that
// generation is closed too: the failed reload holds none of them.
func TestFailedReloadReleases(t *testing.T) {
	w := layeredMirror(t, Options{MaxLayers: 8, MaxOverlay: 1000})
	ss := stdlibStages(t)
	syncAll(t, w, ss[:20], PublishInfo{})
	ctx := t.Context()
	for i := range 3 {
		if _, err := w.Put(ctx, genStage(t, 3000+i, 100, testKey())); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Open(w.Path(), Options{ReloadInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	held, err := r.acquire()
	if err != nil {
		t.Fatal(err)
	}
	files := []*dataFile{held.file}
	for _, l := range held.ovLayers() {
		files = append(files, l.dataFile)
	}
	held.release()
	if len(files) < 3 {
		t.Fatalf("the generation reads %d files: the test needs a chain to continue", len(files))
	}
	if _, err := w.Put(ctx, genStage(t, 3100, 100, testKey())); err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(gensDir(w.Path()), deltaName(w.Meta().Generation))
	w.Close()
	f, err := os.OpenFile(delta, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8192), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := r.Reload(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reload onto a damaged delta: %v, want ErrCorrupt", err)
	}
	if _, err := r.GetRaw(ctx, ss[3].ID); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}
	r.Close()
	for _, f := range files {
		if n := f.refs.Load(); n != 0 {
			t.Errorf("%s has %d references after Close", filepath.Base(f.path), n)
		}
	}
}

// TestWriteManifestChecksNewRecord: a record a reader would refuse (a
// file outside PATH.gens, no base) fails the check of the manifest just
// written, before it can be renamed over PATH.
func TestWriteManifestChecksNewRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	for _, base := range []string{"../outside.base", ""} {
		rec := genRecord{Generation: 3, Base: base, Counts: map[string]int{}, ByEffect: map[string]int{}}
		if tmp, err := writeManifest(path, &manifest{current: 3, gens: []*genRecord{&rec}}, Options{}.normalized()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a record naming base %q: %v (%s), want ErrCorrupt", base, err, tmp)
		}
	}
}

// TestConcurrentReloadsRelease: readers of one Mirror, reloading on every
// read, use the lazy lists, the lazy history, SnapshotAt, Resolve and the
// held-bytes Upsert while another handle publishes local edits (merges
// and compactions included); once every handle and snapshot is closed,
// every data file any of them read is closed. Run with -race.
func TestConcurrentReloadsRelease(t *testing.T) {
	w := layeredMirror(t, Options{MaxLayers: 4, MaxOverlay: 40})
	ss := stdlibStages(t)
	syncAll(t, w, ss[:20], PublishInfo{})
	r, err := Open(w.Path(), Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	r.rule = w.rule
	ctx := t.Context()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var snaps, seen sync.Map
	note := func(s *snap) { // every data file a reader saw
		seen.Store(s.file, true)
		for _, l := range s.ovLayers() {
			seen.Store(l.dataFile, true)
		}
	}
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				st := ss[(g*7+i)%20]
				if s, err := r.acquire(); err == nil {
					note(s)
					s.release()
				}
				if _, err := r.FindRawByName(ctx, st.Name); err != nil {
					t.Error(err)
					return
				}
				if _, err := r.GetRawBySignature(ctx, st.SignatureID); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Error(err)
					return
				}
				if _, _, err := r.Page(ctx, store.LifecycleActive, 0, 5); err != nil {
					t.Error(err)
					return
				}
				gens, err := r.Generations(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				at := gens[len(gens)/2]
				if sn, err := r.SnapshotAt(ctx, fmt.Sprint(at.Generation)); err == nil {
					note(sn.s)
					if _, err := sn.GetRaw(ctx, st.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
						t.Error(err)
					}
					if i%3 == 0 {
						sn.Close()
					} else {
						snaps.Store(sn, true)
					}
				} else if !errors.Is(err, ErrGenerationGone) {
					t.Error(err)
					return
				}
				if len(at.Digest) >= 8 {
					if _, err := r.Resolve(ctx, at.Digest[:8]); err != nil && !errors.Is(err, ErrGenerationGone) && !errors.Is(err, ErrNoGeneration) {
						t.Error(err)
						return
					}
				}
				if _, err := r.Upsert(ctx, st); err != nil && !errors.Is(err, ErrBusy) {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 40 {
		if _, err := w.Put(ctx, genStage(t, 2000+i, 100, testKey())); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	r.Close()
	snaps.Range(func(k, _ any) bool { k.(*Snapshot).Close(); return true })
	w.Close()
	n := 0
	seen.Range(func(k, _ any) bool {
		n++
		if f := k.(*dataFile); f.refs.Load() != 0 {
			t.Errorf("%s has %d references after every handle closed", filepath.Base(f.path), f.refs.Load())
		}
		return true
	})
	if n < 3 {
		t.Fatalf("the readers saw %d data files: the test did not reload", n)
	}
}

// TestCopyFoldLeavesPreviousFold: a reload that continues the chain
// copies the previous generation's fold and shares its entries (see
// copyFold); folding the new delta, which here removes or retires a stage
// an older delta of the chain put, must leave the previous generation's
// fold, which its readers go on reading, as it was, share what the new
// delta does not touch, and equal a fresh open's fold.
func TestCopyFoldLeavesPreviousFold(t *testing.T) {
	m := layeredMirror(t, Options{MaxLayers: 8, MaxOverlay: 1000, MaxMerged: 2000})
	syncAll(t, m, stdlibStages(t)[:20], PublishInfo{})
	ctx, key := t.Context(), testKey()
	var puts []*store.Stage
	olderShared := 0 // changes of an entry whose word is an older copied delta than the newest
	for i := range 18 {
		prev, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		before := foldValues(prev.ov)
		var touched store.StageID
		switch kind := store.LifecycleUnknown; {
		case i%3 == 0 || len(puts) < 2:
			st := genStage(t, 2000+i, 100, key)
			touched, err = m.Put(ctx, st)
			puts = append(puts, st)
		case i%3 == 2 && func() bool {
			kind = puts[0].Lifecycle.Kind
			return kind == store.LifecycleDraft || kind == store.LifecycleActive
		}():
			// A new record of a stage an older delta put: the index loop.
			to := store.Active
			if kind == store.LifecycleActive {
				to = store.Tombstone
			}
			touched = puts[0].ID
			err = m.UpdateLifecycle(ctx, touched, to)
			puts[0].Lifecycle = to
		default:
			touched, puts = puts[0].ID, puts[1:]
			err = m.Remove(ctx, touched)
		}
		if err != nil {
			t.Fatal(err)
		}
		cur, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		if after := foldValues(prev.ov); !maps.Equal(before, after) {
			t.Fatalf("edit %d changed the fold of generation %d, which its readers read", i, prev.gen.Generation)
		}
		if cur.ov.copied > 0 {
			for k, e := range prev.ov.stages {
				switch shared := cur.ov.stages[k] == e; {
				case k == string(touched) && shared:
					t.Fatalf("edit %d: the entry of %s, which it changed, is the previous generation's", i, k)
				case k != string(touched) && !shared:
					t.Fatalf("edit %d: the entry of %s, which it did not touch, was copied", i, k)
				}
			}
			if e, ok := prev.ov.stages[string(touched)]; ok && e.word != prev.ov.layers[len(prev.ov.layers)-1] {
				olderShared++
			}
		}
		_, want := freshSnap(t, m.Path())
		sameFold(t, fmt.Sprintf("after edit %d", i), cur.ov, want.ov)
		prev.release()
		cur.release()
	}
	if olderShared == 0 {
		t.Fatal("no edit changed an entry an older delta of a continued chain said the latest word of")
	}
}

// TestPlainDeltaMissingBaseKind: a delta that removes a stage without a
// base_kind entry for it is damaged, even when an earlier delta of the
// chain touched that stage. A reader holding the previous generation
// that meets it on a reload keeps that generation, unchanged.
func TestPlainDeltaMissingBaseKind(t *testing.T) {
	m := layeredMirror(t, Options{MaxLayers: 8, MaxOverlay: 1000, MaxMerged: 2000})
	syncAll(t, m, stdlibStages(t)[:20], PublishInfo{})
	ctx, key := t.Context(), testKey()
	gone, err := m.Put(ctx, genStage(t, 100, 100, key))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, genStage(t, 101, 100, key)); err != nil {
		t.Fatal(err)
	}
	r, err := Open(m.Path(), Options{ReloadInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	held, err := r.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer held.release()
	before := foldValues(held.ov)
	want, err := r.GetRaw(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if s.ov == nil || s.ov.deep != nil || len(s.gen.Deltas) < 3 {
		t.Fatalf("want a chain of plain deltas, have %v", s.gen.Deltas)
	}
	path := filepath.Join(gensDir(m.Path()), s.gen.Deltas[len(s.gen.Deltas)-1])
	s.release()
	if err := m.Close(); err != nil { // it holds the delta it wrote open
		t.Fatal(err)
	}
	damageFile(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketBaseKind).Delete([]byte(gone)) })

	if _, err := r.Reload(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a reload meeting the damaged delta: %v, want ErrCorrupt", err)
	}
	if got, err := r.GetRaw(ctx, gone); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the failed reload, the reader's generation reads %s as %d bytes, %v; want it as before", gone, len(got), err)
	}
	if after := foldValues(held.ov); !maps.Equal(before, after) {
		t.Fatal("the failed reload changed the fold of the generation the reader holds")
	}
	fresh, err := Open(m.Path(), Options{})
	if err == nil {
		defer fresh.Close()
		_, err = fresh.GetRaw(ctx, gone)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a fresh open of the damaged generation: %v, want ErrCorrupt", err)
	}
}

// foldValues copies the entries of ov's fold of its folded deltas.
func foldValues(ov *overlay) map[string]ovEntry {
	out := map[string]ovEntry{}
	if ov == nil {
		return out
	}
	for k, e := range ov.stages {
		out[k] = *e
	}
	return out
}
