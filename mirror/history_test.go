package mirror

import (
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
	"math"
	"os"
	"slices"
	"testing"
	"time"
)

func TestKeepPolicyString(t *testing.T) {
	for _, c := range []struct {
		p    KeepPolicy
		want string
	}{
		{KeepPolicy{}, "the last 30 generations and those of the last 7 days"},
		{KeepPolicy{Last: 1, Within: -1}, "the last generation"},
		{KeepPolicy{Last: 2, Within: 36 * time.Hour}, "the last 2 generations and those of the last 36 hours"},
		{KeepPolicy{Last: 5, Within: 24 * time.Hour}, "the last 5 generations and those of the last 1 day"},
		{KeepPolicy{Last: 5, Within: 90 * time.Minute}, "the last 5 generations and those of the last 1h30m0s"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.p, got, c.want)
		}
	}
}

// TestKeptRange: KeptRange names the ends of what Generations lists,
// before and after a collection.
func TestKeptRange(t *testing.T) {
	m := layeredMirror(t, Options{})
	g := storetest.NewVerifiableGen(31)
	for range 3 {
		syncAll(t, m, []*store.Stage{g.Stage()}, PublishInfo{})
	}
	check := func(what string) {
		t.Helper()
		gens, err := m.Generations(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		oldest, newest, err := m.KeptRange(t.Context())
		if err != nil || oldest != gens[0].Generation || newest != gens[len(gens)-1].Generation {
			t.Errorf("%s: KeptRange = %d, %d, %v; Generations lists %d to %d", what, oldest, newest, err, gens[0].Generation, gens[len(gens)-1].Generation)
		}
	}
	check("before gc")
	if _, err := m.GC(t.Context(), &KeepPolicy{Last: 2, Within: -1}); err != nil {
		t.Fatal(err)
	}
	check("after gc")
	if oldest, newest, _ := m.KeptRange(t.Context()); oldest == 0 || newest != 3 {
		gens, _ := m.Generations(t.Context())
		t.Errorf("after keeping the last 2 of 0..3: %d to %d (%d kept)", oldest, newest, len(gens))
	}
}

// TestGCAfterKilledWriter: GC takes a lock a killed writer left (its pid
// still in the lock file) and removes the temporaries it left, as the
// next writer would; with the lock released cleanly it does not look.
func TestGCAfterKilledWriter(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	left := m.Path() + ".tmp-0123456789abcdef"
	for _, stale := range []bool{false, true} {
		if err := os.WriteFile(left, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if stale {
			if err := os.WriteFile(m.lockPath(), []byte("123\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.GC(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(left); (err == nil) == stale {
			t.Fatalf("stale lock %v: the temporary a writer left is there: %v", stale, err == nil)
		}
	}
}

// layout returns a manifest of gens, oldest first: the first of them in
// spans of the given lengths, the others held.
func layout(gens []*genRecord, spanLens ...int) *manifest {
	mf := &manifest{version: FormatVersion}
	var spans []*span
	for _, n := range spanLens {
		st := make([]stamp, n)
		for i, g := range gens[:n] {
			st[i] = stampOf(g)
		}
		spans, gens = append(spans, newSpan(st[0].n, st)), gens[n:]
	}
	mf.setSpans(spans)
	mf.gens = gens
	return mf
}

func numbered(gens ...uint64) []*genRecord {
	var recs []*genRecord
	for _, g := range gens {
		recs = append(recs, &genRecord{Generation: g})
	}
	return recs
}

// trimmedFirst returns a manifest of mf's spans, the first without its
// oldest generation (and the archive file's id still), then held.
func trimmedFirst(mf *manifest, held ...uint64) *manifest {
	sp := mf.spans[0]
	m := &manifest{gens: numbered(held...)}
	m.setSpans(append([]*span{newSpan(sp.id, sp.gens[1:])}, mf.spans[1:]...))
	return m
}

func TestDropped(t *testing.T) {
	mf := func(gens ...uint64) *manifest { return layout(numbered(gens...)) }
	spanned := layout(numbered(1, 2, 3, 4, 5, 6, 7), 3, 2) // spans 1-3 and 4-5
	after := func(keep ...uint64) *manifest {              // spanned's spans, then keep held
		m := &manifest{gens: numbered(keep...)}
		m.setSpans(spanned.spans)
		return m
	}
	for _, c := range []struct {
		name       string
		prev, next *manifest
		gone       []uint64
		prefix     bool
	}{
		{"nothing dropped", mf(1, 2, 3), mf(1, 2, 3, 4), nil, true},
		{"oldest dropped", mf(1, 2, 3), mf(3, 4), []uint64{1, 2}, true},
		{"all dropped", mf(1, 2), mf(3), []uint64{1, 2}, true},
		{"a gap", mf(1, 2, 3), mf(1, 3, 4), []uint64{2}, false},
		{"a gap after a drop", mf(1, 2, 3, 4), mf(2, 4, 5), []uint64{1, 3}, false},
		{"newest dropped", mf(1, 2, 3), mf(1, 2), []uint64{3}, false},
		{"empty before", mf(), mf(1), nil, true},
		{"spans shared", spanned, after(6, 7, 8), nil, true},
		{"spans shared, a held one dropped", spanned, after(7, 8), []uint64{6}, false},
		{"spans copied", spanned, layout(numbered(1, 2, 3, 4, 5, 6, 7, 8), 2, 1, 4), nil, true},
		{"a span trimmed", spanned, layout(numbered(2, 3, 4, 5, 6, 7, 8), 2, 2), []uint64{1}, true},
		{"a span trimmed, the next shared", spanned, trimmedFirst(spanned, 6, 7, 8), []uint64{1}, true},
		{"a span dropped", spanned, layout(numbered(4, 5, 6, 7, 8), 2), []uint64{1, 2, 3}, true},
		{"inside a span", spanned, layout(numbered(1, 3, 4, 5, 6, 7, 8), 2, 2), []uint64{2}, false},
	} {
		gone, prefix := dropped(c.prev, c.next)
		if !slices.Equal(gone, c.gone) || prefix != c.prefix {
			t.Errorf("%s: dropped = %v, %v; want %v, %v", c.name, gone, prefix, c.gone, c.prefix)
		}
	}
}

// TestKeepPolicyKeep pins what a policy keeps: the last Last
// generations, and every one published within Within of now (at its
// bound too, and in the future, when the clock went back).
func TestKeepPolicyKeep(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *genRecord { return &genRecord{Published: now.Add(-d)} }
	gens := []*genRecord{{}, ago(72 * time.Hour), ago(48*time.Hour + 1), ago(48 * time.Hour), ago(-time.Hour), ago(time.Hour), ago(time.Minute)} // the first: no publish time
	for i, g := range gens {
		g.Generation = uint64(i + 1)
	}
	layouts := [][]int{nil, {3}, {1, 2, 3}, {2, 4}, {4, 2}} // all held; the oldest in spans of these lengths
	for _, c := range []struct {
		p    KeepPolicy
		want []uint64
	}{
		{KeepPolicy{Last: 2, Within: 48 * time.Hour}, []uint64{4, 5, 6, 7}},
		{KeepPolicy{Last: 1, Within: -1}, []uint64{7}},
		{KeepPolicy{Last: 4, Within: -1}, []uint64{4, 5, 6, 7}},
		{KeepPolicy{Last: 1, Within: 30 * time.Minute}, []uint64{5, 7}},
		{KeepPolicy{Last: 10, Within: time.Hour}, []uint64{1, 2, 3, 4, 5, 6, 7}},
		{KeepPolicy{Last: 1, Within: 200 * 24 * 365 * time.Hour}, []uint64{2, 3, 4, 5, 6, 7}},
		{KeepPolicy{Last: 1, Within: math.MaxInt64}, []uint64{1, 2, 3, 4, 5, 6, 7}}, // the longest window: forever
	} {
		for _, l := range layouts {
			for _, add := range []bool{false, true} {
				mf := layout(gens[:len(gens)-1], l...)
				var a *genRecord
				if add { // the newest published now
					a = gens[len(gens)-1]
				} else {
					mf = layout(gens, l...)
				}
				before := slices.Clone(mf.spans)
				var stamps [][]stamp
				for _, sp := range mf.spans {
					stamps = append(stamps, slices.Clone(sp.gens))
				}
				spans, held, err := c.p.keep(mf, a, now)
				if err != nil {
					t.Fatal(err)
				}
				for i, sp := range mf.spans { // mf's spans are shared: unchanged
					if sp != before[i] || !slices.Equal(sp.gens, stamps[i]) {
						t.Fatalf("%v, spans %v: keep changed span %d of the manifest", c.p, l, sp.id)
					}
				}
				got := keptNumbers(t, mf, spans, held)
				if !slices.Equal(got, c.want) {
					t.Errorf("%v, spans %v, add %v: keeps %v, want %v", c.p, l, add, got, c.want)
				}
			}
		}
	}
}

// keptNumbers returns the generations that keep returned for mf, and
// checks the spans: each is of one of mf's archive files, and lists some
// of its generations (all of them: it is mf's), in its entry too.
func keptNumbers(t *testing.T, mf *manifest, spans []*span, held []*genRecord) []uint64 {
	t.Helper()
	var got []uint64
	for _, sp := range spans {
		for _, st := range sp.gens {
			got = append(got, st.n)
		}
		if string(sp.entry) != string(archiveEntry(sp.gens)) {
			t.Errorf("span %d: its entry does not list its generations", sp.id)
		}
		i := slices.IndexFunc(mf.spans, func(old *span) bool { return old.id == sp.id })
		switch {
		case i < 0:
			t.Errorf("span %d is of no archive file of the manifest", sp.id)
		case len(mf.spans[i].gens) == len(sp.gens) && mf.spans[i] != sp:
			t.Errorf("span %d keeps all its generations, but was copied", sp.id)
		}
		for _, st := range sp.gens {
			if i >= 0 && !slices.Contains(mf.spans[i].gens, st) {
				t.Errorf("span %d lists generation %d, which its archive file does not hold", sp.id, st.n)
			}
		}
	}
	for _, g := range held {
		got = append(got, g.Generation)
	}
	return got
}

// TestSweepDroppedLeavesRecords: the sweep after a publish decodes the
// records of the generations it drops, which the manifest before holds
// and shares with its readers: it decodes copies.
func TestSweepDroppedLeavesRecords(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	key := testKey()
	for i := range 3 {
		if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	prev := readManifestFile(t, m.Path(), nil)
	if !prev.gens[0].lazy {
		t.Fatal("the oldest record is decoded at once")
	}
	spans, gens, err := KeepPolicy{Last: prev.count() - 1, Within: -1}.keep(prev, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	mf := &manifest{current: prev.current, state: prev.state, gens: gens, path: m.Path(), opts: m.opts}
	mf.setSpans(spans)
	res, err := m.sweepDropped(prev, mf)
	if err != nil || res.Files == 0 {
		t.Fatalf("the sweep removed %d files: %v", res.Files, err)
	}
	if !prev.gens[0].lazy {
		t.Error("the sweep decoded the dropped generation's record in the manifest that holds it")
	}
}
