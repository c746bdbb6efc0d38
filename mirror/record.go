package mirror

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
	"unsafe"

	"github.com/noether-mirror/mirror/mirror/internal/mpack"
	"github.com/noether-mirror/mirror/store"
)

// recordVersion is the first byte of every record value.
const recordVersion = 1

// recordHeader is the version byte plus the CRC-32C.
const recordHeader = 5

// maxRecordBytes bounds one record value: a maximal stage plus generous
// room for the fields around it.
const maxRecordBytes = store.MaxStageBytes + 1<<20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one stage as the mirror holds it: its exact JSON plus the
// fields the indexes need and the verification result computed when it
// was stored. A Record owns all its memory (nothing points into the
// database file); it is a plain value, safe to share once built.
type Record struct {
	ID          store.StageID
	SignatureID store.SignatureID
	Name        string
	HasName     bool
	Lifecycle   store.Lifecycle
	// Raw is the stage's JSON exactly as received.
	Raw []byte
	// Unknown lists values from a newer noether (store.Stage.Unknown).
	Unknown []string
	// Effects are the stage's effects in Rust Debug form
	// (store.Effect.DebugKey), kept so Stats needs no JSON decoding.
	Effects []string
	// Report is the store.Verify result recorded when the stage was
	// stored (Report.Checks is empty if it was stored without one).
	Report store.Report
}

// Decode parses r.Raw into a Stage (tens of µs for a 5 KB stage: use Raw
// directly when bytes are enough).
func (r Record) Decode() (*store.Stage, error) {
	s, err := store.DecodeStage(r.Raw)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", r.ID, err)
	}
	return s, nil
}

func recordCRC(key, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, key), castagnoli, payload)
}

// open checks a record value's version and checksum and returns its
// payload (a sub-slice of val). Nothing is decoded before this passes.
func open(key, val []byte) ([]byte, error) {
	if len(val) < recordHeader+1 {
		return nil, fmt.Errorf("record of %d bytes is too short", len(val))
	}
	if len(val) > maxRecordBytes {
		return nil, fmt.Errorf("record of %d bytes is over the %d-byte limit", len(val), maxRecordBytes)
	}
	if val[0] != recordVersion {
		return nil, fmt.Errorf("record version %d, want %d", val[0], recordVersion)
	}
	payload := val[recordHeader:]
	if got, want := recordCRC(key, payload), binary.BigEndian.Uint32(val[1:5]); got != want {
		return nil, fmt.Errorf("record checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return payload, nil
}

// encodeRecord builds the stored value of r (keyed by r.ID).
func encodeRecord(r *Record) []byte {
	return appendRecord(make([]byte, 0, recordSize(r)), r)
}

// recordRaw returns the stage JSON inside a record value without decoding
// anything else: a sub-slice of val, valid only as long as val is.
func recordRaw(key, val []byte) ([]byte, error) {
	payload, err := open(key, val)
	if err != nil {
		return nil, err
	}
	// Fast path: a fixmap whose first key is "r".
	if len(payload) >= 3 && payload[0]&0xf0 == 0x80 && payload[1] == 0xa1 && payload[2] == 'r' {
		r := mpack.NewAt(payload, 3)
		return r.Bytes()
	}
	r := mpReader{Reader: mpack.New(payload), own: true}
	rec, err := decodePayload(string(key), &r)
	if err != nil {
		return nil, err
	}
	return rec.Raw, nil
}

// decodeRecord checks and decodes a record value into a Record that owns
// its memory: Raw in its own allocation, the small strings in one more.
// val may be bbolt memory: nothing returned points into it.
func decodeRecord(key, val []byte) (Record, error) {
	return decodeDetached(key, val, nil, nil)
}

// decodeBorrowed decodes key/val without copying: strings and Raw alias
// val, so the result is valid only as long as val is (inside the bbolt
// transaction it came from). For hot loops that only look at a record.
func decodeBorrowed(key, val []byte) (Record, error) {
	return decodeInPlace(key, val, nil)
}

// decodeInPlace is decodeBorrowed taking slices from sl when not nil.
func decodeInPlace(key, val []byte, sl *slab) (Record, error) {
	payload, err := open(key, val)
	if err != nil {
		return Record{}, err
	}
	var id string
	if len(key) > 0 {
		id = unsafe.String(&key[0], len(key))
	}
	r := mpReader{Reader: mpack.New(payload), own: true, sl: sl}
	return decodePayload(id, &r)
}

// decodeDetached decodes key/val (which may be bbolt memory) and copies
// the result out: Raw into its own allocation, the strings into a (a fresh
// exactly-sized block when nil), slices from sl when not nil.
func decodeDetached(key, val []byte, a *strArena, sl *slab) (Record, error) {
	rec, err := decodeInPlace(key, val, sl)
	if err != nil {
		return Record{}, err
	}
	rec.detach(a)
	return rec, nil
}

// detach replaces every string and byte slice of r that may point into
// borrowed memory with copies.
func (r *Record) detach(a *strArena) {
	if a == nil {
		a = &strArena{}
		a.buf = make([]byte, 0, r.smallSize())
	}
	r.ID = store.StageID(a.str(string(r.ID)))
	r.SignatureID = store.SignatureID(a.str(string(r.SignatureID)))
	r.Name = a.str(r.Name)
	r.Lifecycle.Successor = store.StageID(a.str(string(r.Lifecycle.Successor)))
	r.Lifecycle.Other = a.str(r.Lifecycle.Other)
	for i := range r.Unknown {
		r.Unknown[i] = a.str(r.Unknown[i])
	}
	for i := range r.Effects {
		r.Effects[i] = a.str(r.Effects[i])
	}
	r.Report.ID = r.ID
	r.Report.Legacy = a.str(r.Report.Legacy)
	for i := range r.Report.Checks {
		c := &r.Report.Checks[i]
		c.Name, c.Detail = a.str(c.Name), a.str(c.Detail)
	}
	r.Raw = bytes.Clone(r.Raw)
	if len(r.Report.Checks) == 0 {
		r.Report.ID = ""
	}
}

// smallSize is the total length of r's strings.
func (r *Record) smallSize() int {
	n := len(r.ID) + len(r.SignatureID) + len(r.Name) + len(r.Lifecycle.Successor) +
		len(r.Lifecycle.Other) + len(r.Report.Legacy)
	for _, s := range r.Unknown {
		n += len(s)
	}
	for _, s := range r.Effects {
		n += len(s)
	}
	for _, c := range r.Report.Checks {
		n += len(c.Name) + len(c.Detail)
	}
	return n
}

// strArena copies strings into shared blocks, so a batch of records
// costs a few allocations and keeping one string keeps at most one block
// (never a stage's JSON) alive.
type strArena struct{ buf []byte }

// arenaBlock is the block size of a shared strArena.
const arenaBlock = 16 << 10

// str returns a copy of s in a's block.
func (a *strArena) str(s string) string { return arenaCopy(a, s) }

// strBytes returns a string holding a copy of b in a's block.
func (a *strArena) strBytes(b []byte) string { return arenaCopy(a, b) }

func arenaCopy[S ~string | ~[]byte](a *strArena, s S) string {
	if len(s) == 0 {
		return ""
	}
	if len(a.buf)+len(s) > cap(a.buf) {
		a.buf = make([]byte, 0, max(arenaBlock, len(s)))
	}
	i := len(a.buf)
	a.buf = append(a.buf, s...)
	return unsafe.String(&a.buf[i], len(s))
}

// decodePayload decodes a record payload; r.own must be set.
func decodePayload(key string, r *mpReader) (Record, error) {
	rec := Record{ID: store.StageID(key)}
	n, err := r.MapLen()
	if err != nil {
		return Record{}, err
	}
	var raw []byte
	haveRaw := false
	for range n {
		k, err := r.Bytes()
		if err != nil {
			return Record{}, err
		}
		switch string(k) {
		case "r":
			raw, err = r.Bytes()
			haveRaw = true
		case "n":
			rec.Name, err = r.str()
		case "hn":
			rec.HasName, err = r.Bool()
		case "s":
			var s string
			s, err = r.str()
			rec.SignatureID = store.SignatureID(s)
		case "l":
			var v int64
			v, err = r.Int()
			if err == nil && (v < 0 || v > int64(store.LifecycleTombstone)) {
				err = fmt.Errorf("lifecycle kind %d out of range", v)
			}
			rec.Lifecycle.Kind = store.LifecycleKind(v)
		case "ls":
			var s string
			s, err = r.str()
			rec.Lifecycle.Successor = store.StageID(s)
		case "lo":
			rec.Lifecycle.Other, err = r.str()
		case "u":
			rec.Unknown, err = r.strs()
		case "e":
			rec.Effects, err = r.strs()
		case "c":
			rec.Report.Checks, err = decodeChecks(r)
		case "o":
			var v int64
			v, err = r.Int()
			if err == nil && (v < 0 || v > 255) {
				err = fmt.Errorf("id order %d out of range", v)
			}
			rec.Report.IDOrder = store.KeyOrder(v)
		case "g":
			rec.Report.Legacy, err = r.str()
		default:
			err = r.Skip(0)
		}
		if err != nil {
			return Record{}, fmt.Errorf("record field %q: %w", k, err)
		}
	}
	if r.Left() != 0 {
		return Record{}, fmt.Errorf("record has %d trailing bytes", r.Left())
	}
	if !haveRaw || len(raw) == 0 {
		return Record{}, fmt.Errorf("record has no stage JSON")
	}
	rec.Raw = raw[:len(raw):len(raw)]
	return rec, nil
}

func decodeChecks(r *mpReader) ([]store.Check, error) {
	n, err := r.ArrayLen()
	if err != nil || n == 0 {
		return nil, err
	}
	out := r.sl.checkSlice(n)
	for i := range out {
		m, err := r.MapLen()
		if err != nil {
			return nil, err
		}
		for range m {
			k, err := r.Bytes()
			if err != nil {
				return nil, err
			}
			switch string(k) {
			case "k":
				out[i].Name, err = r.str()
			case "s":
				var v int64
				v, err = r.Int()
				if err == nil && (v < 0 || v > 255) {
					err = fmt.Errorf("check status %d out of range", v)
				}
				out[i].Status = store.CheckStatus(v)
			case "d":
				out[i].Detail, err = r.str()
			default:
				err = r.Skip(0)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// QuarantineEntry is an upstream stage the mirror refused to serve: its
// bytes as received and why. Quarantined stages are never returned by the
// read methods as good stages.
type QuarantineEntry struct {
	// ID is the stage id the entry claims, or, when that is unusable, a
	// synthetic key: "x" followed by the SHA-256 (hex) of Raw.
	ID string
	// Key is the entry's key in the quarantine: the claimed id when it is
	// a well-formed id, else the synthetic key (see Entry.QuarantineKey).
	// It is set when an entry is read, and is what removals name.
	Key string
	// Raw is the stage JSON exactly as received.
	Raw []byte
	// Reasons says why it was quarantined, one line each.
	Reasons []string
	// FirstSeen is when a sync first quarantined these bytes.
	FirstSeen time.Time
}

// encodeQuarantine builds the stored value of q under key.
func encodeQuarantine(key []byte, q *QuarantineEntry) []byte {
	return appendQuarantine(make([]byte, 0, quarantineSize(q)), key, q)
}

func decodeQuarantine(key, val []byte) (QuarantineEntry, error) {
	payload, err := open(key, val)
	if err != nil {
		return QuarantineEntry{}, err
	}
	var q QuarantineEntry
	r := mpReader{Reader: mpack.New(payload)}
	n, err := r.MapLen()
	if err != nil {
		return QuarantineEntry{}, err
	}
	for range n {
		k, err := r.Bytes()
		if err != nil {
			return QuarantineEntry{}, err
		}
		switch string(k) {
		case "r":
			var raw []byte
			raw, err = r.Bytes()
			q.Raw = append([]byte(nil), raw...)
		case "i":
			q.ID, err = r.str()
		case "q":
			q.Reasons, err = r.strs()
		case "t":
			var t int64
			if t, err = r.Int(); err == nil && t != 0 {
				q.FirstSeen = time.Unix(0, t).UTC()
			}
		default:
			err = r.Skip(0)
		}
		if err != nil {
			return QuarantineEntry{}, fmt.Errorf("quarantine field %q: %w", k, err)
		}
	}
	if r.Left() != 0 {
		return QuarantineEntry{}, fmt.Errorf("quarantine entry has %d trailing bytes", r.Left())
	}
	if q.ID == "" {
		q.ID = string(key)
	}
	q.Key = string(key)
	return q, nil
}
