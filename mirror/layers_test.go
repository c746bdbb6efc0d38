package mirror

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// layeredMirror is a mirror whose admission gate lets every stage in (the
// generator's stages have random ids) and whose options keep deltas
// around: opts decides how many and how they merge.
func layeredMirror(t *testing.T, opts Options) *Mirror {
	t.Helper()
	m := newTemp(t, opts)
	m.rule = func(*store.Stage, store.Report, *store.TrustPolicy) error { return nil }
	return m
}

// compactedCopy makes a mirror whose one base holds exactly the stages
// and quarantine of src's current generation: the reference its layered
// reads must match.
func compactedCopy(t *testing.T, src *Mirror) *Mirror {
	t.Helper()
	dst := layeredMirror(t, Options{MaxOverlay: 1})
	w, err := dst.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var batch []Entry
	for r, err := range src.Records(t.Context(), store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, w.Admit(r.Raw))
	}
	if err := w.PutBatch(batch, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if l := dst.Meta().Layers; l != 0 {
		t.Fatalf("the reference has %d layers", l)
	}
	return dst
}

// TestLayeredReadsMatchCompacted applies random local edits to mirrors
// that keep their changes as deltas (long chains, chains merged often,
// and the default policy) and checks, every few edits, that every read
// of the layered generation equals the same read of a compacted copy:
// positional pages of every lifecycle at every offset, scans, records,
// name and signature look-ups, stats, and the content digest (the
// incremental LtHash against one computed from scratch).
func TestLayeredReadsMatchCompacted(t *testing.T) {
	configs := []struct {
		name string
		opts Options
	}{
		{"long-chain", Options{MaxOverlay: 1 << 20, MaxLayers: 200}},
		{"merged-chains", Options{MaxOverlay: 1 << 20, MaxLayers: 3}},
		// Chains merged when their folded deltas pass MaxOverlay, into a
		// merged delta compacted at MaxMerged.
		{"merged-by-size", Options{MaxOverlay: 6, MaxMerged: 30, MaxLayers: 64}},
		{"compacting", Options{MaxOverlay: 24}},
		// Deltas, manifests and bases through bbolt's own transactions.
		{"bbolt-transactions", Options{MaxOverlay: 48, MaxLayers: 5, BoltTransactions: true}},
	}
	ops := 120
	if testing.Short() {
		ops = 40
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m := layeredMirror(t, c.opts)
			g := storetest.NewGen(7)
			r := rand.New(rand.NewPCG(7, 11))
			var ids []store.StageID
			for range 40 {
				ids = append(ids, g.ID())
			}
			sigs := []store.SignatureID{g.SigID(), g.SigID(), g.SigID()}
			names := []string{"alpha", "beta", "gamma"}
			lifecycles := []store.Lifecycle{store.Draft, store.Active, store.Active, store.Tombstone}
			stage := func() *store.Stage {
				opts := []storetest.Option{storetest.WithID(ids[r.IntN(len(ids))]), storetest.WithSig(sigs[r.IntN(len(sigs))]),
					storetest.WithLifecycle(lifecycles[r.IntN(len(lifecycles))])}
				if r.IntN(5) > 0 {
					opts = append(opts, storetest.WithName(names[r.IntN(len(names))]))
				}
				return g.Stage(opts...)
			}
			// A base to start from, then edits that become deltas.
			w, err := m.BeginSync(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var base []Entry
			for range 25 {
				base = append(base, w.AdmitStage(stage()))
			}
			if err := w.PutBatch(base, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
				t.Fatal(err)
			}
			maxLayers, merged := 0, false
			for i := 1; i <= ops; i++ {
				ctx := t.Context()
				switch r.IntN(4) {
				case 0:
					_, _ = m.Put(ctx, stage())
				case 1:
					_, _ = m.Upsert(ctx, stage())
				case 2:
					_ = m.Remove(ctx, ids[r.IntN(len(ids))])
				case 3:
					_ = m.UpdateLifecycle(ctx, ids[r.IntN(len(ids))], lifecycles[r.IntN(len(lifecycles))])
				}
				maxLayers = max(maxLayers, m.Meta().Layers)
				if s, err := m.acquire(); err == nil {
					merged = merged || (s.ov != nil && s.ov.deep != nil)
					s.release()
				}
				if i%10 == 0 || i == ops {
					want := compactedCopy(t, m)
					samePointReads(t, fmt.Sprintf("after %d edits, a fresh open", i), m.Path(), want, ids, names, sigs)
					sameReads(t, fmt.Sprintf("after %d edits", i), m, want, names, sigs)
				}
			}
			if maxLayers < 2 {
				t.Errorf("the edits never made more than %d layers: the test did not test layers", maxLayers)
			}
			if wantMerged := c.name != "long-chain"; merged != wantMerged {
				t.Errorf("a generation read a merged delta: %v, want %v", merged, wantMerged)
			}
		})
	}
}

// samePointReads opens the mirror at path afresh and compares its reads
// that need no sorted lists (by id, by name, by signature: a merged delta
// is then read on disk, not folded) with want's, then checks that they
// built no lists.
func samePointReads(t *testing.T, when, path string, want *Mirror, ids []store.StageID, names []string, sigs []store.SignatureID) {
	t.Helper()
	ctx := t.Context()
	got, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	for _, id := range ids {
		g, gerr := got.GetRaw(ctx, id)
		w, werr := want.GetRaw(ctx, id)
		if !bytes.Equal(g, w) || (gerr == nil) != (werr == nil) {
			t.Fatalf("%s: GetRaw(%.8s): %v, want %v", when, id, gerr, werr)
		}
		gc, _ := got.Contains(ctx, id)
		if gc != (werr == nil) {
			t.Fatalf("%s: Contains(%.8s) = %v", when, id, gc)
		}
	}
	for _, name := range names {
		g, gerr := got.FindRawByName(ctx, name)
		w, _ := want.FindRawByName(ctx, name)
		if gerr != nil || !slices.EqualFunc(g, w, bytes.Equal) {
			t.Fatalf("%s: FindRawByName(%s): %d stages (%v), want %d", when, name, len(g), gerr, len(w))
		}
	}
	for _, sig := range sigs {
		g, gerr := got.GetRawBySignature(ctx, sig)
		w, werr := want.GetRawBySignature(ctx, sig)
		if !bytes.Equal(g, w) || (gerr == nil) != (werr == nil) {
			t.Fatalf("%s: GetRawBySignature(%.8s): %v, want %v", when, sig, gerr, werr)
		}
	}
	s, err := got.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	if s.ov != nil && (s.ov.listed.Load() || (s.ov.deep != nil && s.ov.allDone.Load())) {
		t.Fatalf("%s: point reads built the overlay's lists or folded its merged delta", when)
	}
	if s.gen.Overlay != s.ov.size() || s.gen.Folded != s.ov.folded() {
		t.Fatalf("%s: the manifest says the deltas touch %d keys, %d of them folded; the reader counts %d and folded %d",
			when, s.gen.Overlay, s.gen.Folded, s.ov.size(), s.ov.folded())
	}
}

// sameReads compares every read of got with the same read of want.
func sameReads(t *testing.T, when string, got, want *Mirror, names []string, sigs []store.SignatureID) {
	t.Helper()
	ctx := t.Context()
	gm, wm := got.Meta(), want.Meta()
	if gm.Digest != wm.Digest || gm.Total != wm.Total || gm.Quarantined != wm.Quarantined {
		t.Fatalf("%s: generation %d (%d layers) has digest %.12s, %d stages; its content compacted: %.12s, %d",
			when, gm.Generation, gm.Layers, gm.Digest, gm.Total, wm.Digest, wm.Total)
	}
	gs, _ := got.Stats(ctx)
	ws, _ := want.Stats(ctx)
	if fmt.Sprint(gs) != fmt.Sprint(ws) {
		t.Errorf("%s: stats %v, want %v", when, gs, ws)
	}
	for _, kind := range append([]store.LifecycleKind{store.LifecycleUnknown}, store.AllLifecycleKinds()...) {
		all := scanAll(t, want, kind)
		if g := scanAll(t, got, kind); !slices.EqualFunc(g, all, bytes.Equal) {
			t.Fatalf("%s: ScanRaw(%s) gives %d stages, want %d", when, kind.Name(), len(g), len(all))
		}
		var recs [][]byte
		for r, err := range got.Records(ctx, kind) {
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r.Raw)
		}
		if !slices.EqualFunc(recs, all, bytes.Equal) {
			t.Fatalf("%s: Records(%s) differ from the compacted copy", when, kind.Name())
		}
		for offset := 0; offset <= len(all)+1; offset++ {
			for _, limit := range []int{1, 3, 200} {
				page, total, err := got.Page(ctx, kind, offset, limit)
				if err != nil {
					t.Fatal(err)
				}
				wantPage := all[min(offset, len(all)):min(offset+limit, len(all))]
				if total != len(all) || !slices.EqualFunc(page, wantPage, bytes.Equal) {
					t.Fatalf("%s: Page(%s, %d, %d): %d stages of %d, want %d of %d",
						when, kind.Name(), offset, limit, len(page), total, len(wantPage), len(all))
				}
			}
		}
	}
	for _, name := range names {
		g, _ := got.FindRawByName(ctx, name)
		w, _ := want.FindRawByName(ctx, name)
		if !slices.EqualFunc(g, w, bytes.Equal) {
			t.Errorf("%s: FindRawByName(%s): %d stages, want %d", when, name, len(g), len(w))
		}
	}
	for _, sig := range sigs {
		g, gerr := got.GetRawBySignature(ctx, sig)
		w, werr := want.GetRawBySignature(ctx, sig)
		if !bytes.Equal(g, w) || (gerr == nil) != (werr == nil) {
			t.Errorf("%s: GetRawBySignature(%.8s): %v, want %v", when, sig, gerr, werr)
		}
	}
}

// freshSnap opens the mirror at path afresh and returns it with its
// current generation, both released when the test ends.
func freshSnap(t *testing.T, path string) (*Mirror, *snap) {
	t.Helper()
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.release)
	return m, s
}

func scanAll(t *testing.T, m *Mirror, kind store.LifecycleKind) [][]byte {
	t.Helper()
	var out [][]byte
	err := m.ScanRaw(t.Context(), kind, func(_ store.StageID, raw []byte) error {
		out = append(out, bytes.Clone(raw))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOverlayLookupsBeforeLists checks that the name and signature
// look-ups an overlay answers by scanning its entries (and looking the
// merged delta's indexes up), before its lists are built, equal the
// lists' answers, and that the lists get built once scansBeforeLists
// look-ups have scanned.
func TestOverlayLookupsBeforeLists(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		deep bool
	}{
		{"folded", Options{MaxOverlay: 1 << 20, MaxLayers: 128}, false},
		{"merged", Options{MaxOverlay: 1 << 20, MaxLayers: 8}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testLookupsBeforeLists(t, tc.opts, tc.deep) })
	}
}

func testLookupsBeforeLists(t *testing.T, opts Options, deep bool) {
	m := layeredMirror(t, opts)
	g := storetest.NewGen(9)
	// "alpha\x00beta" shares its index keys' prefix with "alpha".
	names := []string{"alpha", "beta", "gamma", "alpha\x00beta", "absent"}
	sigs := []store.SignatureID{g.SigID(), g.SigID(), g.SigID()}
	r := rand.New(rand.NewPCG(9, 9))
	syncAll(t, m, []*store.Stage{g.Stage(storetest.WithName("alpha"))}, PublishInfo{})
	for i := range 60 {
		opts := []storetest.Option{storetest.WithSig(sigs[r.IntN(len(sigs))]),
			storetest.WithLifecycle([]store.Lifecycle{store.Draft, store.Active, store.Tombstone}[r.IntN(3)])}
		if i%4 > 0 {
			opts = append(opts, storetest.WithName(names[r.IntN(4)]))
		}
		id, err := m.Put(t.Context(), g.Stage(opts...))
		if err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 { // removed stages are in the overlay too
			if err := m.Remove(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, s := freshSnap(t, m.Path())
	if (s.ov.deep != nil) != deep {
		t.Fatalf("the generation's deep delta: %v, want one: %v", s.ov.deep != nil, deep)
	}
	type lookup struct {
		sig   bool
		value string
	}
	var all []lookup
	for _, n := range names {
		all = append(all, lookup{false, n})
	}
	for _, sig := range sigs {
		all = append(all, lookup{true, string(sig)}, lookup{false, string(sig)})
	}
	scanned := map[lookup][]string{}
	for _, l := range all {
		ids, err := s.ov.liveWith(l.sig, l.value)
		if err != nil {
			t.Fatal(err)
		}
		scanned[l] = ids
	}
	if s.ov.listed.Load() {
		t.Fatalf("%d look-ups built the lists, want scans", len(all))
	}
	for range scansBeforeLists {
		if _, err := s.ov.liveWith(false, "alpha"); err != nil {
			t.Fatal(err)
		}
	}
	if !s.ov.listed.Load() {
		t.Fatalf("%d look-ups did not build the lists", len(all)+scansBeforeLists)
	}
	found := 0
	for l, got := range scanned {
		want, err := s.ov.liveWith(l.sig, l.value)
		if err != nil {
			t.Fatal(err)
		}
		found += len(want)
		if !slices.Equal(got, want) {
			t.Errorf("look-up %+v: the scan found %d ids, the lists %d", l, len(got), len(want))
		}
	}
	if found == 0 {
		t.Fatal("no look-up found anything: the test tests nothing")
	}
}
