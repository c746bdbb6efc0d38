package mpack

import (
	"encoding/binary"
	"math"
)

// The Append functions write MessagePack values onto a byte slice and
// return the extended slice, as strconv.AppendInt does; they allocate
// only when b must grow. Each writes exactly the bytes
// github.com/vmihailenco/msgpack/v5 (v5.3.6, the encoder the mirror's
// files and bundles were first written with) writes for the same value
// with default options: the shortest length prefix, and for integers the
// form that library gives the Go type named. Lengths are at most
// math.MaxUint32 (a longer one is written modulo 2^32, as the library
// does); callers bound their values well below that.

// AppendNil appends nil.
func AppendNil(b []byte) []byte { return append(b, 0xc0) }

// AppendBool appends true or false.
func AppendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xc3)
	}
	return append(b, 0xc2)
}

// AppendMapLen appends the header of a map of n key/value pairs: the
// caller then appends 2n values.
func AppendMapLen(b []byte, n int) []byte { return appendLen(b, n, 0x80, 16, 0xde, 0xdf) }

// AppendArrayLen appends the header of an array of n values: the caller
// then appends them.
func AppendArrayLen(b []byte, n int) []byte { return appendLen(b, n, 0x90, 16, 0xdc, 0xdd) }

// appendLen appends a length: fix|n below fixMax, else code16 or code32
// followed by n big-endian.
func appendLen(b []byte, n int, fix byte, fixMax int, code16, code32 byte) []byte {
	switch {
	case n < fixMax:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, code16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, code32), uint32(n))
}

// AppendString appends s as a str value (fixstr, str8, str16 or str32).
func AppendString(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	default:
		b = appendLen(b, n, 0, 0, 0xda, 0xdb)
	}
	return append(b, s...)
}

// AppendBytes appends v as a bin value (bin8, bin16 or bin32); a nil v is
// written as nil, an empty non-nil one as an empty bin.
func AppendBytes(b, v []byte) []byte {
	if v == nil {
		return AppendNil(b)
	}
	if n := len(v); n < 256 {
		b = append(b, 0xc4, byte(n))
	} else {
		b = appendLen(b, n, 0, 0, 0xc5, 0xc6)
	}
	return append(b, v...)
}

// AppendStrings appends ss as an array of str values; a nil ss is written
// as nil (the library's encoding of a nil []string), an empty non-nil one
// as an empty array.
func AppendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return AppendNil(b)
	}
	b = AppendArrayLen(b, len(ss))
	for _, s := range ss {
		b = AppendString(b, s)
	}
	return b
}

// AppendUint8 appends v as a uint8 (0xcc and one byte, whatever its
// value): the library's encoding of a Go uint8.
func AppendUint8(b []byte, v uint8) []byte { return append(b, 0xcc, v) }

// AppendInt64 appends n as an int64 (0xd3 and eight bytes, whatever its
// value): the library's encoding of a Go int64.
func AppendInt64(b []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}

// AppendInt appends n in its shortest form: a positive or negative fixint
// when it fits, else the smallest unsigned (for n >= 0) or signed type
// that holds it. This is the library's EncodeInt, its encoding of a Go
// int.
func AppendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0 && n <= math.MaxInt8:
		return append(b, byte(n))
	case n >= 0 && n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n >= 0 && n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n >= 0 && n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	case n >= 0:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	}
	return AppendInt64(b, n)
}
