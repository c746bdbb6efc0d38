package mirror

import (
	"math/rand/v2"
	"testing"
)

// TestLogTable runs random sets, deletes and gets against a Go map,
// through many growths and tombstone clear-outs.
func TestLogTable(t *testing.T) {
	tab, err := newLogTable(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer tab.close()
	if tab.s != nil {
		t.Fatalf("a new table of %d slots is in a scratch file, want the heap", len(tab.slots))
	}
	ref := map[[32]byte]uint64{}
	r := rand.New(rand.NewPCG(5, 5))
	var keys [][32]byte
	for i := range 60_000 {
		switch op := r.IntN(10); {
		case op < 6 || len(keys) == 0:
			var k [32]byte
			if len(keys) > 0 && op == 0 {
				k = keys[r.IntN(len(keys))] // overwrite
			} else {
				k[0], k[1], k[2], k[3] = byte(i), byte(i>>8), byte(i>>16), byte(r.Uint32())
				keys = append(keys, k)
			}
			if err := tab.set(k, uint64(i)); err != nil {
				t.Fatal(err)
			}
			ref[k] = uint64(i)
		case op < 8:
			k := keys[r.IntN(len(keys))]
			tab.delete(k)
			delete(ref, k)
		default:
			k := keys[r.IntN(len(keys))]
			got, ok := tab.get(k)
			want, wok := ref[k]
			if ok != wok || got != want {
				t.Fatalf("op %d: get = %d, %v; want %d, %v", i, got, ok, want, wok)
			}
		}
	}
	if tab.live != len(ref) {
		t.Fatalf("%d live entries, want %d", tab.live, len(ref))
	}
	if tab.s == nil {
		t.Fatalf("a table of %d slots is on the heap, want a scratch file", len(tab.slots))
	}
	n := 0
	tab.all(func(k *[32]byte, seq uint64) {
		n++
		if ref[*k] != seq {
			t.Fatalf("all: %x = %d, want %d", k[:4], seq, ref[*k])
		}
	})
	if n != len(ref) {
		t.Fatalf("all visited %d entries, want %d", n, len(ref))
	}
	// reserve leaves room: that many sets never grow the table.
	if err := tab.reserve(5000); err != nil {
		t.Fatal(err)
	}
	slots := len(tab.slots)
	for i := range 5000 {
		var k [32]byte
		k[31], k[30] = byte(i), byte(i>>8)
		k[29] = 0xee
		if err := tab.set(k, 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(tab.slots) != slots {
		t.Fatalf("the table grew from %d to %d slots after reserve", slots, len(tab.slots))
	}
}
