package sync

import (
	"errors"
	"slices"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// tk is a test key: digest b (first byte), anonymous or not.
func tk(b byte, anon bool) mirror.Key {
	var d [32]byte
	d[0] = b
	return mirror.NewKey(d, anon)
}

// ids is a sorted, distinct id set of active stages with digests bs.
func ids(bs ...byte) []keyKind {
	var raw []keyKind
	for _, b := range bs {
		raw = append(raw, keyKind{tk(b, false), store.LifecycleActive})
	}
	s, _ := newIDSet(raw)
	return s.s
}

func TestDetectDrift(t *testing.T) {
	consistent := func(lc string, bs ...byte) listingSummary {
		return listingSummary{lifecycle: lc, ids: ids(bs...), hasTotal: true, firstTotal: len(bs), lastTotal: len(bs)}
	}
	with := func(l listingSummary, f func(*listingSummary)) listingSummary { f(&l); return l }
	for _, tc := range []struct {
		name    string
		in      []listingSummary
		relist  []string
		reasons []string
	}{
		{name: "nothing listed"},
		{name: "consistent", in: []listingSummary{consistent("draft", 1, 2), consistent("active", 3)}},
		{name: "no total", in: []listingSummary{{lifecycle: "draft", ids: ids(1, 2)}}},
		{
			name:    "listed under two lifecycles",
			in:      []listingSummary{consistent("draft", 1, 2), consistent("active", 3), consistent("deprecated", 2)},
			relist:  []string{"draft", "deprecated"},
			reasons: []string{"stage " + tk(2, false).String() + " listed as both draft and deprecated"},
		},
		{
			name: "listed under three lifecycles",
			in:   []listingSummary{consistent("draft", 7), consistent("active", 7), consistent("tombstone", 7)},
			// Every pair of neighbours is a reason, in fetch order.
			relist: []string{"draft", "active", "tombstone"},
			reasons: []string{
				"stage " + tk(7, false).String() + " listed as both draft and active",
				"stage " + tk(7, false).String() + " listed as both active and tombstone",
			},
		},
		{
			name:    "total moved while paging",
			in:      []listingSummary{with(consistent("active", 1, 2), func(l *listingSummary) { l.firstTotal = 3 })},
			relist:  []string{"active"},
			reasons: []string{"active total changed from 3 to 2 while paging"},
		},
		{
			name:    "fewer distinct stages than the total",
			in:      []listingSummary{consistent("draft", 1), with(consistent("active", 1, 2), func(l *listingSummary) { l.ids = ids(2) })},
			relist:  []string{"active"},
			reasons: []string{"active listing returned 1 distinct stages but the registry reports 2"},
		},
		{
			name: "duplicates and a repeated page",
			in: []listingSummary{with(consistent("active", 1, 2), func(l *listingSummary) {
				l.duplicates, l.repeatedAt = 2, 200
			})},
			relist: []string{"active"},
			reasons: []string{
				"active listing repeated 2 stages",
				"active listing at offset 200 repeated a whole earlier page",
			},
		},
		{
			name: "an anonymous key is not its id",
			in: []listingSummary{consistent("draft", 1), with(consistent("active"), func(l *listingSummary) {
				l.ids = []keyKind{{tk(1, true), store.LifecycleUnknown}}
				l.firstTotal, l.lastTotal = 1, 1
			})},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := detectDrift(tc.in)
			if !slices.Equal(v.relist, tc.relist) || !slices.Equal(v.reasons, tc.reasons) {
				t.Errorf("detectDrift: relist %q, reasons %q\nwant relist %q, reasons %q", v.relist, v.reasons, tc.relist, tc.reasons)
			}
		})
	}
}

func TestDetectDriftBoundsReasons(t *testing.T) {
	var bs []byte
	for b := range byte(100) {
		bs = append(bs, b)
	}
	ls := []listingSummary{
		{lifecycle: "draft", ids: ids(bs...)},
		{lifecycle: "active", ids: ids(bs...)},
		{lifecycle: "deprecated", ids: ids(1), duplicates: 1},
	}
	v := detectDrift(ls)
	if len(v.reasons) != maxDriftReasons || !slices.Equal(v.relist, []string{"draft", "active", "deprecated"}) {
		t.Errorf("%d reasons (want %d), relist %q", len(v.reasons), maxDriftReasons, v.relist)
	}
}

func TestTotalsMoved(t *testing.T) {
	ls := []listingSummary{
		{lifecycle: "draft", hasTotal: true, lastTotal: 2},
		{lifecycle: "active", hasTotal: true, lastTotal: 5},
		{lifecycle: "tombstone", hasTotal: true, lastTotal: 0},
	}
	for _, tc := range []struct {
		name    string
		now     map[string]int
		relist  []string
		reasons []string
	}{
		{name: "unchanged", now: map[string]int{"draft": 2, "active": 5, "tombstone": 0}},
		{name: "no usable totals", now: map[string]int{}},
		{
			name:    "a stage moved from active to tombstone",
			now:     map[string]int{"draft": 2, "active": 4, "tombstone": 1},
			relist:  []string{"active", "tombstone"},
			reasons: []string{"active total changed from 5 to 4 after it was listed", "tombstone total changed from 0 to 1 after it was listed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := totalsMoved(ls, tc.now)
			if !slices.Equal(v.relist, tc.relist) || !slices.Equal(v.reasons, tc.reasons) {
				t.Errorf("totalsMoved: relist %q, reasons %q\nwant relist %q, reasons %q", v.relist, v.reasons, tc.relist, tc.reasons)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	id := func(b byte) store.StageID { return tk(b, false).ID() }
	kinded := func(kind store.LifecycleKind, bs ...byte) []keyKind {
		out := ids(bs...)
		for i := range out {
			out[i].kind = kind
		}
		return out
	}
	draft, active := store.LifecycleDraft, store.LifecycleActive
	for _, tc := range []struct {
		name   string
		passes [][][]keyKind
		skip   []mirror.Key
		final  []keyKind
		ask    []store.StageID
	}{
		{name: "nothing listed"},
		{
			name:   "one pass each",
			passes: [][][]keyKind{{kinded(draft, 1, 3)}, {kinded(active, 2)}},
			final:  []keyKind{{tk(1, false), draft}, {tk(2, false), active}, {tk(3, false), draft}},
		},
		{
			name:   "listed under two lifecycles: the first stays, and is asked about",
			passes: [][][]keyKind{{kinded(draft, 1, 2)}, {kinded(active, 2, 3)}},
			final:  []keyKind{{tk(1, false), draft}, {tk(2, false), draft}, {tk(3, false), active}},
			ask:    []store.StageID{id(2)},
		},
		{
			name: "seen only by an earlier pass: asked about",
			passes: [][][]keyKind{
				{kinded(draft, 1, 4, 5), kinded(draft, 1)}, // 4 and 5 left draft
				{kinded(active, 2, 3), kinded(active, 2, 3, 5)},
			},
			final: []keyKind{{tk(1, false), draft}, {tk(2, false), active}, {tk(3, false), active}, {tk(5, false), active}},
			ask:   []store.StageID{id(4)},
		},
		{
			name: "anonymous and quarantined keys are neither kept nor asked about",
			passes: [][][]keyKind{
				{kinded(draft, 6, 7), {{tk(1, false), draft}, {tk(1, true), store.LifecycleUnknown}}},
				{kinded(active, 1, 3)},
			},
			skip:  []mirror.Key{tk(3, false)},
			final: []keyKind{{tk(1, false), draft}},
			ask:   []store.StageID{id(1), id(6), id(7)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var final []keyKind
			ask, err := settle(tc.passes, func(k mirror.Key) bool { return slices.Contains(tc.skip, k) },
				func(kk keyKind) error { final = append(final, kk); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(final, tc.final) || !slices.Equal(ask, tc.ask) {
				t.Errorf("settle: final %v, ask %v\nwant final %v, ask %v", final, ask, tc.final, tc.ask)
			}
		})
	}
}

func TestSettleEmitError(t *testing.T) {
	boom := errors.New("disk full")
	n := 0
	_, err := settle([][][]keyKind{{ids(1, 2, 3)}}, func(mirror.Key) bool { return false },
		func(keyKind) error { n++; return boom })
	if !errors.Is(err, boom) || n != 1 {
		t.Errorf("settle: %v after %d emits; want %v after 1", err, n, boom)
	}
}

func TestEachKey(t *testing.T) {
	sets := [][]keyKind{ids(1, 3), nil, ids(2, 3), ids(3, 4)}
	type call struct {
		k  mirror.Key
		in []int
	}
	var got []call
	eachKey(sets, func(kk keyKind, in []int) { got = append(got, call{kk.k, slices.Clone(in)}) })
	want := []call{{tk(1, false), []int{0}}, {tk(2, false), []int{2}}, {tk(3, false), []int{0, 2, 3}}, {tk(4, false), []int{3}}}
	if len(got) != len(want) {
		t.Fatalf("eachKey: %v, want %v", got, want)
	}
	for i := range want {
		if got[i].k != want[i].k || !slices.Equal(got[i].in, want[i].in) {
			t.Errorf("call %d: %v, want %v", i, got[i], want[i])
		}
	}
}
