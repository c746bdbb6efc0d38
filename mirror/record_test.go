package mirror

import (
	"bytes"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/noether-mirror/mirror/store"
)

// recordPayload declares the record format (FORMAT.md) the way msgpack
// sees it: appendRecordPayload must write exactly what msgpack.Marshal
// writes for it. Raw must stay the first field: GetRaw reads it without
// decoding the rest.
type recordPayload struct {
	Raw       []byte         `msgpack:"r"`
	Name      string         `msgpack:"n,omitempty"`
	HasName   bool           `msgpack:"hn,omitempty"`
	Sig       string         `msgpack:"s,omitempty"`
	Life      uint8          `msgpack:"l"`
	Successor string         `msgpack:"ls,omitempty"`
	LifeOther string         `msgpack:"lo,omitempty"`
	Unknown   []string       `msgpack:"u,omitempty"`
	Effects   []string       `msgpack:"e,omitempty"`
	Checks    []checkPayload `msgpack:"c,omitempty"`
	IDOrder   int            `msgpack:"o,omitempty"`
	Legacy    string         `msgpack:"g,omitempty"`
}

type checkPayload struct {
	Name   string `msgpack:"k"`
	Status uint8  `msgpack:"s"`
	Detail string `msgpack:"d,omitempty"`
}

// quarantinePayload declares the quarantine entry format (FORMAT.md) the
// way msgpack sees it: appendQuarantinePayload must write exactly what
// msgpack.Marshal writes for it (FirstSeen is an int64: always nine bytes).
type quarantinePayload struct {
	Raw       []byte   `msgpack:"r"`
	ID        string   `msgpack:"i,omitempty"`
	Reasons   []string `msgpack:"q,omitempty"`
	FirstSeen int64    `msgpack:"t,omitempty"`
}

// seal wraps a payload into a record value: version byte, then the
// CRC-32C of key and payload, then the payload.
func seal(key, payload []byte) []byte {
	out := append([]byte{recordVersion, 0, 0, 0, 0}, payload...)
	putCRC(out, key)
	return out
}

// msgpackQuarantine is the reference encoding of q under key:
// msgpack.Marshal of its quarantinePayload, sealed (what encodeQuarantine
// did before it wrote the bytes by hand).
func msgpackQuarantine(t testing.TB, key []byte, q *QuarantineEntry) []byte {
	t.Helper()
	p := quarantinePayload{Raw: q.Raw, ID: q.ID, Reasons: q.Reasons}
	if !q.FirstSeen.IsZero() {
		p.FirstSeen = q.FirstSeen.UnixNano()
	}
	b, err := msgpack.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return seal(key, b)
}

// msgpackRecord is the reference encoding of r: msgpack.Marshal of its
// recordPayload, sealed.
func msgpackRecord(t testing.TB, r *Record) []byte {
	t.Helper()
	p := recordPayload{
		Raw: r.Raw, Name: r.Name, HasName: r.HasName, Sig: string(r.SignatureID),
		Life: uint8(r.Lifecycle.Kind), Successor: string(r.Lifecycle.Successor),
		LifeOther: r.Lifecycle.Other, Unknown: r.Unknown, Effects: r.Effects,
		IDOrder: int(r.Report.IDOrder), Legacy: r.Report.Legacy,
	}
	for _, c := range r.Report.Checks {
		p.Checks = append(p.Checks, checkPayload{Name: c.Name, Status: uint8(c.Status), Detail: c.Detail})
	}
	b, err := msgpack.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return seal([]byte(r.ID), b)
}

// TestAppendRecordMatchesMsgpack compares the hand encoder with msgpack on
// every stdlib stage and on records that take every optional field and
// every length prefix: long and short strings, names of 31, 32, 255 and
// 256 bytes, empty and long lists, and negative and large key orders.
func TestAppendRecordMatchesMsgpack(t *testing.T) {
	var recs []*Record
	for _, s := range stdlibStages(t) {
		recs = append(recs, recordOf(s, store.Verify(s)))
	}
	base := *recs[0]
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000} {
		r := base
		r.Name, r.HasName = strings.Repeat("n", n), n > 0
		r.Raw = bytes.Repeat([]byte("x"), n)
		r.SignatureID = store.SignatureID(strings.Repeat("s", n))
		r.Lifecycle = store.Lifecycle{Kind: store.LifecycleDeprecated, Successor: store.StageID(strings.Repeat("d", n)), Other: strings.Repeat("o", n%300)}
		r.Unknown = make([]string, n%40)
		r.Effects = make([]string, n%20)
		for i := range r.Unknown {
			r.Unknown[i] = strings.Repeat("u", i)
		}
		r.Report.Checks = append([]store.Check{{Name: "c", Status: store.CheckFail, Detail: strings.Repeat("d", n)}}, base.Report.Checks...)
		r.Report.Legacy = strings.Repeat("g", n%5)
		recs = append(recs, &r)
	}
	for _, o := range []int64{-1 << 40, -70000, -200, -33, -32, -1, 1, 127, 128, 255, 256, 65536, 1 << 33} {
		r := base
		r.Report.IDOrder = store.KeyOrder(o)
		recs = append(recs, &r)
	}
	nilRaw := base
	nilRaw.Raw = nil
	recs = append(recs, &nilRaw)
	for i, r := range recs {
		if got, want := encodeRecord(r), msgpackRecord(t, r); !bytes.Equal(got, want) {
			t.Fatalf("record %d: hand encoding differs from msgpack's:\n got % x\nwant % x", i, got, want)
		}
		if len(encodeRecord(r)) > recordSize(r) {
			t.Fatalf("record %d: %d bytes, recordSize said at most %d", i, len(encodeRecord(r)), recordSize(r))
		}
	}
}

func sampleRecord(t testing.TB) *Record {
	s := stdlibStages(t)[3]
	return recordOf(s, store.Verify(s))
}

func TestRecordRoundTrip(t *testing.T) {
	for _, s := range stdlibStages(t) {
		want := recordOf(s, store.Verify(s))
		val := encodeRecord(want)
		got, err := decodeRecord([]byte(s.ID), val)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Fatalf("round trip of %s:\n got %+v\nwant %+v", s.ID, got, want)
		}
		raw, err := recordRaw([]byte(s.ID), val)
		if err != nil || !bytes.Equal(raw, s.Raw) {
			t.Fatalf("recordRaw: %v", err)
		}
	}
}

func TestRecordRejects(t *testing.T) {
	r := sampleRecord(t)
	val := encodeRecord(r)
	key := []byte(r.ID)
	flip := func(i int) []byte { b := bytes.Clone(val); b[i] ^= 1; return b }
	cases := []struct {
		name     string
		key, val []byte
	}{
		{"empty", key, nil},
		{"header only", key, val[:recordHeader]},
		{"version", key, flip(0)},
		{"crc", key, flip(2)},
		{"payload bit", key, flip(len(val) / 2)},
		{"truncated", key, val[:len(val)-1]},
		{"other key", []byte("0" + string(key[1:])), val},
		// A forged payload with a valid checksum: a map claiming 2^32-1
		// entries must fail without allocating for them.
		{"huge map", key, seal(key, []byte{0xdf, 0xff, 0xff, 0xff, 0xff})},
		{"huge array", key, seal(key, []byte{0x81, 0xa1, 'u', 0xdd, 0xff, 0xff, 0xff, 0xff})},
		{"huge string", key, seal(key, []byte{0x81, 0xa1, 'r', 0xdb, 0xff, 0xff, 0xff, 0xff})},
		{"no raw", key, seal(key, []byte{0x80})},
		{"trailing", key, seal(key, append(bytes.Clone(val[recordHeader:]), 0xc0))},
		{"deep nesting", key, seal(key, append([]byte{0x81, 0xa1, 'z'}, bytes.Repeat([]byte{0x91}, 100)...))},
		{"lifecycle out of range", key, seal(key, []byte{0x82, 0xa1, 'r', 0xa1, '{', 0xa1, 'l', 0x09})},
	}
	for _, c := range cases {
		if _, err := decodeRecord(c.key, c.val); err == nil {
			t.Errorf("%s: decodeRecord accepted it", c.name)
		}
		// recordRaw checks the checksum and reads only the raw field.
		fastOK := c.name == "lifecycle out of range" || c.name == "trailing"
		if _, err := recordRaw(c.key, c.val); err == nil && !fastOK {
			t.Errorf("%s: recordRaw accepted it", c.name)
		}
	}
}

// TestRecordSkipsUnknownFields: a newer writer's extra fields are skipped.
func TestRecordSkipsUnknownFields(t *testing.T) {
	type newer struct {
		recordPayload
		Extra  map[string][]int `msgpack:"zz"`
		Float  float64          `msgpack:"zf"`
		Stamp  time.Time        `msgpack:"zt"`
		Nested []map[string]any `msgpack:"zn"`
	}
	p := newer{recordPayload: recordPayload{Raw: []byte(`{"id":"a"}`), Name: "n", HasName: true, Life: 2},
		Extra: map[string][]int{"a": {1, -2, 300000}}, Float: 1.5, Stamp: time.Unix(5, 6),
		Nested: []map[string]any{{"x": nil, "y": true, "z": "s"}}}
	b, err := msgpack.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeRecord([]byte("a"), seal([]byte("a"), b))
	if err != nil || got.Name != "n" || !got.HasName || got.Lifecycle.Kind != store.LifecycleActive || string(got.Raw) != `{"id":"a"}` {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestQuarantineRoundTrip(t *testing.T) {
	q := QuarantineEntry{ID: "abc", Raw: []byte(`{"x":1}`), Reasons: []string{"a", "b"}, FirstSeen: time.Unix(100, 5).UTC()}
	val := encodeQuarantine([]byte("k"), &q)
	got, err := decodeQuarantine([]byte("k"), val)
	q.Key = "k"
	if err != nil || !reflect.DeepEqual(got, q) {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := decodeQuarantine([]byte("j"), val); err == nil {
		t.Error("a quarantine entry under another key passed its checksum")
	}
}

// TestEncodeQuarantineMatchesMsgpack compares the hand encoder with
// msgpack on entries that take or leave out every optional field and
// every length prefix: nil, empty and long raw bytes, ids and reasons of
// 31, 32, 255 and 256 bytes, 15 and 16 reasons, and first-seen times that
// are zero, the Unix epoch (UnixNano 0: left out, as msgpack's omitempty
// left it), negative and far off.
func TestEncodeQuarantineMatchesMsgpack(t *testing.T) {
	raw := sampleRecord(t).Raw
	seen := time.Unix(1700000000, 123).UTC()
	qs := []QuarantineEntry{
		{ID: "abc", Raw: raw, Reasons: []string{"signature does not verify"}, FirstSeen: seen},
		{Raw: raw},
		{},
		{Raw: []byte{}, Reasons: []string{}},
		{ID: "x", FirstSeen: time.Unix(0, 0)},
		{ID: "x", FirstSeen: time.Unix(0, 1)},
		{ID: "x", FirstSeen: time.Unix(-1, 0)},
		{ID: "x", FirstSeen: time.Unix(1<<33, 0)},
		{ID: "x", FirstSeen: time.Unix(0, -1<<62)},
	}
	for _, n := range []int{1, 31, 32, 255, 256, 65535, 65536} {
		reasons := make([]string, n%17)
		for i := range reasons {
			reasons[i] = strings.Repeat("q", n)
		}
		qs = append(qs, QuarantineEntry{ID: strings.Repeat("i", n), Raw: bytes.Repeat([]byte("r"), n), Reasons: reasons, FirstSeen: seen})
	}
	for i := range qs {
		key := []byte("k" + strconv.Itoa(i))
		got, want := encodeQuarantine(key, &qs[i]), msgpackQuarantine(t, key, &qs[i])
		if !bytes.Equal(got, want) {
			t.Fatalf("entry %d: hand encoding differs from msgpack's:\n got % x\nwant % x", i, head(got), head(want))
		}
		if len(got) > quarantineSize(&qs[i]) {
			t.Fatalf("entry %d: %d bytes, quarantineSize said at most %d", i, len(got), quarantineSize(&qs[i]))
		}
	}
}

// head is the start of b, for messages.
func head(b []byte) []byte { return b[:min(len(b), 64)] }

// FuzzDecodeRecord: the record decoders never panic on any bytes, and a
// record or quarantine entry that decodes re-encodes to msgpack's bytes
// for it, which decode to the same value.
func FuzzDecodeRecord(f *testing.F) {
	r := sampleRecord(f)
	val := encodeRecord(r)
	key := []byte(r.ID)
	f.Add(key, val)
	f.Add([]byte("q"), encodeQuarantine([]byte("q"), &QuarantineEntry{ID: "q", Raw: []byte("{}"), Reasons: []string{"r"}, FirstSeen: time.Unix(1, 0)}))
	f.Add(key, seal(key, []byte{0xdd, 0xff, 0xff, 0xff, 0xff}))
	f.Add(key, seal(key, []byte{0xdf, 0xff, 0xff, 0xff, 0xff}))
	f.Add(key, seal(key, []byte{0x81, 0xa1, 'r', 0xc6, 0xff, 0xff, 0xff, 0xff}))
	f.Add(key, seal(key, []byte{0x81, 0xa1, 'c', 0x91, 0x81, 0xa1, 's', 0xcf, 1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		// The fuzzer rarely forges a CRC: also try the payload resealed.
		for _, v := range [][]byte{val, seal(key, val)} {
			if raw, err := recordRaw(key, v); err == nil && len(raw) > len(v) {
				t.Fatal("raw longer than the record")
			}
			if q, err := decodeQuarantine(key, v); err == nil {
				again := encodeQuarantine(key, &q)
				if want := msgpackQuarantine(t, key, &q); !bytes.Equal(again, want) {
					t.Fatalf("quarantine hand encoding differs from msgpack's:\n got % x\nwant % x", again, want)
				}
				if q2, err := decodeQuarantine(key, again); err != nil || !reflect.DeepEqual(q, q2) {
					t.Fatalf("quarantine round trip: %v\n%+v\n%+v", err, q, q2)
				}
			}
			rec, err := decodeRecord(key, v)
			if err != nil {
				continue
			}
			again := encodeRecord(&rec)
			if want := msgpackRecord(t, &rec); !bytes.Equal(again, want) {
				t.Fatalf("hand encoding differs from msgpack's:\n got % x\nwant % x", again, want)
			}
			rec2, err := decodeRecord(key, again)
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !reflect.DeepEqual(normal(rec), normal(rec2)) {
				t.Fatalf("round trip changed the record:\n%+v\n%+v", rec, rec2)
			}
		}
	})
}

// normal maps empty slices to nil so round trips compare by content.
func normal(r Record) Record {
	if len(r.Unknown) == 0 {
		r.Unknown = nil
	}
	if len(r.Effects) == 0 {
		r.Effects = nil
	}
	if len(r.Report.Checks) == 0 {
		r.Report = store.Report{}
	}
	return r
}

// BenchmarkEncodeRecord compares the hand encoder with msgpack.Marshal
// (the reference it replaced) on a stdlib record.
func BenchmarkEncodeRecord(b *testing.B) {
	r := sampleRecord(b)
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msgpackRecord(b, r)
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeRecord(r)
		}
	})
}

// BenchmarkEncodeQuarantine compares the hand encoder with msgpack.Marshal
// (the reference it replaced) on an entry of a stdlib stage's size.
func BenchmarkEncodeQuarantine(b *testing.B) {
	r := sampleRecord(b)
	q := QuarantineEntry{ID: string(r.ID), Raw: r.Raw, Reasons: []string{"signature does not verify", "code hash mismatch"}, FirstSeen: time.Unix(1700000000, 5)}
	key := []byte(q.ID)
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msgpackQuarantine(b, key, &q)
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeQuarantine(key, &q)
		}
	})
}
