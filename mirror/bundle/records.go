package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"

	"github.com/noether-mirror/mirror/mirror/internal/mpack"
	"github.com/noether-mirror/mirror/store"
)

// Record is one stage in a bundle: its id, its lifecycle kind and its
// exact JSON. Records returned by a Reader own their memory.
type Record struct {
	ID        store.StageID
	Lifecycle store.LifecycleKind
	// Raw is the stage's JSON exactly as the source mirror held it.
	Raw []byte
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// frameHeader is the length and CRC before each payload.
const frameHeader = 8

// trailerSize is stages.bin's trailer: a zero length, then the SHA-256 of
// manifest.json, so every manifest byte is covered even without a
// signature.
const trailerSize = 4 + 32

func appendTrailer(dst, manifest []byte) []byte {
	sum := sha256.Sum256(manifest)
	dst = binary.BigEndian.AppendUint32(dst, 0)
	return append(dst, sum[:]...)
}

// appendFrame appends r's frame to dst: the payload's length and CRC-32C,
// then the payload, the msgpack array [id, lifecycle name, raw JSON]
// (bytes identical to what github.com/vmihailenco/msgpack/v5 wrote for it
// before mpack had a writer: TestAppendFrameMatchesMsgpack). On error dst
// is returned unchanged.
func appendFrame(dst []byte, r *Record) ([]byte, error) {
	start := len(dst)
	b := append(dst, 0, 0, 0, 0, 0, 0, 0, 0) // frameHeader: length, CRC
	b = mpack.AppendArrayLen(b, 3)
	b = mpack.AppendString(b, string(r.ID))
	b = mpack.AppendString(b, r.Lifecycle.Name())
	b = mpack.AppendBytes(b, r.Raw)
	p := b[start+frameHeader:]
	if len(p) > MaxFramePayload {
		return dst, fmt.Errorf("stage %s is %d bytes, over the bundle's %d-byte limit", r.ID, len(r.Raw), MaxFramePayload)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(p)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(p, castagnoli))
	return b, nil
}

// decodePayload decodes a frame payload whose CRC already matched. It
// accepts exactly a 3-element array [str, str, bin] (any msgpack width)
// and nothing after it; every length is checked against the bytes left
// before it is used.
func decodePayload(p []byte) (Record, error) {
	r := mpack.New(p)
	n, err := r.ArrayLen()
	if err != nil {
		return Record{}, err
	}
	if n != 3 {
		return Record{}, fmt.Errorf("record is an array of %d items, want 3", n)
	}
	id, err := r.Str()
	if err != nil {
		return Record{}, fmt.Errorf("record id: %w", err)
	}
	if !store.ValidID(string(id)) {
		return Record{}, fmt.Errorf("record id %q is not 64 lowercase hex characters", truncate(id))
	}
	lc, err := r.Str()
	if err != nil {
		return Record{}, fmt.Errorf("record %s lifecycle: %w", id, err)
	}
	kind, ok := lifecycleNames[string(lc)]
	if !ok {
		return Record{}, fmt.Errorf("record %s lifecycle %q is not draft, active, deprecated, tombstone or unknown", id, truncate(lc))
	}
	raw, err := r.Bin()
	if err != nil {
		return Record{}, fmt.Errorf("record %s stage JSON: %w", id, err)
	}
	if len(raw) == 0 {
		return Record{}, fmt.Errorf("record %s has no stage JSON", id)
	}
	if r.Left() != 0 {
		return Record{}, fmt.Errorf("record %s has %d trailing bytes", id, r.Left())
	}
	return Record{ID: store.StageID(id), Lifecycle: kind, Raw: bytes.Clone(raw)}, nil
}

func truncate(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}

// digester computes the records digest (see the package documentation).
type digester struct {
	h     hash.Hash
	count uint64
	buf   []byte
}

const digestDomain = "noether-mirror bundle records v1\x00"

func newDigester() *digester {
	d := &digester{h: sha256.New()}
	d.h.Write([]byte(digestDomain))
	return d
}

func (d *digester) add(r *Record) {
	lc := r.Lifecycle.Name()
	d.buf = binary.BigEndian.AppendUint32(d.buf[:0], uint32(len(r.ID)))
	d.buf = append(d.buf, r.ID...)
	d.buf = binary.BigEndian.AppendUint32(d.buf, uint32(len(lc)))
	d.buf = append(d.buf, lc...)
	d.buf = binary.BigEndian.AppendUint64(d.buf, uint64(len(r.Raw)))
	d.h.Write(d.buf)
	d.h.Write(r.Raw)
	d.count++
}

// sum finishes the digest and returns "sha256:" + hex. Call it once,
// after the last add.
func (d *digester) sum() string {
	var tail [8]byte
	binary.BigEndian.PutUint64(tail[:], d.count)
	d.h.Write(tail[:])
	return "sha256:" + hex.EncodeToString(d.h.Sum(nil))
}
