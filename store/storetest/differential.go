package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

// Differential applies ops random operations, chosen reproducibly from
// seed, both to a fresh store.MemoryStore and to a fresh store made by
// newStore, and fails on the first divergence in any result: errors are
// compared by the store sentinel they wrap (errors.Is), stages by id and
// Raw bytes, lists as sets of ids (ActiveStagesWithSignature in order).
// The whole contents are compared every 64 operations and at the end.
//
// The operations draw ids, names and signature ids from small pools, so
// duplicates, replacements, invalid transitions, missing successors and
// the Active-per-signature invariant all come up often. If both stores
// implement store.PrefixScanner, StagesWithPrefix is compared too. A
// failure names the seed, the operation number and the operations that
// led to it; rerun with that seed to reproduce.
func Differential(t *testing.T, newStore func(t *testing.T) store.StageStore, seed int64, ops int) {
	t.Helper()
	d := &diff{
		t:    t,
		ref:  store.NewMemoryStore(),
		sut:  newStore(t),
		g:    NewGen(seed),
		rng:  rand.New(rand.NewPCG(uint64(seed), 0xd1ff)),
		seed: seed,
	}
	for range 12 {
		d.ids = append(d.ids, d.g.ID())
	}
	for range 4 {
		d.sigs = append(d.sigs, d.g.SigID())
	}
	d.names = []string{"alpha", "beta", "gamma", "delta"}
	for d.n = 1; d.n <= ops; d.n++ {
		d.step()
		if d.n%64 == 0 {
			d.compareAll()
		}
	}
	d.compareAll()
}

type diff struct {
	t        *testing.T
	ref, sut store.StageStore
	g        *Gen
	rng      *rand.Rand
	seed     int64
	n        int

	ids     []store.StageID
	sigs    []store.SignatureID
	names   []string
	history []string
}

func (d *diff) ctx() context.Context { return d.t.Context() }

func (d *diff) fail(format string, args ...any) {
	d.t.Helper()
	start := max(0, len(d.history)-20)
	d.t.Fatalf("storetest.Differential seed %d, op %d: %s\nlast operations:\n  %s",
		d.seed, d.n, fmt.Sprintf(format, args...), strings.Join(d.history[start:], "\n  "))
}

func (d *diff) log(format string, args ...any) {
	d.history = append(d.history, fmt.Sprintf("%d: ", d.n)+fmt.Sprintf(format, args...))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func (d *diff) id() store.StageID { return pick(d.rng, d.ids) }

func (d *diff) sig() store.SignatureID {
	if d.rng.IntN(5) == 0 {
		return ""
	}
	return pick(d.rng, d.sigs)
}

func (d *diff) lifecycle() store.Lifecycle {
	switch d.rng.IntN(5) {
	case 0:
		return store.Draft
	case 1, 2:
		return store.Active
	case 3:
		return store.Deprecated(d.id())
	}
	return store.Tombstone
}

var effectPool = []string{
	`{"effect":"Cost","cents":5}`, `{"effect":"Fallible"}`, `{"effect":"Llm","model":"x"}`,
	`{"effect":"Network"}`, `{"effect":"Pure"}`,
}

// stage makes a random stage with id id.
func (d *diff) stage(id store.StageID) *store.Stage {
	opts := []Option{WithID(id), WithSig(d.sig()), WithLifecycle(d.lifecycle())}
	if d.rng.IntN(6) == 0 {
		opts = append(opts, WithoutName())
	} else {
		opts = append(opts, WithName(pick(d.rng, d.names)))
	}
	var effs []string
	for _, e := range effectPool { // keeps noether's sort order
		if d.rng.IntN(3) == 0 {
			effs = append(effs, e)
		}
	}
	return d.g.Stage(append(opts, WithEffects(effs...))...)
}

func (d *diff) filter() (store.Filter, string) {
	switch d.rng.IntN(4) {
	case 0:
		return store.Filter{}, "all"
	case 1:
		l := d.lifecycle()
		return store.Filter{Lifecycle: &l}, l.String()
	case 2:
		k := pick(d.rng, store.AllLifecycleKinds())
		return store.Filter{Kind: k}, "kind " + k.Name()
	}
	l := store.Deprecated(d.id())
	return store.Filter{Lifecycle: &l, Kind: store.LifecycleDeprecated}, "kind+" + l.String()
}

func (d *diff) step() {
	d.t.Helper()
	ctx := d.ctx()
	switch op := d.rng.IntN(15); op {
	case 0, 1, 2: // Put, often of an id already present
		s := d.stage(d.id())
		d.log("Put %s %s sig=%.8s", short(s.ID), s.Lifecycle, s.SignatureID)
		id1, err1 := d.ref.Put(ctx, s)
		id2, err2 := d.sut.Put(ctx, s)
		d.sameErr("Put", err1, err2)
		if err1 == nil && id1 != id2 {
			d.fail("Put returned id %s, reference %s", id2, id1)
		}
	case 3, 4: // Upsert
		s := d.stage(d.id())
		d.log("Upsert %s %s sig=%.8s", short(s.ID), s.Lifecycle, s.SignatureID)
		id1, err1 := d.ref.Upsert(ctx, s)
		id2, err2 := d.sut.Upsert(ctx, s)
		d.sameErr("Upsert", err1, err2)
		if err1 == nil && id1 != id2 {
			d.fail("Upsert returned id %s, reference %s", id2, id1)
		}
	case 5:
		id := d.id()
		d.log("Remove %s", short(id))
		d.sameErr("Remove", d.ref.Remove(ctx, id), d.sut.Remove(ctx, id))
	case 6, 7, 8:
		id, l := d.id(), d.lifecycle()
		d.log("UpdateLifecycle %s → %s", short(id), l)
		d.sameErr("UpdateLifecycle", d.ref.UpdateLifecycle(ctx, id, l), d.sut.UpdateLifecycle(ctx, id, l))
	case 9:
		id := d.id()
		d.log("Get %s", short(id))
		s1, err1 := d.ref.Get(ctx, id)
		s2, err2 := d.sut.Get(ctx, id)
		d.sameErr("Get", err1, err2)
		d.sameStage("Get", s1, s2)
		c1, err1 := d.ref.Contains(ctx, id)
		c2, err2 := d.sut.Contains(ctx, id)
		d.sameErr("Contains", err1, err2)
		if c1 != c2 {
			d.fail("Contains(%s) = %v, reference %v", id, c2, c1)
		}
	case 10:
		f, desc := d.filter()
		d.log("List/Stages %s", desc)
		l1, err1 := d.ref.List(ctx, f)
		l2, err2 := d.sut.List(ctx, f)
		d.sameErr("List", err1, err2)
		d.sameSet("List "+desc, l1, l2)
		d.sameSet("Stages "+desc, l1, d.collect(d.sut.Stages(ctx, f)))
	case 11:
		d.log("Stats")
		d.sameStats()
	case 12:
		name := pick(d.rng, d.names)
		d.log("FindByName %s", name)
		l1, err1 := d.ref.FindByName(ctx, name)
		l2, err2 := d.sut.FindByName(ctx, name)
		d.sameErr("FindByName", err1, err2)
		d.sameSet("FindByName "+name, l1, l2)
	case 13:
		sig := d.sig()
		d.log("GetBySignature/ActiveStagesWithSignature %.8s", sig)
		s1, err1 := d.ref.GetBySignature(ctx, sig)
		s2, err2 := d.sut.GetBySignature(ctx, sig)
		d.sameErr("GetBySignature", err1, err2)
		d.sameStage("GetBySignature", s1, s2)
		l1, err1 := d.ref.ActiveStagesWithSignature(ctx, sig)
		l2, err2 := d.sut.ActiveStagesWithSignature(ctx, sig)
		d.sameErr("ActiveStagesWithSignature", err1, err2)
		if !slices.Equal(ids(l1), ids(l2)) {
			d.fail("ActiveStagesWithSignature(%s) = %v, reference %v", sig, ids(l2), ids(l1))
		}
		d.sameSet("ActiveStagesWithSignature", l1, l2)
	case 14:
		ps1, ok1 := d.ref.(store.PrefixScanner)
		ps2, ok2 := d.sut.(store.PrefixScanner)
		if !ok1 || !ok2 {
			return
		}
		prefix := string(d.id()[:1+d.rng.IntN(2)])
		d.log("StagesWithPrefix %s", prefix)
		d.sameSet("StagesWithPrefix "+prefix, d.collect(ps1.StagesWithPrefix(ctx, prefix)), d.collect(ps2.StagesWithPrefix(ctx, prefix)))
	}
}

func short(id store.StageID) string {
	if len(id) > 8 {
		return string(id[:8])
	}
	return string(id)
}

func (d *diff) collect(seq func(func(*store.Stage, error) bool)) []*store.Stage {
	d.t.Helper()
	var out []*store.Stage
	for s, err := range seq {
		if err != nil {
			d.fail("iteration error: %v", err)
		}
		out = append(out, s)
	}
	return out
}

var sentinels = []error{
	store.ErrNotFound, store.ErrAlreadyExists, store.ErrInvalidTransition,
	store.ErrInvalidSuccessor, store.ErrAmbiguous, store.ErrMalformed,
}

// errClass names the sentinel err wraps: "nil", a sentinel's text, or
// "unclassified: <err>".
func errClass(err error) string {
	if err == nil {
		return "nil"
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "unclassified: " + err.Error()
}

func (d *diff) sameErr(op string, ref, got error) {
	d.t.Helper()
	if c1, c2 := errClass(ref), errClass(got); c1 != c2 {
		d.fail("%s: error %v (%s), reference %v (%s)", op, got, c2, ref, c1)
	}
}

func (d *diff) sameStage(op string, ref, got *store.Stage) {
	d.t.Helper()
	switch {
	case ref == nil && got == nil:
	case ref == nil || got == nil:
		d.fail("%s returned %v, reference %v", op, got, ref)
	case ref.ID != got.ID || !bytes.Equal(ref.Raw, got.Raw):
		d.fail("%s returned %s:\n  %s\nreference %s:\n  %s", op, got.ID, got.Raw, ref.ID, ref.Raw)
	}
}

func (d *diff) sameSet(op string, ref, got []*store.Stage) {
	d.t.Helper()
	byID := func(ss []*store.Stage) map[store.StageID]*store.Stage {
		m := make(map[store.StageID]*store.Stage, len(ss))
		for _, s := range ss {
			if _, dup := m[s.ID]; dup {
				d.fail("%s: stage %s listed twice", op, s.ID)
			}
			m[s.ID] = s
		}
		return m
	}
	m1, m2 := byID(ref), byID(got)
	if len(m1) != len(m2) {
		d.fail("%s: %d stages %v, reference %d %v", op, len(m2), sortedIDs(got), len(m1), sortedIDs(ref))
	}
	for _, id := range slices.Sorted(maps.Keys(m1)) {
		d.sameStage(op, m1[id], m2[id])
	}
}

func (d *diff) sameStats() {
	d.t.Helper()
	s1, err1 := d.ref.Stats(d.ctx())
	s2, err2 := d.sut.Stats(d.ctx())
	d.sameErr("Stats", err1, err2)
	if s1.Total != s2.Total || !mapsEqual(s1.ByLifecycle, s2.ByLifecycle) || !mapsEqual(s1.ByEffect, s2.ByEffect) {
		d.fail("Stats = %+v, reference %+v", s2, s1)
	}
}

// compareAll checks the two stores hold the same stages, byte for byte.
func (d *diff) compareAll() {
	d.t.Helper()
	l1, err1 := d.ref.List(d.ctx(), store.Filter{})
	l2, err2 := d.sut.List(d.ctx(), store.Filter{})
	d.sameErr("List (full comparison)", err1, err2)
	d.sameSet("full contents", l1, l2)
	d.sameStats()
}
