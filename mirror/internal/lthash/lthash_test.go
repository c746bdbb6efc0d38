package lthash

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

func elems(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 1+r.IntN(200))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		out[i] = b
	}
	return out
}

// The hash of a set does not depend on the order elements were added, and
// removing what was added gives the empty set back.
func TestOrderAndRemoval(t *testing.T) {
	h := NewHasher()
	es := elems(200, 1)
	var fwd, rev State
	for _, e := range es {
		h.Add(&fwd, e)
	}
	for i := len(es) - 1; i >= 0; i-- {
		h.Add(&rev, es[i])
	}
	if !fwd.Equal(&rev) || fwd.Sum() != rev.Sum() {
		t.Fatal("the hash depends on insertion order")
	}
	for _, e := range es[:100] {
		h.Remove(&fwd, e)
	}
	var half State
	for _, e := range es[100:] {
		h.Add(&half, e)
	}
	if !fwd.Equal(&half) {
		t.Fatal("removing elements does not give the hash of the rest")
	}
	for _, e := range es[100:] {
		h.Remove(&fwd, e)
	}
	if !fwd.Equal(&State{}) {
		t.Fatal("removing everything does not give the empty hash")
	}
}

func TestDistinguishes(t *testing.T) {
	h := NewHasher()
	cases := []struct {
		name string
		a, b [][][]byte
	}{
		{"different element", [][][]byte{{[]byte("a")}}, [][][]byte{{[]byte("b")}}},
		{"part boundaries", [][][]byte{{[]byte("ab"), []byte("c")}}, [][][]byte{{[]byte("a"), []byte("bc")}}},
		{"multiplicity", [][][]byte{{[]byte("a")}}, [][][]byte{{[]byte("a")}, {[]byte("a")}}},
		{"empty vs one", nil, [][][]byte{{[]byte{}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var a, b State
			for _, e := range c.a {
				h.Add(&a, e...)
			}
			for _, e := range c.b {
				h.Add(&b, e...)
			}
			if a.Equal(&b) {
				t.Fatal("different multisets hash alike")
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	h := NewHasher()
	var s State
	for _, e := range elems(10, 2) {
		h.Add(&s, e)
	}
	b := s.Marshal()
	var u State
	if !u.Unmarshal(b) || !u.Equal(&s) {
		t.Fatal("round trip changed the state")
	}
	if u.Unmarshal(b[:10]) {
		t.Fatal("a short encoding was accepted")
	}
	if !bytes.Equal(u.Marshal(), b) {
		t.Fatal("a refused Unmarshal changed the state")
	}
}

func TestCombine(t *testing.T) {
	h := NewHasher()
	es := elems(50, 3)
	var all, a, b State
	for i, e := range es {
		h.Add(&all, e)
		if i%2 == 0 {
			h.Add(&a, e)
		} else {
			h.Add(&b, e)
		}
	}
	a.Combine(&b)
	if !a.Equal(&all) {
		t.Fatal("Combine is not the union")
	}
}

// A fixed vector, so that the digest (stored in every mirror) cannot
// change by accident.
func TestGolden(t *testing.T) {
	h := NewHasher()
	var s State
	h.Add(&s, []byte("s"), []byte("id"), []byte(`{"name":"x"}`))
	got := fmt.Sprintf("%x", s.Sum())
	const want = "51e2b5be8de64702906d3724152ed5f48e993373f749179743f65e3a5d68b0b7"
	if got != want {
		t.Fatalf("digest of the fixed vector changed: %s", got)
	}
}

func BenchmarkAdd(b *testing.B) {
	h := NewHasher()
	raw := bytes.Repeat([]byte("x"), 5300)
	var s State
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		h.Add(&s, []byte("s"), []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"), raw)
	}
}

func BenchmarkAddSmall(b *testing.B) {
	h := NewHasher()
	var s State
	for b.Loop() {
		h.Add(&s, []byte("s"))
	}
}
