package mirror

import (
	"encoding/binary"
	"unsafe"

	"github.com/noether-mirror/mirror/mirror/internal/mpack"
	"github.com/noether-mirror/mirror/store"
)

// mpReader reads the record payloads this package writes (with mpack's
// Append functions, recordenc.go) with the bounded, allocation-free
// mpack.Reader: the read path must be fast (a full reflective decode costs
// more than the whole GetRaw budget), and every length read from a hostile
// file is checked before anything is allocated. It adds string handling
// that can alias private memory and share slabs across a batch.
type mpReader struct {
	mpack.Reader
	// own means b is private memory that outlives the reader: strings
	// are then views into it rather than copies.
	own bool
	// sl, if set, supplies slices so a batch of records shares a few
	// allocations.
	sl *slab
}

// slab hands out sub-slices of larger allocations (capacity-limited, so
// an append by the holder never clobbers a neighbour).
type slab struct {
	strs   []string
	checks []store.Check
}

func newSlab(records int) *slab {
	return &slab{strs: make([]string, 0, 4*records), checks: make([]store.Check, 0, 5*records)}
}

func (s *slab) strings(n int) []string {
	if s == nil || len(s.strs)+n > cap(s.strs) {
		return make([]string, n)
	}
	i := len(s.strs)
	s.strs = s.strs[:i+n]
	return s.strs[i : i+n : i+n]
}

func (s *slab) checkSlice(n int) []store.Check {
	if s == nil || len(s.checks)+n > cap(s.checks) {
		return make([]store.Check, n)
	}
	i := len(s.checks)
	s.checks = s.checks[:i+n]
	return s.checks[i : i+n : i+n]
}

func (r *mpReader) str() (string, error) {
	p, err := r.Bytes()
	if err != nil || len(p) == 0 {
		return "", err
	}
	if r.own {
		return unsafe.String(&p[0], len(p)), nil
	}
	return string(p), nil
}

func (r *mpReader) strs() ([]string, error) {
	n, err := r.ArrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	out := r.sl.strings(n)
	for i := range out {
		if out[i], err = r.str(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// beUint64 encodes v as 8 big-endian bytes (position keys, meta values).
func beUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
