package mirror

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

func TestKeyRoundTrip(t *testing.T) {
	id := store.StageID(strings.Repeat("0123456789abcdef", 4))
	k, ok := KeyOfID(id)
	if !ok || k.Anonymous() || k.ID() != id || k.String() != string(id) {
		t.Fatalf("KeyOfID(%s) = %v (%v), ID %q, String %q", id, k, ok, k.ID(), k.String())
	}
	if back, ok := ParseKey(k.String()); !ok || back != k {
		t.Errorf("ParseKey(%q) = %v, %v; want %v", k.String(), back, ok, k)
	}
	if NewKey(k.Digest(), false) != k {
		t.Errorf("NewKey(Digest) differs from %v", k)
	}
	for _, bad := range []string{"", "x", strings.ToUpper(string(id)), string(id[:63]), "y" + string(id), "x" + string(id) + "0"} {
		if _, ok := KeyOfID(store.StageID(bad)); ok {
			t.Errorf("KeyOfID(%q) accepted", bad)
		}
		if _, ok := ParseKey(bad); ok {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestKeyAnonymous(t *testing.T) {
	raw := []byte(`{"id": "not-a-valid-id"}`)
	e := Entry{raw: raw}
	k := e.Key()
	sum := sha256.Sum256(raw)
	want := "x" + hex.EncodeToString(sum[:])
	if !k.Anonymous() || k.ID() != "" || k.String() != want || e.QuarantineKey() != want {
		t.Fatalf("Key %v: anonymous %v, ID %q, String %q, QuarantineKey %q; want %q",
			k, k.Anonymous(), k.ID(), k.String(), e.QuarantineKey(), want)
	}
	if back, ok := ParseKey(want); !ok || back != k || back != NewKey(sum, true) {
		t.Errorf("ParseKey(%q) = %v, %v", want, back, ok)
	}
	// The same digest as a stage id is another key.
	if id, _ := KeyOfID(store.StageID(hex.EncodeToString(sum[:]))); id == k || id.Compare(k) >= 0 {
		t.Errorf("the id %v and the anonymous key %v: equal or misordered", id, k)
	}
}

func TestKeyOrder(t *testing.T) {
	var keys []Key
	for _, b := range []byte{0, 1, 0x7f, 0x80, 0xff} {
		for _, anon := range []bool{true, false} {
			var d [32]byte
			d[0], d[31] = b, b^0x55
			keys = append(keys, NewKey(d, anon))
		}
	}
	for _, a := range keys {
		for _, b := range keys {
			c, r := a.Compare(b), b.Compare(a)
			if c != -r || (c == 0) != (a == b) {
				t.Errorf("Compare(%v, %v) = %d, reversed %d", a, b, c, r)
			}
			for _, x := range keys {
				if a.Compare(b) < 0 && b.Compare(x) < 0 && a.Compare(x) >= 0 {
					t.Errorf("not transitive: %v < %v < %v", a, b, x)
				}
			}
		}
	}
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, Key.Compare)
	for i := 1; i < len(sorted); i++ {
		p, k := sorted[i-1], sorted[i]
		if p.Digest() == k.Digest() && (p.Anonymous() || !k.Anonymous()) {
			t.Errorf("an anonymous key sorts before the id of its digest: %v, %v", p, k)
		}
		if p.Digest() != k.Digest() && p.String()[len(p.String())-64:] > k.String()[len(k.String())-64:] {
			t.Errorf("%v sorts before %v", p, k)
		}
	}
}

func TestKeyScratch(t *testing.T) {
	if n := unsafe.Sizeof(Key{}); n != 33 {
		t.Errorf("Key is %d bytes, want 33", n)
	}
	sc, err := NewScratch[Key](t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	k, _ := KeyOfID(store.StageID(strings.Repeat("ab", 32)))
	a := NewKey(k.Digest(), true)
	if err := sc.Append(k, a); err != nil {
		t.Fatal(err)
	}
	if got := sc.All(); len(got) != 2 || got[0] != k || got[1] != a {
		t.Errorf("scratch holds %v", got)
	}
}

// TestWriterPruneByKey: Prune asks about stages and quarantine entries by
// Key, anonymous ones included, and removes what keep refuses.
func TestWriterPruneByKey(t *testing.T) {
	m := layeredMirror(t, Options{})
	g, bad := storetest.NewGen(3), storetest.NewGen(4)
	ctx := t.Context()
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	a, b := g.Stage(), g.Stage()
	anon := w.AdmitStage(bad.Stage(storetest.WithID("not-a-valid-id")))
	if err := w.PutBatch([]Entry{w.AdmitStage(a), w.AdmitStage(b), anon}, nil); err != nil {
		t.Fatal(err)
	}
	ka, _ := KeyOfID(a.ID)
	kb, _ := KeyOfID(b.ID)
	var asked []Key
	n, err := w.Prune(ctx, func(k Key) bool { asked = append(asked, k); return k != kb })
	if err != nil || n != 1 {
		t.Fatalf("Prune: %d, %v; want 1", n, err)
	}
	slices.SortFunc(asked, Key.Compare)
	want := []Key{ka, kb, anon.Key()}
	slices.SortFunc(want, Key.Compare)
	if !slices.Equal(asked, want) {
		t.Errorf("Prune asked about %v, want %v", asked, want)
	}
	if _, ok, _ := w.Staged(b.ID); ok {
		t.Error("b is still staged")
	}
	if _, ok, _ := w.Staged(a.ID); !ok {
		t.Error("a went")
	}
	if n, err := w.Prune(ctx, nil); err != nil || n != 2 {
		t.Errorf("Prune(nil): %d, %v; want 2", n, err)
	}
}

// TestWriterFail: a failed run keeps its staging file for the next one,
// unless the staging failed itself (ErrCorrupt) or the disk is full.
func TestWriterFail(t *testing.T) {
	for _, c := range []struct {
		cause error
		keep  bool
	}{
		{nil, true},
		{errors.New("registry unreachable"), true},
		{fmt.Errorf("staging: %w", ErrCorrupt), false},
		{&NoSpaceError{Err: errors.New("ENOSPC")}, false},
	} {
		m := layeredMirror(t, Options{})
		w, err := m.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.PutBatch([]Entry{w.AdmitStage(storetest.NewGen(1).Stage())}, []byte("p")); err != nil {
			t.Fatal(err)
		}
		if err := w.Fail(c.cause); err != nil {
			t.Fatalf("Fail(%v): %v", c.cause, err)
		}
		_, err = os.Stat(m.nextPath())
		if kept := err == nil; kept != c.keep {
			t.Errorf("Fail(%v): staging kept %v, want %v", c.cause, kept, c.keep)
		}
		if err := w.Fail(c.cause); err != nil {
			t.Errorf("a second Fail: %v", err)
		}
	}
}
