package mirror

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/noether-mirror/mirror/store"
)

// mpReader is a minimal, allocation-free MessagePack reader for the record
// payloads this package writes (with github.com/vmihailenco/msgpack/v5).
// It exists for two reasons: the read path must be fast (a full reflective
// decode costs more than the whole GetRaw budget), and every length read
// from a hostile file is checked against the bytes actually left before
// anything is allocated, so a forged header can never cause a large
// allocation or a panic.
type mpReader struct {
	b   []byte
	off int
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

var errTruncated = errors.New("msgpack: truncated")

func (r *mpReader) left() int { return len(r.b) - r.off }

func (r *mpReader) next() (byte, error) {
	if r.off >= len(r.b) {
		return 0, errTruncated
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *mpReader) take(n int) ([]byte, error) {
	if n < 0 || n > r.left() {
		return nil, errTruncated
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p, nil
}

// uintN reads an n-byte big-endian unsigned integer.
func (r *mpReader) uintN(n int) (uint64, error) {
	p, err := r.take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// length reads a length of n bytes and checks that at least min*length
// bytes remain (every element takes at least min bytes).
func (r *mpReader) length(n, min int) (int, error) {
	v, err := r.uintN(n)
	if err != nil {
		return 0, err
	}
	return r.checkLen(v, min)
}

func (r *mpReader) checkLen(v uint64, min int) (int, error) {
	if v > uint64(r.left()) || (min > 0 && v*uint64(min) > uint64(r.left())) {
		return 0, fmt.Errorf("msgpack: length %d exceeds the %d bytes left", v, r.left())
	}
	return int(v), nil
}

func (r *mpReader) mapLen() (int, error) {
	c, err := r.next()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x80 && c <= 0x8f:
		return r.checkLen(uint64(c&0x0f), 2)
	case c == 0xde:
		return r.length(2, 2)
	case c == 0xdf:
		return r.length(4, 2)
	case c == 0xc0:
		return 0, nil
	}
	return 0, fmt.Errorf("msgpack: want a map, got 0x%02x", c)
}

func (r *mpReader) arrayLen() (int, error) {
	c, err := r.next()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x90 && c <= 0x9f:
		return r.checkLen(uint64(c&0x0f), 1)
	case c == 0xdc:
		return r.length(2, 1)
	case c == 0xdd:
		return r.length(4, 1)
	case c == 0xc0:
		return 0, nil
	}
	return 0, fmt.Errorf("msgpack: want an array, got 0x%02x", c)
}

// bytes reads a str or bin value (or nil) and returns a sub-slice of the
// input: callers copy what they keep.
func (r *mpReader) bytes() ([]byte, error) {
	c, err := r.next()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.length(1, 0)
	case c == 0xda || c == 0xc5:
		n, err = r.length(2, 0)
	case c == 0xdb || c == 0xc6:
		n, err = r.length(4, 0)
	case c == 0xc0:
		return nil, nil
	default:
		return nil, fmt.Errorf("msgpack: want a string, got 0x%02x", c)
	}
	if err != nil {
		return nil, err
	}
	return r.take(n)
}

func (r *mpReader) str() (string, error) {
	p, err := r.bytes()
	if err != nil || len(p) == 0 {
		return "", err
	}
	if r.own {
		return unsafe.String(&p[0], len(p)), nil
	}
	return string(p), nil
}

func (r *mpReader) strs() ([]string, error) {
	n, err := r.arrayLen()
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

func (r *mpReader) int() (int64, error) {
	c, err := r.next()
	if err != nil {
		return 0, err
	}
	switch {
	case c <= 0x7f:
		return int64(c), nil
	case c >= 0xe0:
		return int64(int8(c)), nil
	case c == 0xc0:
		return 0, nil
	case c >= 0xcc && c <= 0xcf:
		v, err := r.uintN(1 << (c - 0xcc))
		if err != nil {
			return 0, err
		}
		if v > 1<<63-1 {
			return 0, fmt.Errorf("msgpack: integer %d overflows int64", v)
		}
		return int64(v), nil
	case c >= 0xd0 && c <= 0xd3:
		n := 1 << (c - 0xd0)
		v, err := r.uintN(n)
		if err != nil {
			return 0, err
		}
		shift := 64 - 8*n
		return int64(v<<shift) >> shift, nil
	}
	return 0, fmt.Errorf("msgpack: want an integer, got 0x%02x", c)
}

func (r *mpReader) bool() (bool, error) {
	c, err := r.next()
	if err != nil {
		return false, err
	}
	switch c {
	case 0xc2, 0xc0:
		return false, nil
	case 0xc3:
		return true, nil
	}
	return false, fmt.Errorf("msgpack: want a bool, got 0x%02x", c)
}

// maxSkipDepth bounds the nesting skip follows, so a forged payload cannot
// exhaust the stack.
const maxSkipDepth = 32

// skip passes over one value of any type (a field from a newer writer).
func (r *mpReader) skip(depth int) error {
	if depth > maxSkipDepth {
		return errors.New("msgpack: nested too deep")
	}
	if r.off >= len(r.b) {
		return errTruncated
	}
	c := r.b[r.off]
	var fixed int // bytes after the type byte, for fixed-size types
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		fixed = 0
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb, c == 0xc4, c == 0xc5, c == 0xc6:
		_, err := r.bytes()
		return err
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		n, err := r.mapLen()
		if err != nil {
			return err
		}
		for range 2 * n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		n, err := r.arrayLen()
		if err != nil {
			return err
		}
		for range n {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case c == 0xcc || c == 0xd0 || c == 0xd4:
		fixed = 1 + boolInt(c == 0xd4)
	case c == 0xcd || c == 0xd1 || c == 0xd5:
		fixed = 2 + boolInt(c == 0xd5)
	case c == 0xce || c == 0xd2 || c == 0xca:
		fixed = 4
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		fixed = 8
	case c == 0xd6:
		fixed = 5
	case c == 0xd7:
		fixed = 9
	case c == 0xd8:
		fixed = 17
	case c == 0xc7 || c == 0xc8 || c == 0xc9: // ext 8/16/32
		r.off++
		n, err := r.length(1<<(c-0xc7), 0)
		if err != nil {
			return err
		}
		_, err = r.take(n + 1)
		return err
	default:
		return fmt.Errorf("msgpack: unknown type 0x%02x", c)
	}
	r.off++
	_, err := r.take(fixed)
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// beUint64 encodes v as 8 big-endian bytes (position keys, meta values).
func beUint64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
