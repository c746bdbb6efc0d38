package mirror

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/noether-mirror/mirror/store"
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
