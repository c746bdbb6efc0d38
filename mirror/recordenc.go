package mirror

import (
	"encoding/binary"
	"math"
)

// This file writes record values by hand. Records used to be encoded with
// msgpack.Marshal on a struct (recordPayload in record_test.go), whose
// reflection cost ~18 µs of a sync's ~250 µs per stage; the bytes written
// here are exactly msgpack's (TestAppendRecordMatchesMsgpack,
// FuzzAppendRecord), so the format does not change.

// appendRecord appends the stored value of r (keyed by r.ID): the version
// byte, the CRC-32C of key and payload, then the payload.
func appendRecord(b []byte, r *Record) []byte {
	start := len(b)
	b = append(b, recordVersion, 0, 0, 0, 0)
	b = appendRecordPayload(b, r)
	binary.BigEndian.PutUint32(b[start+1:], recordCRC([]byte(r.ID), b[start+recordHeader:]))
	return b
}

// recordSize is an upper bound on len(appendRecord(nil, r)), to size a
// buffer once.
func recordSize(r *Record) int {
	n := recordHeader + 64 + len(r.Raw) + len(r.Name) + len(r.SignatureID) +
		len(r.Lifecycle.Successor) + len(r.Lifecycle.Other) + len(r.Report.Legacy)
	for _, s := range r.Unknown {
		n += 5 + len(s)
	}
	for _, s := range r.Effects {
		n += 5 + len(s)
	}
	for _, c := range r.Report.Checks {
		n += 24 + len(c.Name) + len(c.Detail)
	}
	return n
}

// appendRecordPayload appends r as the msgpack map that recordPayload's
// tags describe, fields in declaration order, empty optional ones left
// out, as msgpack v5 encodes such a struct.
func appendRecordPayload(b []byte, r *Record) []byte {
	n := 2 // "r" and "l" are always there
	for _, present := range []bool{r.Name != "", r.HasName, r.SignatureID != "",
		r.Lifecycle.Successor != "", r.Lifecycle.Other != "", len(r.Unknown) > 0,
		len(r.Effects) > 0, len(r.Report.Checks) > 0, r.Report.IDOrder != 0, r.Report.Legacy != ""} {
		if present {
			n++
		}
	}
	b = mpMapLen(b, n)
	b = mpString(b, "r")
	b = mpBytes(b, r.Raw)
	if r.Name != "" {
		b = mpString(mpString(b, "n"), r.Name)
	}
	if r.HasName {
		b = append(mpString(b, "hn"), 0xc3) // true
	}
	if r.SignatureID != "" {
		b = mpString(mpString(b, "s"), string(r.SignatureID))
	}
	b = append(mpString(b, "l"), 0xcc, uint8(r.Lifecycle.Kind)) // uint8 keeps its type
	if r.Lifecycle.Successor != "" {
		b = mpString(mpString(b, "ls"), string(r.Lifecycle.Successor))
	}
	if r.Lifecycle.Other != "" {
		b = mpString(mpString(b, "lo"), r.Lifecycle.Other)
	}
	if len(r.Unknown) > 0 {
		b = mpStrings(mpString(b, "u"), r.Unknown)
	}
	if len(r.Effects) > 0 {
		b = mpStrings(mpString(b, "e"), r.Effects)
	}
	if checks := r.Report.Checks; len(checks) > 0 {
		b = mpArrayLen(mpString(b, "c"), len(checks))
		for _, c := range checks {
			if c.Detail != "" {
				b = mpMapLen(b, 3)
			} else {
				b = mpMapLen(b, 2)
			}
			b = mpString(mpString(b, "k"), c.Name)
			b = append(mpString(b, "s"), 0xcc, uint8(c.Status))
			if c.Detail != "" {
				b = mpString(mpString(b, "d"), c.Detail)
			}
		}
	}
	if o := int64(r.Report.IDOrder); o != 0 {
		b = mpInt(mpString(b, "o"), o)
	}
	if r.Report.Legacy != "" {
		b = mpString(mpString(b, "g"), r.Report.Legacy)
	}
	return b
}

// The msgpack encodings msgpack v5 picks: the shortest length prefix for
// maps, arrays, strings and byte strings, and the shortest form of an int.

func mpMapLen(b []byte, n int) []byte   { return mpLen(b, n, 0x80, 16, 0xde, 0xdf) }
func mpArrayLen(b []byte, n int) []byte { return mpLen(b, n, 0x90, 16, 0xdc, 0xdd) }

func mpLen(b []byte, n int, fix byte, fixMax int, code16, code32 byte) []byte {
	switch {
	case n < fixMax:
		return append(b, fix|byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, code16), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, code32), uint32(n))
}

func mpString(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, 0xd9, byte(n))
	default:
		b = mpLen(b, n, 0, 0, 0xda, 0xdb)
	}
	return append(b, s...)
}

func mpBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 0xc0)
	}
	if n := len(v); n < 256 {
		b = append(b, 0xc4, byte(n))
	} else {
		b = mpLen(b, n, 0, 0, 0xc5, 0xc6)
	}
	return append(b, v...)
}

func mpStrings(b []byte, ss []string) []byte {
	b = mpArrayLen(b, len(ss))
	for _, s := range ss {
		b = mpString(b, s)
	}
	return b
}

// mpInt is msgpack v5's EncodeInt: a fixint when it fits, else the
// smallest integer type that holds n.
func mpInt(b []byte, n int64) []byte {
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
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}
