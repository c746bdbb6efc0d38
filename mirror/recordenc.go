package mirror

import (
	"encoding/binary"

	"github.com/noether-mirror/mirror/mirror/internal/mpack"
)

// This file writes record values by hand, with mpack's Append functions.
// Records used to be encoded with msgpack.Marshal on a struct
// (recordPayload in record_test.go), whose reflection cost ~18 µs of a
// sync's ~250 µs per stage; the bytes written here are exactly msgpack's
// (TestAppendRecordMatchesMsgpack, FuzzDecodeRecord), so the format does
// not change.

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
	b = mpack.AppendMapLen(b, n)
	b = mpack.AppendString(b, "r")
	b = mpack.AppendBytes(b, r.Raw)
	if r.Name != "" {
		b = mpack.AppendString(mpack.AppendString(b, "n"), r.Name)
	}
	if r.HasName {
		b = mpack.AppendBool(mpack.AppendString(b, "hn"), true)
	}
	if r.SignatureID != "" {
		b = mpack.AppendString(mpack.AppendString(b, "s"), string(r.SignatureID))
	}
	b = mpack.AppendUint8(mpack.AppendString(b, "l"), uint8(r.Lifecycle.Kind))
	if r.Lifecycle.Successor != "" {
		b = mpack.AppendString(mpack.AppendString(b, "ls"), string(r.Lifecycle.Successor))
	}
	if r.Lifecycle.Other != "" {
		b = mpack.AppendString(mpack.AppendString(b, "lo"), r.Lifecycle.Other)
	}
	if len(r.Unknown) > 0 {
		b = mpack.AppendStrings(mpack.AppendString(b, "u"), r.Unknown)
	}
	if len(r.Effects) > 0 {
		b = mpack.AppendStrings(mpack.AppendString(b, "e"), r.Effects)
	}
	if checks := r.Report.Checks; len(checks) > 0 {
		b = mpack.AppendArrayLen(mpack.AppendString(b, "c"), len(checks))
		for _, c := range checks {
			if c.Detail != "" {
				b = mpack.AppendMapLen(b, 3)
			} else {
				b = mpack.AppendMapLen(b, 2)
			}
			b = mpack.AppendString(mpack.AppendString(b, "k"), c.Name)
			b = mpack.AppendUint8(mpack.AppendString(b, "s"), uint8(c.Status))
			if c.Detail != "" {
				b = mpack.AppendString(mpack.AppendString(b, "d"), c.Detail)
			}
		}
	}
	if o := int64(r.Report.IDOrder); o != 0 {
		b = mpack.AppendInt(mpack.AppendString(b, "o"), o)
	}
	if r.Report.Legacy != "" {
		b = mpack.AppendString(mpack.AppendString(b, "g"), r.Report.Legacy)
	}
	return b
}
