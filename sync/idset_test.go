package sync

import (
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

func TestIDSet(t *testing.T) {
	for _, scratch := range []bool{false, true} {
		t.Run(map[bool]string{false: "heap", true: "scratch"}[scratch], func(t *testing.T) { testIDSet(t, scratch) })
	}
}

func testIDSet(t *testing.T, scratch bool) {
	k := func(b byte, anon bool) mirror.Key {
		var d [32]byte
		d[0] = b
		return mirror.NewKey(d, anon)
	}
	raw := []keyKind{
		{k(3, false), store.LifecycleActive},
		{k(1, false), store.LifecycleDraft},
		{k(3, false), store.LifecycleDeprecated}, // repeats 3: the later wins
		{k(1, true), store.LifecycleActive},      // anonymous: another key
		{k(3, false), store.LifecycleTombstone},  // and again
	}
	var s idSet
	var dups int
	if scratch {
		sc, err := mirror.NewScratch[keyKind](t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Append(raw...); err != nil {
			t.Fatal(err)
		}
		s, dups = scratchIDSet(sc)
		defer s.close()
	} else {
		s, dups = newIDSet(raw)
	}
	if dups != 2 || s.len() != 3 {
		t.Fatalf("newIDSet: %d keys, %d repeats; want 3 and 2", s.len(), dups)
	}
	for _, c := range []struct {
		k    mirror.Key
		kind store.LifecycleKind
		ok   bool
	}{
		{k(1, false), store.LifecycleDraft, true},
		{k(1, true), store.LifecycleActive, true},
		{k(3, false), store.LifecycleTombstone, true},
		{k(2, false), 0, false},
		{k(3, true), 0, false},
	} {
		if kind, ok := s.get(c.k); kind != c.kind || ok != c.ok {
			t.Errorf("get(%v) = %v, %v; want %v, %v", c.k, kind, ok, c.kind, c.ok)
		}
	}
	for _, kk := range []mirror.Key{k(2, false), k(1, false)} {
		if err := s.set(kk, store.LifecycleActive); err != nil {
			t.Fatal(err)
		}
	}
	s.delete(k(3, false))
	s.delete(k(9, false))
	want := []keyKind{{k(1, false), store.LifecycleActive}, {k(1, true), store.LifecycleActive}, {k(2, false), store.LifecycleActive}}
	if scratch && s.sc.Len() != len(s.s) {
		t.Fatalf("the scratch array holds %d keys, the set %d", s.sc.Len(), len(s.s))
	}
	if len(s.s) != len(want) {
		t.Fatalf("after edits: %v", s.s)
	}
	for i := range want {
		if s.s[i] != want[i] {
			t.Fatalf("after edits: %v, want %v", s.s, want)
		}
	}
}
