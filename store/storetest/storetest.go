// Package storetest checks that a store.StageStore behaves exactly like
// noether's MemoryStore (spec §3): Run is a conformance suite of focused
// subtests, Differential a seeded random comparison against
// store.MemoryStore, and Gen makes the test stages both use.
//
// A backend's tests call them with a constructor for fresh, empty stores:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.StageStore { return openTemp(t) })
//	}
//
// A backend whose documented behaviour differs from MemoryStore's in a
// way Config names (sync.RemoteStageStore: Put verifies, Upsert cannot
// replace) calls RunConfig with those knobs instead, and the suite checks
// that behaviour.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

// Run runs the conformance suite against stores made by newStore; each
// subtest gets a fresh empty store. newStore should register any cleanup
// with t.Cleanup. Subtests do not run in parallel with each other. Run
// holds the store to MemoryStore's behaviour exactly: it is
// RunConfig(t, newStore, Config{}).
func Run(t *testing.T, newStore func(t *testing.T) store.StageStore) {
	t.Helper()
	RunConfig(t, newStore, Config{})
}

// Config names the ways a StageStore's documented behaviour may differ
// from MemoryStore's. Each knob makes the suite check the documented
// behaviour instead of MemoryStore's; none skips a check. The zero Config
// is MemoryStore.
type Config struct {
	// PutVerifies: Put and Upsert refuse a stage that fails store.Verify
	// with an error wrapping store.ErrVerification, and store nothing. The
	// suite then makes its stages with NewVerifiableGen, and checks the
	// refusal. sync.RemoteStageStore.Put: "A stage that fails local
	// verification is never sent."
	PutVerifies bool
	// UpsertKeepsExisting: Upsert of an id the store already holds
	// succeeds and leaves the stored stage as it was, as Put would with
	// ErrAlreadyExists. sync.RemoteStageStore.Upsert: "The registry has no
	// replace endpoint, so an existing remote copy is not replaced."
	UpsertKeepsExisting bool
}

// RunConfig is Run for a store that differs from MemoryStore as cfg says.
func RunConfig(t *testing.T, newStore func(t *testing.T) store.StageStore, cfg Config) {
	t.Helper()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := NewGen(int64(i + 1))
			if cfg.PutVerifies {
				g = NewVerifiableGen(int64(i + 1))
			}
			c.fn(t, newStore(t), g, cfg)
		})
	}
}

type testCase struct {
	name string
	fn   func(t *testing.T, s store.StageStore, g *Gen, cfg Config)
}

var cases = []testCase{
	{"PutGetRoundTripKeepsRaw", testPutGet},
	{"PutDuplicateIsAlreadyExists", testPutDuplicate},
	{"UpsertReplaces", testUpsertReplaces},
	{"RemoveAbsentIsNil", testRemoveAbsent},
	{"GetAbsentIsNotFound", testGetAbsent},
	{"Contains", testContains},
	{"ListFilters", testListFilters},
	{"StagesIteratorEarlyBreak", testStagesEarlyBreak},
	{"Transitions", testTransitions},
	{"UpdateAbsentIsNotFound", testUpdateAbsent},
	{"DeprecateToMissingSuccessor", testMissingSuccessor},
	{"DeprecateToItself", testDeprecateToItself},
	{"InvariantOnPut", testInvariantPut},
	{"InvariantOnUpsertNeverSelf", testInvariantUpsert},
	{"InvariantOnActivate", testInvariantActivate},
	{"InvariantNotTriggered", testInvariantNotTriggered},
	{"Stats", testStats},
	{"FindByNameAnyLifecycle", testFindByName},
	{"GetBySignatureActiveOnly", testGetBySignature},
	{"ActiveStagesWithSignatureSorted", testActiveWithSig},
	{"UnknownValuesKeptByteExact", testUnknownValues},
	{"Concurrent", testConcurrent},
	{"CancelledContext", testCancelled},
	{"UnverifiableStages", testUnverifiable},
}

// --- helpers ---

func put(t *testing.T, s store.StageStore, st *store.Stage) {
	t.Helper()
	id, err := s.Put(t.Context(), st)
	if err != nil {
		t.Fatalf("Put %s: %v", st, err)
	}
	if id != st.ID {
		t.Fatalf("Put returned id %s, want %s", id, st.ID)
	}
}

func upsert(t *testing.T, s store.StageStore, st *store.Stage) {
	t.Helper()
	id, err := s.Upsert(t.Context(), st)
	if err != nil {
		t.Fatalf("Upsert %s: %v", st, err)
	}
	if id != st.ID {
		t.Fatalf("Upsert returned id %s, want %s", id, st.ID)
	}
}

func get(t *testing.T, s store.StageStore, id store.StageID) *store.Stage {
	t.Helper()
	got, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	if got.ID != id {
		t.Fatalf("Get %s returned stage %s", id, got.ID)
	}
	return got
}

// wantRaw fails unless the stored stage with want's id has exactly want's
// bytes.
func wantRaw(t *testing.T, s store.StageStore, want []byte, id store.StageID) {
	t.Helper()
	got := get(t, s, id)
	if !bytes.Equal(got.Raw, want) {
		t.Fatalf("stage %s Raw:\n got %s\nwant %s", id, got.Raw, want)
	}
}

// withLifecycleBytes rewrites the `"lifecycle":…` member of a Gen stage by
// hand, independently of Stage.WithLifecycle.
func withLifecycleBytes(t *testing.T, st *store.Stage, l store.Lifecycle) []byte {
	t.Helper()
	old, err := st.Lifecycle.WireJSON()
	if err != nil {
		t.Fatal(err)
	}
	nw, err := l.WireJSON()
	if err != nil {
		t.Fatal(err)
	}
	from := append([]byte(`"lifecycle":`), old...)
	if bytes.Count(st.Raw, from) != 1 {
		t.Fatalf("stage %s: cannot find %s in its bytes", st.ID, from)
	}
	return bytes.Replace(st.Raw, from, append([]byte(`"lifecycle":`), nw...), 1)
}

func wantLifecycle(t *testing.T, s store.StageStore, orig *store.Stage, l store.Lifecycle) {
	t.Helper()
	got := get(t, s, orig.ID)
	if got.Lifecycle != l {
		t.Fatalf("stage %s lifecycle = %v, want %v", orig.ID, got.Lifecycle, l)
	}
	if want := withLifecycleBytes(t, orig, l); !bytes.Equal(got.Raw, want) {
		t.Fatalf("stage %s Raw after lifecycle change:\n got %s\nwant %s", orig.ID, got.Raw, want)
	}
}

func ids(ss []*store.Stage) []store.StageID {
	out := make([]store.StageID, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func sortedIDs(ss []*store.Stage) []store.StageID {
	out := ids(ss)
	slices.Sort(out)
	return out
}

func idsOf(ss ...*store.Stage) []store.StageID { return sortedIDs(ss) }

func list(t *testing.T, s store.StageStore, f store.Filter) []store.StageID {
	t.Helper()
	got, err := s.List(t.Context(), f)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return sortedIDs(got)
}

// --- cases ---

func testPutGet(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage(WithSig(g.SigID(WithEffects(`{"effect":"Cost","cents":5}`, `{"effect":"Llm","model":"x"}`))))
	b := g.Stage(WithoutName(), WithLifecycle(store.Draft))
	for _, st := range []*store.Stage{a, b} {
		want := slices.Clone(st.Raw)
		put(t, s, st)
		wantRaw(t, s, want, st.ID)
		got := get(t, s, st.ID)
		if got.SignatureID != st.SignatureID || got.Name != st.Name || got.HasName != st.HasName || got.Lifecycle != st.Lifecycle {
			t.Errorf("Get %s: decoded fields differ: got %+v", st.ID, got)
		}
	}
}

func testPutDuplicate(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage()
	put(t, s, a)
	// Different content, same id: content is not compared.
	b := g.Stage(WithID(a.ID), WithDescription("different"), WithLifecycle(store.Draft))
	if _, err := s.Put(t.Context(), b); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second Put of %s: err = %v, want ErrAlreadyExists", a.ID, err)
	}
	if _, err := s.Put(t.Context(), a); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("identical Put of %s: err = %v, want ErrAlreadyExists", a.ID, err)
	}
	wantRaw(t, s, a.Raw, a.ID)
}

func testUpsertReplaces(t *testing.T, s store.StageStore, g *Gen, cfg Config) {
	a := g.Stage(WithName("before"))
	upsert(t, s, a) // inserts
	wantRaw(t, s, a.Raw, a.ID)
	// Replace with a lifecycle no transition allows (Active → Draft) and,
	// where the id allows it, another name.
	opts := []Option{WithID(a.ID), WithDescription("after"), WithLifecycle(store.Draft)}
	renamed := !g.verifiable // a verifiable id fixes the name
	if renamed {
		opts = append(opts, WithName("after"))
	}
	b := g.Stage(opts...)
	upsert(t, s, b)
	if cfg.UpsertKeepsExisting {
		wantRaw(t, s, a.Raw, a.ID)
		if got, _ := s.FindByName(t.Context(), "after"); renamed && len(got) != 0 {
			t.Errorf("FindByName(after) after an Upsert that keeps the existing stage = %v, want none", ids(got))
		}
	} else {
		wantRaw(t, s, b.Raw, a.ID)
		if got, _ := s.FindByName(t.Context(), "before"); renamed && len(got) != 0 {
			t.Errorf("FindByName(before) after replacement = %v, want none", ids(got))
		}
	}
	if got, _ := s.FindByName(t.Context(), get(t, s, a.ID).Name); len(got) != 1 {
		t.Errorf("FindByName of the stored stage's name = %v, want it alone", ids(got))
	}
	if got := list(t, s, store.Filter{}); len(got) != 1 {
		t.Errorf("List after upsert of one id = %v, want one stage", got)
	}
}

func testRemoveAbsent(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	if err := s.Remove(t.Context(), g.ID()); err != nil {
		t.Fatalf("Remove of absent id: %v", err)
	}
	a := g.Stage()
	put(t, s, a)
	for i := range 2 {
		if err := s.Remove(t.Context(), a.ID); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := s.Get(t.Context(), a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Remove: err = %v, want ErrNotFound", err)
	}
	put(t, s, a) // the id is free again
}

func testGetAbsent(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	put(t, s, g.Stage())
	id := g.ID()
	got, err := s.Get(t.Context(), id)
	if !errors.Is(err, store.ErrNotFound) || got != nil {
		t.Fatalf("Get absent = %v, %v; want nil, ErrNotFound", got, err)
	}
	if !strings.Contains(err.Error(), string(id)) {
		t.Errorf("error %q does not name the id", err)
	}
}

func testContains(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage()
	put(t, s, a)
	for _, tc := range []struct {
		id   store.StageID
		want bool
	}{{a.ID, true}, {g.ID(), false}, {a.ID[:63], false}} {
		got, err := s.Contains(t.Context(), tc.id)
		if err != nil || got != tc.want {
			t.Errorf("Contains(%s) = %v, %v; want %v", tc.id, got, err, tc.want)
		}
	}
}

func testListFilters(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	if got := list(t, s, store.Filter{}); len(got) != 0 {
		t.Fatalf("List on empty store = %v", got)
	}
	x, y := g.ID(), g.ID()
	draft := g.Stage(WithLifecycle(store.Draft))
	active := g.Stage()
	depX := g.Stage(WithLifecycle(store.Deprecated(x)))
	depX2 := g.Stage(WithLifecycle(store.Deprecated(x)))
	depY := g.Stage(WithLifecycle(store.Deprecated(y)))
	tomb := g.Stage(WithLifecycle(store.Tombstone))
	all := []*store.Stage{draft, active, depX, depX2, depY, tomb}
	for _, st := range all {
		put(t, s, st)
	}
	lc := func(l store.Lifecycle) *store.Lifecycle { return &l }
	for _, tc := range []struct {
		name string
		f    store.Filter
		want []store.StageID
	}{
		{"nil filter", store.Filter{}, idsOf(all...)},
		{"Draft", store.Filter{Lifecycle: lc(store.Draft)}, idsOf(draft)},
		{"Active", store.Filter{Lifecycle: lc(store.Active)}, idsOf(active)},
		{"Tombstone", store.Filter{Lifecycle: lc(store.Tombstone)}, idsOf(tomb)},
		{"Deprecated{X} matches only X", store.Filter{Lifecycle: lc(store.Deprecated(x))}, idsOf(depX, depX2)},
		{"Deprecated{Y}", store.Filter{Lifecycle: lc(store.Deprecated(y))}, idsOf(depY)},
		{"Deprecated{other}", store.Filter{Lifecycle: lc(store.Deprecated(g.ID()))}, nil},
		{"Kind Deprecated", store.Filter{Kind: store.LifecycleDeprecated}, idsOf(depX, depX2, depY)},
		{"Kind Active", store.Filter{Kind: store.LifecycleActive}, idsOf(active)},
	} {
		got := list(t, s, tc.f)
		if !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
			t.Errorf("List(%s) = %v, want %v", tc.name, got, tc.want)
		}
		var seen []*store.Stage
		for st, err := range s.Stages(t.Context(), tc.f) {
			if err != nil {
				t.Fatalf("Stages(%s): %v", tc.name, err)
			}
			seen = append(seen, st)
		}
		if got := sortedIDs(seen); !slices.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
			t.Errorf("Stages(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func testStagesEarlyBreak(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	for range 10 {
		put(t, s, g.Stage(WithLifecycle(store.Draft)))
	}
	n := 0
	for st, err := range s.Stages(t.Context(), store.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		// The loop body may use the store (read and write).
		if _, err := s.Get(t.Context(), st.ID); err != nil {
			t.Fatalf("Get inside Stages loop: %v", err)
		}
		if n == 0 {
			if err := s.UpdateLifecycle(t.Context(), st.ID, store.Active); err != nil {
				t.Fatalf("UpdateLifecycle inside Stages loop: %v", err)
			}
		}
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Fatalf("iterated %d stages before break, want 3", n)
	}
	// The store still works after an abandoned iteration.
	put(t, s, g.Stage())
	if got := list(t, s, store.Filter{}); len(got) != 11 {
		t.Fatalf("List after early break has %d stages, want 11", len(got))
	}
}

func testTransitions(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	succ := g.Stage(WithLifecycle(store.Draft))
	put(t, s, succ)
	from := map[string]store.Lifecycle{
		"Draft": store.Draft, "Active": store.Active,
		"Deprecated": store.Deprecated(succ.ID), "Tombstone": store.Tombstone,
	}
	to := map[string]store.Lifecycle{
		"Draft": store.Draft, "Active": store.Active,
		"Deprecated": store.Deprecated(succ.ID), "Tombstone": store.Tombstone,
	}
	allowed := map[[2]string]bool{
		{"Draft", "Active"}: true, {"Active", "Deprecated"}: true, {"Active", "Tombstone"}: true,
	}
	for _, fn := range []string{"Draft", "Active", "Deprecated", "Tombstone"} {
		for _, tn := range []string{"Draft", "Active", "Deprecated", "Tombstone"} {
			t.Run(fn+"To"+tn, func(t *testing.T) {
				st := g.Stage(WithLifecycle(from[fn]), WithSig(g.SigID()))
				put(t, s, st)
				err := s.UpdateLifecycle(t.Context(), st.ID, to[tn])
				if allowed[[2]string{fn, tn}] {
					if err != nil {
						t.Fatalf("UpdateLifecycle %s → %s: %v", fn, tn, err)
					}
					wantLifecycle(t, s, st, to[tn])
					return
				}
				if !errors.Is(err, store.ErrInvalidTransition) {
					t.Fatalf("UpdateLifecycle %s → %s: err = %v, want ErrInvalidTransition", fn, tn, err)
				}
				wantRaw(t, s, st.Raw, st.ID)
			})
		}
	}
}

func testUpdateAbsent(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	put(t, s, g.Stage())
	// NotFound is checked before the transition and the successor.
	for _, l := range []store.Lifecycle{store.Active, store.Draft, store.Deprecated(g.ID())} {
		if err := s.UpdateLifecycle(t.Context(), g.ID(), l); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateLifecycle(absent, %v): err = %v, want ErrNotFound", l, err)
		}
	}
}

func testMissingSuccessor(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage()
	put(t, s, a)
	if err := s.UpdateLifecycle(t.Context(), a.ID, store.Deprecated(g.ID())); !errors.Is(err, store.ErrInvalidSuccessor) {
		t.Fatalf("deprecate to missing successor: err = %v, want ErrInvalidSuccessor", err)
	}
	wantRaw(t, s, a.Raw, a.ID)
	// The transition is checked before the successor.
	d := g.Stage(WithLifecycle(store.Draft))
	put(t, s, d)
	if err := s.UpdateLifecycle(t.Context(), d.ID, store.Deprecated(g.ID())); !errors.Is(err, store.ErrInvalidTransition) {
		t.Fatalf("Draft → Deprecated{missing}: err = %v, want ErrInvalidTransition", err)
	}
	// Any lifecycle will do for the successor, even Tombstone.
	tomb := g.Stage(WithLifecycle(store.Tombstone))
	put(t, s, tomb)
	if err := s.UpdateLifecycle(t.Context(), a.ID, store.Deprecated(tomb.ID)); err != nil {
		t.Fatalf("deprecate to a Tombstone successor: %v", err)
	}
	wantLifecycle(t, s, a, store.Deprecated(tomb.ID))
}

func testDeprecateToItself(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage(WithSig(g.SigID()))
	put(t, s, a)
	if err := s.UpdateLifecycle(t.Context(), a.ID, store.Deprecated(a.ID)); err != nil {
		t.Fatalf("deprecate to itself: %v", err)
	}
	wantLifecycle(t, s, a, store.Deprecated(a.ID))
}

func testInvariantPut(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	sig, other := g.SigID(), g.SigID()
	a := g.Stage(WithSig(sig))
	b := g.Stage(WithSig(sig))
	draft := g.Stage(WithSig(sig), WithLifecycle(store.Draft))
	unrelated := g.Stage(WithSig(other))
	put(t, s, a)
	put(t, s, draft)
	put(t, s, unrelated)
	put(t, s, b)
	wantLifecycle(t, s, a, store.Deprecated(b.ID))
	wantRaw(t, s, b.Raw, b.ID)
	wantRaw(t, s, draft.Raw, draft.ID)
	wantRaw(t, s, unrelated.Raw, unrelated.ID)
	c := g.Stage(WithSig(sig))
	put(t, s, c)
	wantLifecycle(t, s, b, store.Deprecated(c.ID))
	// a was already Deprecated: it keeps pointing at b.
	wantLifecycle(t, s, a, store.Deprecated(b.ID))
}

func testInvariantUpsert(t *testing.T, s store.StageStore, g *Gen, cfg Config) {
	sig := g.SigID()
	a := g.Stage(WithSig(sig))
	put(t, s, a)
	// Upserting the same Active stage again must not deprecate itself.
	upsert(t, s, a)
	wantRaw(t, s, a.Raw, a.ID)
	b := g.Stage(WithSig(sig))
	upsert(t, s, b)
	wantLifecycle(t, s, a, store.Deprecated(b.ID))
	wantRaw(t, s, b.Raw, b.ID)
	// Replacing b by an Active copy with new bytes still leaves b Active
	// (or, where Upsert keeps what is stored, b as it was).
	b2 := g.Stage(WithID(b.ID), WithSig(sig), WithDescription("replaced"))
	upsert(t, s, b2)
	if cfg.UpsertKeepsExisting {
		wantRaw(t, s, b.Raw, b.ID)
	} else {
		wantRaw(t, s, b2.Raw, b.ID)
	}
	wantLifecycle(t, s, a, store.Deprecated(b.ID))
}

func testInvariantActivate(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	sig := g.SigID()
	a := g.Stage(WithSig(sig))
	b := g.Stage(WithSig(sig), WithLifecycle(store.Draft))
	c := g.Stage(WithSig(sig), WithLifecycle(store.Draft))
	put(t, s, a)
	put(t, s, b)
	put(t, s, c)
	if err := s.UpdateLifecycle(t.Context(), b.ID, store.Active); err != nil {
		t.Fatal(err)
	}
	wantLifecycle(t, s, b, store.Active)
	wantLifecycle(t, s, a, store.Deprecated(b.ID))
	wantRaw(t, s, c.Raw, c.ID)
	act, err := s.ActiveStagesWithSignature(t.Context(), sig)
	if err != nil || len(act) != 1 || act[0].ID != b.ID {
		t.Fatalf("ActiveStagesWithSignature after activation = %v, %v; want just %s", act, err, b.ID)
	}
}

func testInvariantNotTriggered(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	sig := g.SigID()
	a := g.Stage(WithSig(sig))
	put(t, s, a)
	for _, st := range []*store.Stage{
		g.Stage(WithSig(sig), WithLifecycle(store.Draft)),
		g.Stage(WithSig(sig), WithLifecycle(store.Deprecated(a.ID))),
		g.Stage(WithSig(sig), WithLifecycle(store.Tombstone)),
	} {
		put(t, s, st)
		upsert(t, s, st)
		wantRaw(t, s, a.Raw, a.ID)
	}
	// Stages without a signature id never deprecate each other, even
	// with the same name.
	n1 := g.Stage(WithName("nosig"))
	n2 := g.Stage(WithName("nosig"))
	put(t, s, n1)
	put(t, s, n2)
	wantRaw(t, s, n1.Raw, n1.ID)
	wantRaw(t, s, n2.Raw, n2.ID)
}

func testStats(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 0 || len(st.ByLifecycle) != 0 || len(st.ByEffect) != 0 {
		t.Fatalf("Stats of empty store = %+v", st)
	}
	put(t, s, g.Stage())
	put(t, s, g.Stage(WithLifecycle(store.Draft), WithEffects(`{"effect":"Cost","cents":5}`, `{"effect":"Llm","model":"x"}`)))
	put(t, s, g.Stage(WithLifecycle(store.Deprecated(g.ID())), WithEffects(`{"effect":"Cost","cents":5}`, `{"effect":"Pure"}`)))
	put(t, s, g.Stage(WithLifecycle(store.Draft), WithEffects(`{"effect":"FsRead","path":"/etc/\"q\""}`, `{"effect":"Network"}`)))
	put(t, s, g.Stage(WithEffects()))
	st, err = s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := store.Stats{
		Total:       5,
		ByLifecycle: map[string]int{"active": 2, "draft": 2, "deprecated": 1},
		ByEffect: map[string]int{
			"Pure": 2, "Cost { cents: 5 }": 2, `Llm { model: "x" }`: 1,
			`FsRead { path: "/etc/\"q\"" }`: 1, "Network": 1,
		},
	}
	if st.Total != want.Total || !mapsEqual(st.ByLifecycle, want.ByLifecycle) || !mapsEqual(st.ByEffect, want.ByEffect) {
		t.Fatalf("Stats = %+v\nwant %+v", st, want)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testFindByName(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	x := []*store.Stage{
		g.Stage(WithName("x")),
		g.Stage(WithName("x"), WithLifecycle(store.Draft)),
		g.Stage(WithName("x"), WithLifecycle(store.Tombstone)),
		g.Stage(WithName("x"), WithLifecycle(store.Deprecated(g.ID()))),
	}
	for _, st := range x {
		put(t, s, st)
	}
	upper, spaced, empty := g.Stage(WithName("X")), g.Stage(WithName("x ")), g.Stage(WithName(""))
	put(t, s, upper)
	put(t, s, spaced)
	put(t, s, empty)
	put(t, s, g.Stage(WithoutName()))
	for _, tc := range []struct {
		name string
		want []store.StageID
	}{
		{"x", idsOf(x...)},
		{"X", idsOf(upper)},
		{"x ", idsOf(spaced)},
		{"", idsOf(empty)}, // an explicit "" name, not the unnamed stage
		{"nope", nil},
	} {
		got, err := s.FindByName(t.Context(), tc.name)
		if err != nil {
			t.Fatalf("FindByName(%q): %v", tc.name, err)
		}
		if gotIDs := sortedIDs(got); !slices.Equal(gotIDs, tc.want) && (len(gotIDs) != 0 || len(tc.want) != 0) {
			t.Errorf("FindByName(%q) = %v, want %v", tc.name, gotIDs, tc.want)
		}
	}
}

func testGetBySignature(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	sig := g.SigID()
	if _, err := s.GetBySignature(t.Context(), sig); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBySignature on empty store: err = %v, want ErrNotFound", err)
	}
	// Non-Active stages with smaller ids must be passed over.
	active := g.Stage(WithIDPrefix("f"), WithSig(sig))
	put(t, s, active)
	put(t, s, g.Stage(WithIDPrefix("0"), WithSig(sig), WithLifecycle(store.Draft)))
	put(t, s, g.Stage(WithIDPrefix("1"), WithSig(sig), WithLifecycle(store.Deprecated(active.ID))))
	put(t, s, g.Stage(WithIDPrefix("2"), WithSig(sig), WithLifecycle(store.Tombstone)))
	got, err := s.GetBySignature(t.Context(), sig)
	if err != nil || got.ID != active.ID {
		t.Fatalf("GetBySignature = %v, %v; want %s", got, err, active.ID)
	}
	if err := s.UpdateLifecycle(t.Context(), active.ID, store.Tombstone); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetBySignature(t.Context(), sig); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBySignature with no Active stage = %v, %v; want ErrNotFound", got, err)
	}
	if _, err := s.GetBySignature(t.Context(), g.SigID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetBySignature(unknown) err = %v, want ErrNotFound", err)
	}
}

func testActiveWithSig(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	// The store keeps at most one Active stage per signature id, so sorted
	// order is observable only across activations: check the result after
	// each step.
	sig := g.SigID()
	got, err := s.ActiveStagesWithSignature(t.Context(), sig)
	if err != nil || len(got) != 0 {
		t.Fatalf("ActiveStagesWithSignature on empty store = %v, %v", got, err)
	}
	var stages []*store.Stage
	for _, p := range []string{"c", "a", "b"} {
		st := g.Stage(WithIDPrefix(p), WithSig(sig))
		put(t, s, st)
		stages = append(stages, st)
		got, err := s.ActiveStagesWithSignature(t.Context(), sig)
		if err != nil || len(got) != 1 || got[0].ID != st.ID {
			t.Fatalf("ActiveStagesWithSignature after Put %s = %v, %v", st.ID, ids(got), err)
		}
	}
	// Upsert can make several stages Active only if they have different
	// signature ids; those never show up here.
	put(t, s, g.Stage(WithSig(g.SigID())))
	got, err = s.ActiveStagesWithSignature(t.Context(), sig)
	if err != nil || len(got) != 1 || got[0].ID != stages[2].ID {
		t.Fatalf("ActiveStagesWithSignature = %v, %v; want %s", ids(got), err, stages[2].ID)
	}
	if !slices.IsSortedFunc(got, func(a, b *store.Stage) int { return strings.Compare(string(a.ID), string(b.ID)) }) {
		t.Fatal("not sorted by id")
	}
}

func testUnknownValues(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	teleport := g.Stage(WithSig(g.SigID(WithEffects(`{"effect":"Pure"}`, `{"effect":"Teleport","range_km":3}`))))
	archived := g.Stage(WithRawLifecycle(`"Archived"`))
	frozen := g.Stage(WithRawLifecycle(`{"Frozen":{"until":"2030"}}`))
	for _, st := range []*store.Stage{teleport, archived, frozen} {
		if len(st.Unknown) == 0 {
			t.Fatalf("Gen stage %s: decoder flagged no unknown value", st.Raw)
		}
		put(t, s, st)
		wantRaw(t, s, st.Raw, st.ID)
	}
	// An unknown lifecycle is not a legal source of any transition.
	if err := s.UpdateLifecycle(t.Context(), archived.ID, store.Active); !errors.Is(err, store.ErrInvalidTransition) {
		t.Fatalf("Archived → Active: err = %v, want ErrInvalidTransition", err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.ByEffect["Teleport"] != 1 || st.ByLifecycle["unknown"] != 2 {
		t.Fatalf("Stats with unknown values = %+v", st)
	}
}

func testConcurrent(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	const workers, each = 8, 20
	sig := g.SigID()
	shared := make([][]*store.Stage, workers)
	own := make([][]*store.Stage, workers)
	for w := range workers {
		for range each {
			own[w] = append(own[w], g.Stage(WithLifecycle(store.Draft), WithSig(g.SigID())))
		}
		shared[w] = append(shared[w], g.Stage(WithSig(sig)))
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				for _, st := range own[w] {
					if _, err := s.Put(ctx, st); err != nil {
						return fmt.Errorf("put %s: %w", st.ID, err)
					}
					got, err := s.Get(ctx, st.ID)
					if err != nil || !bytes.Equal(got.Raw, st.Raw) {
						return fmt.Errorf("get %s after put: %v", st.ID, err)
					}
					if err := s.UpdateLifecycle(ctx, st.ID, store.Active); err != nil {
						return fmt.Errorf("activate: %w", err)
					}
					if _, err := s.List(ctx, store.Filter{Kind: store.LifecycleActive}); err != nil {
						return fmt.Errorf("list: %w", err)
					}
				}
				// All workers race to make their stage the Active one.
				if _, err := s.Put(ctx, shared[w][0]); err != nil {
					return fmt.Errorf("put shared %s: %w", shared[w][0].ID, err)
				}
				_, err := s.Stats(ctx)
				return err
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(list(t, s, store.Filter{Kind: store.LifecycleActive})); n != workers*each+1 {
		t.Errorf("%d Active stages, want %d", n, workers*each+1)
	}
	act, err := s.ActiveStagesWithSignature(ctx, sig)
	if err != nil || len(act) != 1 {
		t.Fatalf("after concurrent Puts sharing a signature id: %d Active (%v), want exactly 1", len(act), err)
	}
	dep := list(t, s, store.Filter{Lifecycle: ptr(store.Deprecated(act[0].ID))})
	others := list(t, s, store.Filter{Kind: store.LifecycleDeprecated})
	if len(others) != workers-1 || len(dep) == 0 {
		t.Errorf("after concurrent Puts: %d Deprecated (%d to the winner), want %d", len(others), len(dep), workers-1)
	}
}

func ptr[T any](v T) *T { return &v }

func testCancelled(t *testing.T, s store.StageStore, g *Gen, _ Config) {
	a := g.Stage()
	put(t, s, a)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled context: err = %v, want context.Canceled", op, err)
		}
	}
	b := g.Stage()
	_, err := s.Put(ctx, b)
	check("Put", err)
	_, err = s.Upsert(ctx, b)
	check("Upsert", err)
	check("Remove", s.Remove(ctx, a.ID))
	check("UpdateLifecycle", s.UpdateLifecycle(ctx, a.ID, store.Tombstone))
	_, err = s.Get(ctx, a.ID)
	check("Get", err)
	_, err = s.Contains(ctx, a.ID)
	check("Contains", err)
	_, err = s.List(ctx, store.Filter{})
	check("List", err)
	_, err = s.Stats(ctx)
	check("Stats", err)
	_, err = s.FindByName(ctx, a.Name)
	check("FindByName", err)
	_, err = s.GetBySignature(ctx, g.SigID())
	check("GetBySignature", err)
	_, err = s.ActiveStagesWithSignature(ctx, g.SigID())
	check("ActiveStagesWithSignature", err)
	var iterErr error
	for st, err := range s.Stages(ctx, store.Filter{}) {
		if err == nil {
			t.Errorf("Stages with cancelled context yielded %s", st.ID)
			continue
		}
		iterErr = err
		break
	}
	check("Stages", iterErr)
	// Nothing changed.
	wantRaw(t, s, a.Raw, a.ID)
	if ok, _ := s.Contains(t.Context(), b.ID); ok {
		t.Error("Put with cancelled context stored the stage")
	}
}

func testUnverifiable(t *testing.T, s store.StageStore, g *Gen, cfg Config) {
	a := g.Stage(WithSig(g.SigID()))
	put(t, s, a)
	// Copies of a with a forged id, with a forged signature_id, and a
	// stage of random ids (NewGen's).
	forgedID := bytes.Replace(a.Raw, []byte(a.ID), []byte(g.ID()), 1)
	forgedSig := bytes.Replace(a.Raw, []byte(a.SignatureID), []byte(g.SigID()), 1)
	var bad []*store.Stage
	for _, raw := range [][]byte{forgedID, forgedSig} {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		bad = append(bad, st)
	}
	bad = append(bad, NewGen(99).Stage(WithName(a.Name)))
	for i, st := range bad {
		if cfg.PutVerifies && store.Verify(st).OK() {
			t.Fatalf("bad stage %d passes store.Verify: %s", i, st.Raw)
		}
		if !cfg.PutVerifies {
			// MemoryStore never verifies: it judges a stage by its id alone.
			if st.ID == a.ID {
				if _, err := s.Put(t.Context(), st); !errors.Is(err, store.ErrAlreadyExists) {
					t.Errorf("Put of bad stage %d with a held id: err = %v, want ErrAlreadyExists", i, err)
				}
				continue
			}
			put(t, s, st)
			wantRaw(t, s, st.Raw, st.ID)
			continue
		}
		before := list(t, s, store.Filter{})
		if _, err := s.Put(t.Context(), st); !errors.Is(err, store.ErrVerification) {
			t.Errorf("Put of bad stage %d: err = %v, want ErrVerification", i, err)
		}
		if _, err := s.Upsert(t.Context(), st); !errors.Is(err, store.ErrVerification) {
			t.Errorf("Upsert of bad stage %d: err = %v, want ErrVerification", i, err)
		}
		if after := list(t, s, store.Filter{}); !slices.Equal(after, before) {
			t.Errorf("refusing bad stage %d changed the store: %v, was %v", i, after, before)
		}
		wantRaw(t, s, a.Raw, a.ID)
	}
}

// CheckStages puts stages (typically real ones, such as the stdlib
// fixture) into s, which must not hold any of them yet, and checks that
// every one comes back byte-exact by Get, List and FindByName, that
// GetBySignature finds each Active one, and that Stats counts them all.
// The stages should have distinct signature ids among the Active ones, or
// the invariant would deprecate some.
func CheckStages(t *testing.T, s store.StageStore, stages []*store.Stage) {
	t.Helper()
	ctx := t.Context()
	var want store.Stats
	for _, st := range stages {
		put(t, s, st)
		want.Add(st)
	}
	all, err := s.List(ctx, store.Filter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	byID := map[store.StageID]*store.Stage{}
	for _, st := range all {
		byID[st.ID] = st
	}
	for _, st := range stages {
		wantRaw(t, s, st.Raw, st.ID)
		if l, ok := byID[st.ID]; !ok || !bytes.Equal(l.Raw, st.Raw) {
			t.Errorf("List: stage %s missing or its Raw differs", st)
		}
		if st.HasName {
			named, err := s.FindByName(ctx, st.Name)
			if err != nil || !slices.Contains(ids(named), st.ID) {
				t.Errorf("FindByName(%q) = %v, %v; want it to include %s", st.Name, ids(named), err, st.ID)
			}
		}
		if st.SignatureID != "" && st.Lifecycle.Kind == store.LifecycleActive {
			got, err := s.GetBySignature(ctx, st.SignatureID)
			if err != nil || got.ID != st.ID || !bytes.Equal(got.Raw, st.Raw) {
				t.Errorf("GetBySignature(%s) = %v, %v; want %s", st.SignatureID, got, err, st)
			}
		}
	}
	got, err := s.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if got.Total < want.Total {
		t.Errorf("Stats.Total = %d, want at least %d", got.Total, want.Total)
	}
	if got.Total == want.Total && (!mapsEqual(got.ByLifecycle, want.ByLifecycle) || !mapsEqual(got.ByEffect, want.ByEffect)) {
		t.Errorf("Stats = %+v\nwant %+v", got, want)
	}
}
