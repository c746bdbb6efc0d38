package scratch

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

type scratchElem struct {
	K [32]byte
	N uint64
}

func TestScratch(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		s, err := New[scratchElem](t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if !mapped {
			s.Close()
			s = &Array[scratchElem]{} // the heap fallback
		}
		const n = 100_000 // 4 MB: several growths
		var first *scratchElem
		for i := range n {
			e := scratchElem{N: uint64(i)}
			e.K[0] = byte(i)
			if err := s.Append(e); err != nil {
				t.Fatal(err)
			}
			if i == 0 && mapped {
				first = &s.All()[0]
			}
		}
		all := s.All()
		if s.Len() != n || len(all) != n {
			t.Fatalf("mapped=%v: %d elements, All has %d", mapped, s.Len(), len(all))
		}
		if mapped && first != &all[0] {
			t.Fatal("elements moved while the array grew")
		}
		for i, e := range all {
			if e.N != uint64(i) || e.K[0] != byte(i) {
				t.Fatalf("mapped=%v: element %d = %+v", mapped, i, e)
			}
		}
		all[5].N = 99
		if s.All()[5].N != 99 {
			t.Fatal("a write through All was lost")
		}
		s.Truncate(10)
		if s.Len() != 10 || len(s.All()) != 10 {
			t.Fatalf("after Truncate(10): %d", s.Len())
		}
		if err := s.Grow(5); err != nil {
			t.Fatal(err)
		}
		for i, e := range s.All()[10:] {
			if e != (scratchElem{}) {
				t.Fatalf("mapped=%v: element %d after Grow = %+v, want zero", mapped, 10+i, e)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScratchOffHeap checks the point of Scratch: 32 MB appended leave
// the Go heap where it was.
func TestScratchOffHeap(t *testing.T) {
	if !scratchMmap {
		t.Skip("no mmap here")
	}
	s, err := New[scratchElem](t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	batch := make([]scratchElem, 1000)
	for range 800 { // 800k elements, 32 MB
		if err := s.Append(batch...); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 {
		t.Fatalf("the heap grew by %d bytes for 32 MB of scratch", grew)
	}
}

func TestScratchRefusesPointers(t *testing.T) {
	if _, err := New[struct{ S string }](t.TempDir()); err == nil {
		t.Fatal("a Scratch of strings was accepted")
	}
	if _, err := New[[]byte](t.TempDir()); err == nil {
		t.Fatal("a Scratch of slices was accepted")
	}
	s, err := New[[4]uint64](t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestWriteZeros checks the growth used where fallocate is unsupported.
func TestWriteZeros(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "z"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := writeZeros(f, 3, 3+(1<<20)+5); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3+(1<<20)+5 || string(b[:3]) != "abc" || bytes.ContainsFunc(b[3:], func(r rune) bool { return r != 0 }) {
		t.Fatalf("file of %d bytes, starting %q", len(b), b[:min(len(b), 8)])
	}
}
