package mirror

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// TestMergePolicy publishes one new stage per local edit and checks the
// shape of every generation against the policy: deltas are folded by
// readers until they would touch more than MaxOverlay keys, then the
// chain becomes one merged delta, read on disk; a chain that would pass
// MaxLayers first becomes one merged delta, then merges its tail (its
// newest deltas, while the one before holds at most twice as many keys
// as the tail) into the new delta; a publish that
// would make the deltas touch more than MaxMerged keys compacts them
// into a base.
func TestMergePolicy(t *testing.T) {
	type shape struct {
		layers int
		merged string // the merged delta's generation ("": none)
	}
	for _, tc := range []struct {
		name string
		opts Options
		want []shape
	}{
		{"by-size", Options{MaxOverlay: 4, MaxMerged: 12, MaxLayers: 64}, []shape{
			{1, ""}, {2, ""}, {3, ""}, {4, ""}, // folded: 1 to 4 keys
			{1, "6"},                                          // 5 > MaxOverlay: merged
			{2, "6"}, {3, "6"}, {4, "6"}, {5, "6"}, {1, "11"}, // 5 folded again: merged (10 keys)
			{2, "11"}, {3, "11"}, // 12 keys: MaxMerged
			{0, ""}, // compacted
		}},
		{"by-count", Options{MaxOverlay: 100, MaxMerged: 1000, MaxLayers: 3}, []shape{
			{2, ""}, {3, ""}, // the sync's delta over the empty base, then two
			{1, "4"},           // no merged delta yet: the chain becomes one
			{2, "4"}, {3, "4"}, // then the folded ones are merged, the merged one stays
			{2, "4"}, {3, "4"}, {2, "4"},
		}},
		{"by-tail", Options{MaxOverlay: 100, MaxMerged: 1000, MaxLayers: 5}, []shape{
			{2, ""}, {3, ""}, {4, ""}, {5, ""},
			{1, "6"}, // no merged delta yet: the chain becomes one
			{2, "6"}, {3, "6"}, {4, "6"}, {5, "6"},
			{2, "6"}, // four 1-key deltas merge with the new one: 5 keys
			{3, "6"}, {4, "6"}, {5, "6"},
			{2, "6"}, // three, and the 5 (at most twice 4): 9 keys
			{3, "6"}, {4, "6"}, {5, "6"},
			{3, "6"}, // three, not the 9 (more than twice 4): the 9 stays
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTemp(t, tc.opts)
			key := testKey()
			syncGenerated(t, m, 0, 20)
			var got []shape
			for i := range tc.want {
				prev := m.Meta().Generation
				if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
					t.Fatal(err)
				}
				// Diff (which lists only the keys the two generations'
				// deltas touch, or their folded deltas' when they share a
				// merged delta) against what the publish counted.
				d, err := m.Diff(t.Context(), fmt.Sprint(prev), fmt.Sprint(m.Meta().Generation))
				if err != nil {
					t.Fatal(err)
				}
				if d.Changes() != m.Meta().Changes {
					t.Fatalf("edit %d: Diff counts %+v, the publish %+v", i, d.Changes(), m.Meta().Changes)
				}
				s, err := m.acquire()
				if err != nil {
					t.Fatal(err)
				}
				sh := shape{layers: len(s.gen.Deltas)}
				if s.ov != nil && s.ov.deep != nil {
					sh.merged = strings.TrimLeft(strings.TrimSuffix(strings.TrimPrefix(s.gen.Deltas[0], "g"), ".delta"), "0")
				}
				got = append(got, sh)
				s.release()
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("generation shapes (deltas, merged delta) %v, want %v", got, tc.want)
			}
			mustVerify(t, m)
			want := compactedCopy(t, m)
			sameReads(t, "after the edits", m, want, nil, nil)
		})
	}
}

// TestMergedDeltaFoldsOnUse checks that a generation whose first delta is
// merged reads it on disk until a read needs the sorted lists, and that
// the fold it then builds equals folding every delta at open, as a reader
// that does not know merged deltas (an older binary) does.
func TestMergedDeltaFoldsOnUse(t *testing.T) {
	m := layeredMirror(t, Options{MaxOverlay: 1 << 20, MaxLayers: 4})
	g := storetest.NewGen(5)
	var ids []store.StageID
	for i := range 30 {
		id, err := m.Put(t.Context(), g.Stage(storetest.WithName("n")))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		if i%3 == 0 {
			if err := m.Remove(t.Context(), ids[i/2]); err != nil {
				t.Fatal(err)
			}
		}
	}
	fresh, s := freshSnap(t, m.Path())
	if s.ov == nil || s.ov.deep == nil || len(s.ov.layers) < 2 {
		t.Fatalf("the generation reads no merged delta and another: %v", s.gen.Deltas)
	}
	if _, err := fresh.FindRawByName(t.Context(), "n"); err != nil {
		t.Fatal(err)
	}
	if s.ov.allDone.Load() {
		t.Fatal("a name look-up folded the merged delta")
	}
	if _, _, err := fresh.Page(t.Context(), store.LifecycleUnknown, 0, 5); err != nil {
		t.Fatal(err)
	}
	if !s.ov.allDone.Load() || !s.ov.listed.Load() {
		t.Fatal("a page built no lists")
	}
	eager := &overlay{stages: map[string]*ovEntry{}, quar: map[string]*layer{}}
	for _, l := range s.ov.layers {
		err := l.db.View(func(tx *bolt.Tx) error { return eager.fold(tx, l) })
		if err != nil {
			t.Fatal(err)
		}
	}
	lazy := &overlay{layers: s.ov.layers, stages: s.ov.all, quar: s.ov.quar}
	eager.layers = s.ov.layers
	sameFold(t, "merged delta folded on use", lazy, eager)
}

// TestVerifyDamagedMergedDelta removes an entry from a merged delta's
// name index: Verify reports it.
func TestVerifyDamagedMergedDelta(t *testing.T) {
	m := newTemp(t, Options{MaxOverlay: 1 << 20, MaxLayers: 2})
	for i := range 3 {
		if _, err := m.Put(t.Context(), genStage(t, i+1, 100, testKey())); err != nil {
			t.Fatal(err)
		}
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if s.ov == nil || s.ov.deep == nil {
		t.Fatalf("no merged delta: %v", s.gen.Deltas)
	}
	path := filepath.Join(gensDir(m.Path()), s.gen.Deltas[0])
	s.release()
	mustVerify(t, m)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	damageFile(t, path, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketNames).Cursor()
		k, _ := c.First()
		return tx.Bucket(bucketNames).Delete(k)
	})
	m2, err := Open(m.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	res, err := m2.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || !slices.ContainsFunc(res.Problems, func(p Problem) bool { return strings.Contains(p.What, "names index") }) {
		t.Fatalf("verify of a merged delta missing a name entry: %+v", res.Problems)
	}
}

// TestChangeBytesCompact checks that a publish whose change set holds
// more record bytes than a delta may keep in memory compacts instead.
func TestChangeBytesCompact(t *testing.T) {
	m := newTemp(t, Options{changeBytes: 3000}) // one record of ~1.6 KB, not two
	key := testKey()
	syncGenerated(t, m, 100, 20) // enough that MaxOverlay (half the stages) is no limit
	ctx := t.Context()
	w, err := m.BeginLocal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Put(ctx, genStage(t, 2, 100, key)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if l := m.Meta().Layers; l != 1 {
		t.Fatalf("one small stage: %d deltas, want 1", l)
	}
	if w, err = m.BeginLocal(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := w.Put(ctx, genStage(t, 3+i, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if l := m.Meta().Layers; l != 0 {
		t.Fatalf("changes over the bytes a delta holds: %d deltas, want a compaction", l)
	}
	if m.Meta().Total != 23 {
		t.Fatalf("%d stages, want 23", m.Meta().Total)
	}
}

// TestTouchedWhileFolding reads a stage only the merged delta holds while
// another goroutine builds the full fold: every read must find it, as
// the merged delta on disk or in the fold, never in neither.
func TestTouchedWhileFolding(t *testing.T) {
	m := layeredMirror(t, Options{MaxOverlay: 1 << 20, MaxLayers: 2})
	g := storetest.NewGen(8)
	var ids []store.StageID
	for range 6 {
		id, err := m.Put(t.Context(), g.Stage())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_, s := freshSnap(t, m.Path())
	if s.ov == nil || s.ov.deep == nil {
		t.Fatalf("no merged delta: %v", s.gen.Deltas)
	}
	var deepID string
	for _, id := range ids {
		if _, later := s.ov.stages[string(id)]; !later {
			if _, ok, err := s.ov.deep.entry([]byte(id)); err == nil && ok {
				deepID = string(id)
				break
			}
		}
	}
	if deepID == "" {
		t.Fatal("no stage only the merged delta holds")
	}
	trials := 2000
	if testing.Short() {
		trials = 200
	}
	for range trials {
		ov := &overlay{layers: s.ov.layers, stages: s.ov.stages, quar: s.ov.quar, deep: s.ov.deep, deepKeys: s.ov.deepKeys}
		start := make(chan struct{})
		var missed atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			for !ov.allDone.Load() {
				if _, ok, err := ov.touched([]byte(deepID)); err != nil || !ok {
					missed.Store(true)
					return
				}
			}
		})
		close(start)
		if _, err := ov.entries(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if missed.Load() {
			t.Fatal("a read while the fold was built found the merged delta's stage untouched")
		}
	}
}

// TestQuarantineOverOverlayCompacts quarantines more entries than
// MaxOverlay in one publish: readers fold every quarantine key at open,
// so the publish compacts, and the local edits after it stay deltas
// whose folded keys stay within MaxOverlay (they do not rewrite a merged
// delta on every publish).
func TestQuarantineOverOverlayCompacts(t *testing.T) {
	m := newTemp(t, Options{MaxOverlay: 4, MaxMerged: 200, MaxLayers: 64})
	key := testKey()
	base := syncGenerated(t, m, 0, 20)
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	batch := entries(base)
	for i := range 5 {
		batch = append(batch, forcedQuarantine(genStage(t, 50+i, 100, key), nil, "test"))
	}
	if err := w.PutBatch(batch, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if meta := m.Meta(); meta.Layers != 0 || meta.Quarantined != 5 {
		t.Fatalf("5 quarantine keys over MaxOverlay 4: %d deltas, %d quarantined; want a compaction of 5", meta.Layers, meta.Quarantined)
	}
	merges := 0
	for i := range 8 {
		if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
		s, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		if s.gen.Folded > 4 {
			t.Fatalf("edit %d: readers fold %d keys, over MaxOverlay 4", i, s.gen.Folded)
		}
		if len(s.gen.Deltas) == 1 && s.ov.deep != nil {
			merges++
		}
		s.release()
	}
	if merges > 2 {
		t.Fatalf("8 edits wrote %d merged deltas", merges)
	}
	mustVerify(t, m)
}

// TestMergedDeltaMissingBaseKind damages a merged delta that removes a
// stage of the base: without its base_kind entry, a point read must fail
// as corrupt, not serve the base's copy of the removed stage.
func TestMergedDeltaMissingBaseKind(t *testing.T) {
	m := newTemp(t, Options{MaxOverlay: 10, MaxMerged: 10, MaxLayers: 2})
	key := testKey()
	base := syncGenerated(t, m, 0, 20) // 20 > MaxMerged: a base
	ctx := t.Context()
	gone := base[3].ID
	if err := m.Remove(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second merges the chain
		if _, err := m.Put(ctx, genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	if s.ov == nil || s.ov.deep == nil || len(s.gen.Deltas) != 1 {
		t.Fatalf("want one merged delta, have %v", s.gen.Deltas)
	}
	path := filepath.Join(gensDir(m.Path()), s.gen.Deltas[0])
	s.release()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	damageFile(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketBaseKind).Delete([]byte(gone)) })
	fresh, err := Open(m.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if raw, err := fresh.GetRaw(ctx, gone); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetRaw of a stage the damaged merged delta removes: %d bytes, %v; want ErrCorrupt", len(raw), err)
	}
}

// TestSnapshotCloseDuringReads closes a Snapshot while other goroutines
// read from it, through the base's and the merged delta's pooled read
// transactions: Close must return once the reads in flight do (not hang
// on a transaction begun meanwhile), and every read must succeed or fail
// with ErrClosed, never report damage.
func TestSnapshotCloseDuringReads(t *testing.T) {
	m, base, added := mergedOverBase(t)
	if _, s := freshSnap(t, m.Path()); s.ov == nil || s.ov.deep == nil {
		t.Fatal("the generation has no merged delta: the test tests nothing")
	}
	rounds := 60
	if testing.Short() {
		rounds = 20
	}
	for round := range rounds {
		m2, err := Open(m.Path(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		sn, err := m2.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		m2.Close() // the snapshot holds the last reference
		errs := make(chan error, 2)
		for _, id := range []store.StageID{added[0], base[round%len(base)].ID} {
			go func() {
				for {
					if _, err := sn.GetRaw(t.Context(), id); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		time.Sleep(time.Millisecond)
		closed := make(chan struct{})
		go func() { sn.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Snapshot.Close did not return while reads ran", round)
		}
		for range 2 {
			if err := <-errs; !errors.Is(err, ErrClosed) {
				t.Fatalf("round %d: a read racing Close: %v, want ErrClosed", round, err)
			}
		}
	}
}

// TestPointReadsReuseTransactions checks that point reads through a
// merged delta read on disk (not folded) reuse the files' pooled read
// transactions, buckets and cursors: a GetRaw allocates its copy of the
// stage and what it decodes of the merged delta's entry (1 to 4 times),
// not a transaction, buckets and cursors per file (21 allocations when
// each read began its own).
func TestPointReadsReuseTransactions(t *testing.T) {
	m, base, added := mergedOverBase(t)
	got, s := freshSnap(t, m.Path())
	if s.ov == nil || s.ov.deep == nil {
		t.Fatal("the generation has no merged delta: the test tests nothing")
	}
	for _, id := range []store.StageID{base[7].ID, added[0]} {
		if _, err := got.GetRaw(t.Context(), id); err != nil { // warm the pools
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := got.GetRaw(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 6 {
			t.Errorf("GetRaw(%.8s) allocates %.0f times a read, want at most 6", id, allocs)
		}
	}
	if s.ov.allDone.Load() {
		t.Fatal("the reads folded the merged delta: the test read nothing on disk")
	}
}
