// Package mpack is the mirror's MessagePack codec: the bounded Reader
// behind its record and bundle decoders, and the Append functions
// (writer.go) behind their encoders.
//
// Files and bundles can be hostile, so every length a Reader reads from
// the input is checked against the bytes actually left before it is used
// or allocated, nesting is bounded, and nothing panics. A Reader returns
// sub-slices of its input: callers copy what they keep. A Reader is not
// safe for concurrent use.
//
// The writer produces the bytes github.com/vmihailenco/msgpack/v5 did
// when it encoded the mirror's formats, so files and bundles written
// before this package had a writer keep their checksums and digests.
// That library is now only a test oracle: differential tests and fuzz
// targets require identical bytes from both.
package mpack

import (
	"errors"
	"fmt"
)

// ErrTruncated means the input ended inside a value.
var ErrTruncated = errors.New("msgpack: truncated")

// Reader reads MessagePack values from a byte slice.
type Reader struct {
	b   []byte
	off int
}

// New returns a Reader over b.
func New(b []byte) Reader { return Reader{b: b} }

// NewAt returns a Reader over b starting at offset off.
func NewAt(b []byte, off int) Reader { return Reader{b: b, off: off} }

// Left is the number of unread bytes.
func (r *Reader) Left() int { return len(r.b) - r.off }

// Next reads one byte.
func (r *Reader) Next() (byte, error) {
	if r.off >= len(r.b) {
		return 0, ErrTruncated
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

// Take returns the next n bytes.
func (r *Reader) Take(n int) ([]byte, error) {
	if n < 0 || n > r.Left() {
		return nil, ErrTruncated
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p, nil
}

// UintN reads an n-byte big-endian unsigned integer.
func (r *Reader) UintN(n int) (uint64, error) {
	p, err := r.Take(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, nil
}

// Length reads a length of n bytes and checks that at least min*length
// bytes remain (every element takes at least min bytes).
func (r *Reader) Length(n, min int) (int, error) {
	v, err := r.UintN(n)
	if err != nil {
		return 0, err
	}
	return r.CheckLen(v, min)
}

// CheckLen checks that v elements of at least min bytes each fit in what is left.
func (r *Reader) CheckLen(v uint64, min int) (int, error) {
	if v > uint64(r.Left()) || (min > 0 && v*uint64(min) > uint64(r.Left())) {
		return 0, fmt.Errorf("msgpack: length %d exceeds the %d bytes left", v, r.Left())
	}
	return int(v), nil
}

// MapLen reads a map header (nil counts as empty).
func (r *Reader) MapLen() (int, error) {
	c, err := r.Next()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x80 && c <= 0x8f:
		return r.CheckLen(uint64(c&0x0f), 2)
	case c == 0xde:
		return r.Length(2, 2)
	case c == 0xdf:
		return r.Length(4, 2)
	case c == 0xc0:
		return 0, nil
	}
	return 0, fmt.Errorf("msgpack: want a map, got 0x%02x", c)
}

// ArrayLen reads an array header (nil counts as empty).
func (r *Reader) ArrayLen() (int, error) {
	c, err := r.Next()
	if err != nil {
		return 0, err
	}
	switch {
	case c >= 0x90 && c <= 0x9f:
		return r.CheckLen(uint64(c&0x0f), 1)
	case c == 0xdc:
		return r.Length(2, 1)
	case c == 0xdd:
		return r.Length(4, 1)
	case c == 0xc0:
		return 0, nil
	}
	return 0, fmt.Errorf("msgpack: want an array, got 0x%02x", c)
}

// Bytes reads a str or bin value (or nil) and returns a sub-slice of the
// input: callers copy what they keep.
func (r *Reader) Bytes() ([]byte, error) {
	c, err := r.Next()
	if err != nil {
		return nil, err
	}
	var n int
	switch {
	case c >= 0xa0 && c <= 0xbf:
		n = int(c & 0x1f)
	case c == 0xd9 || c == 0xc4:
		n, err = r.Length(1, 0)
	case c == 0xda || c == 0xc5:
		n, err = r.Length(2, 0)
	case c == 0xdb || c == 0xc6:
		n, err = r.Length(4, 0)
	case c == 0xc0:
		return nil, nil
	default:
		return nil, fmt.Errorf("msgpack: want a string, got 0x%02x", c)
	}
	if err != nil {
		return nil, err
	}
	return r.Take(n)
}

// Int reads an integer of any width (nil gives 0).
func (r *Reader) Int() (int64, error) {
	c, err := r.Next()
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
		v, err := r.UintN(1 << (c - 0xcc))
		if err != nil {
			return 0, err
		}
		if v > 1<<63-1 {
			return 0, fmt.Errorf("msgpack: integer %d overflows int64", v)
		}
		return int64(v), nil
	case c >= 0xd0 && c <= 0xd3:
		n := 1 << (c - 0xd0)
		v, err := r.UintN(n)
		if err != nil {
			return 0, err
		}
		shift := 64 - 8*n
		return int64(v<<shift) >> shift, nil
	}
	return 0, fmt.Errorf("msgpack: want an integer, got 0x%02x", c)
}

// Bool reads a bool (nil gives false).
func (r *Reader) Bool() (bool, error) {
	c, err := r.Next()
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

// maxSkipDepth bounds the nesting Skip follows, so a forged payload cannot
// exhaust the stack.
const maxSkipDepth = 32

// Skip passes over one value of any type (a field from a newer writer).
func (r *Reader) Skip(depth int) error {
	if depth > maxSkipDepth {
		return errors.New("msgpack: nested too deep")
	}
	if r.off >= len(r.b) {
		return ErrTruncated
	}
	c := r.b[r.off]
	var fixed int // bytes after the type byte, for fixed-size types
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		fixed = 0
	case c >= 0xa0 && c <= 0xbf, c == 0xd9, c == 0xda, c == 0xdb, c == 0xc4, c == 0xc5, c == 0xc6:
		_, err := r.Bytes()
		return err
	case c >= 0x80 && c <= 0x8f, c == 0xde, c == 0xdf:
		n, err := r.MapLen()
		if err != nil {
			return err
		}
		for range 2 * n {
			if err := r.Skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case c >= 0x90 && c <= 0x9f, c == 0xdc, c == 0xdd:
		n, err := r.ArrayLen()
		if err != nil {
			return err
		}
		for range n {
			if err := r.Skip(depth + 1); err != nil {
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
		n, err := r.Length(1<<(c-0xc7), 0)
		if err != nil {
			return err
		}
		_, err = r.Take(n + 1)
		return err
	default:
		return fmt.Errorf("msgpack: unknown type 0x%02x", c)
	}
	r.off++
	_, err := r.Take(fixed)
	return err
}

// Str reads a str value, refusing any other type.
func (r *Reader) Str() ([]byte, error) {
	if r.off < len(r.b) {
		if c := r.b[r.off]; !(c >= 0xa0 && c <= 0xbf || c == 0xd9 || c == 0xda || c == 0xdb) {
			return nil, fmt.Errorf("msgpack: want a string, got type byte 0x%02x", c)
		}
	}
	return r.Bytes()
}

// Bin reads a bin value, refusing any other type.
func (r *Reader) Bin() ([]byte, error) {
	if r.off < len(r.b) {
		if c := r.b[r.off]; c != 0xc4 && c != 0xc5 && c != 0xc6 {
			return nil, fmt.Errorf("msgpack: want binary data, got type byte 0x%02x", c)
		}
	}
	return r.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
