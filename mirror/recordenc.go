package mirror

import (
	"encoding/binary"

	"github.com/noether-mirror/mirror/mirror/internal/mpack"
)

// This file writes record values by hand, with mpack's Append functions:
// stage records and quarantine entries. Both used to be encoded with
// msgpack.Marshal on a struct (recordPayload and quarantinePayload in
// record_test.go), whose reflection cost ~18 µs of a sync's ~250 µs per
// stage; the bytes written here are exactly msgpack's
// (TestAppendRecordMatchesMsgpack, TestEncodeQuarantineMatchesMsgpack,
// FuzzDecodeRecord), so the format, every record's checksum and the
// snapshot digest do not change.

// appendRecord appends the stored value of r (keyed by r.ID): the version
// byte, the CRC-32C of key and payload, then the payload.
func appendRecord(b []byte, r *Record) []byte {
	start := len(b)
	b = appendRecordPayload(append(b, recordVersion, 0, 0, 0, 0), r)
	putCRC(b[start:], []byte(r.ID))
	return b
}

// putCRC fills in the CRC-32C of a record value whose version byte and
// payload are written: val is the whole value, header included.
func putCRC(val, key []byte) {
	binary.BigEndian.PutUint32(val[1:recordHeader], recordCRC(key, val[recordHeader:]))
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

// appendQuarantine appends the stored value of q under key: the version
// byte, the CRC-32C of key and payload, then the payload.
func appendQuarantine(b, key []byte, q *QuarantineEntry) []byte {
	start := len(b)
	b = appendQuarantinePayload(append(b, recordVersion, 0, 0, 0, 0), q)
	putCRC(b[start:], key)
	return b
}

// quarantineSize is an upper bound on len(appendQuarantine(nil, key, q)).
func quarantineSize(q *QuarantineEntry) int {
	n := recordHeader + 32 + len(q.Raw) + len(q.ID)
	for _, s := range q.Reasons {
		n += 5 + len(s)
	}
	return n
}

// appendQuarantinePayload appends q as the msgpack map that
// quarantinePayload's tags describe: "r" (always, nil when Raw is), then
// "i", "q" and "t" when not empty, "t" as an int64 (nine bytes, the
// library's encoding of that Go type).
func appendQuarantinePayload(b []byte, q *QuarantineEntry) []byte {
	var t int64
	if !q.FirstSeen.IsZero() {
		t = q.FirstSeen.UnixNano()
	}
	n := 1
	for _, present := range [...]bool{q.ID != "", len(q.Reasons) > 0, t != 0} {
		if present {
			n++
		}
	}
	b = mpack.AppendMapLen(b, n)
	b = mpack.AppendBytes(mpack.AppendString(b, "r"), q.Raw)
	if q.ID != "" {
		b = mpack.AppendString(mpack.AppendString(b, "i"), q.ID)
	}
	if len(q.Reasons) > 0 {
		b = mpack.AppendStrings(mpack.AppendString(b, "q"), q.Reasons)
	}
	if t != 0 {
		b = mpack.AppendInt64(mpack.AppendString(b, "t"), t)
	}
	return b
}
