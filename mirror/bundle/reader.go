package bundle

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"

	"github.com/noether-mirror/mirror/store"
)

// Reader reads a bundle as a stream, checking as it goes: NewReader reads
// and checks the manifest and its signature; Next returns the records one
// by one and, after the last, checks the digest, the counts and the end of
// the archive before it returns io.EOF. Nothing a Reader returns may be
// trusted as complete until Next has returned io.EOF. A Reader is not
// safe for concurrent use.
type Reader struct {
	tr        *tarReader
	man       Manifest
	manSHA    string
	manSum    [32]byte
	sig       *Signature
	n         int
	dg        *digester
	last      store.StageID
	counts    map[string]int
	hdr       [frameHeader]byte
	frame     []byte
	err       error // sticky
	finalized bool
}

// NewReader starts reading a bundle (plain or gzip-compressed) from r. It
// reads manifest.json and manifest.sig, if present, and verifies the
// signature's validity (not who made it: see Signature). A damaged or
// truncated bundle gives ErrMalformed, a newer format ErrFormatVersion, a
// signature that does not verify ErrSignature.
func NewReader(r io.Reader) (*Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, malformedf("the gzip header is damaged: %v", err)
		}
		src = zr
	}
	rd := &Reader{tr: &tarReader{r: src}, dg: newDigester(), counts: map[string]int{}}
	name, size, err := rd.tr.next()
	if err == io.EOF {
		return nil, malformedf("the archive is empty")
	}
	if err != nil {
		return nil, classify(err)
	}
	if name != nameManifest {
		return nil, malformedf("the first member is %q, want %s: this is not a noether-mirror bundle", truncate([]byte(name)), nameManifest)
	}
	mb, err := rd.tr.readMember(name, size, MaxManifestBytes)
	if err != nil {
		return nil, classify(err)
	}
	if rd.man, err = parseManifest(mb); err != nil {
		return nil, err
	}
	rd.manSum = sha256.Sum256(mb)
	rd.manSHA = hex.EncodeToString(rd.manSum[:])
	if name, size, err = rd.tr.next(); err != nil {
		if err == io.EOF {
			return nil, malformedf("the archive ends after %s: it has no %s", nameManifest, nameStages)
		}
		return nil, classify(err)
	}
	if name == nameSig {
		sb, err := rd.tr.readMember(name, size, maxSigBytes)
		if err != nil {
			return nil, classify(err)
		}
		sig, err := parseSignature(sb, mb)
		if err != nil {
			return nil, err
		}
		rd.sig = &sig
		if name, size, err = rd.tr.next(); err != nil {
			if err == io.EOF {
				return nil, malformedf("the archive ends after %s: it has no %s", nameSig, nameStages)
			}
			return nil, classify(err)
		}
	}
	if name != nameStages {
		return nil, malformedf("unexpected member %q where %s belongs", truncate([]byte(name)), nameStages)
	}
	if size != rd.man.RecordsBytes {
		return nil, malformedf("%s is %d bytes, the manifest says %d: the bundle was modified", nameStages, size, rd.man.RecordsBytes)
	}
	return rd, nil
}

// classify turns a decompression failure into ErrMalformed.
func classify(err error) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt) {
		return malformedf("the compressed data is damaged: %v", err)
	}
	return err
}

// Manifest returns the bundle's manifest.
func (r *Reader) Manifest() Manifest {
	m := r.man
	m.Counts = maps.Clone(m.Counts)
	m.UpstreamTotals = maps.Clone(m.UpstreamTotals)
	return m
}

// ManifestSHA256 is the hex SHA-256 of the exact manifest.json bytes; two
// readers of the same bundle agree on it.
func (r *Reader) ManifestSHA256() string { return r.manSHA }

// Signature returns the manifest signature, already verified to be valid
// for its public key, and whether the bundle is signed at all. Whether
// that key is trusted is the caller's decision.
func (r *Reader) Signature() (Signature, bool) {
	if r.sig == nil {
		return Signature{}, false
	}
	return *r.sig, true
}

// Next returns the next record, in strictly increasing id order. After
// the last record it checks the digest, counts and archive end, and
// returns io.EOF only if all of them hold. Any other error is sticky.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
	}
	return rec, err
}

func (r *Reader) next() (Record, error) {
	c := r.tr.content
	if r.n == r.man.Total {
		return Record{}, r.finish()
	}
	if err := r.tr.readFull(r.hdr[:], fmt.Sprintf("record %d of %s", r.n+1, nameStages)); err != nil {
		return Record{}, classify(err)
	}
	n := binary.BigEndian.Uint32(r.hdr[0:4])
	if n == 0 || n > MaxFramePayload || int64(n) > c.N {
		return Record{}, malformedf("record %d declares %d bytes (limit %d, %d left in %s): the bundle is damaged", r.n+1, n, MaxFramePayload, c.N, nameStages)
	}
	c.N -= frameHeader
	if cap(r.frame) < int(n) {
		r.frame = make([]byte, n)
	}
	p := r.frame[:n]
	if err := r.tr.readFull(p, fmt.Sprintf("record %d of %s", r.n+1, nameStages)); err != nil {
		return Record{}, classify(err)
	}
	c.N -= int64(n)
	if got, want := crc32.Checksum(p, castagnoli), binary.BigEndian.Uint32(r.hdr[4:8]); got != want {
		return Record{}, malformedf("record %d checksum mismatch (stored %08x, computed %08x): the bundle is damaged", r.n+1, want, got)
	}
	rec, err := decodePayload(p)
	if err != nil {
		return Record{}, malformedf("record %d: %v", r.n+1, err)
	}
	if rec.ID <= r.last {
		return Record{}, malformedf("record %d (%s) is out of order or a duplicate: ids must strictly increase", r.n+1, rec.ID)
	}
	r.last = rec.ID
	r.dg.add(&rec)
	r.counts[rec.Lifecycle.Name()]++
	r.n++
	return rec, nil
}

// finish runs the end-of-bundle checks.
func (r *Reader) finish() error {
	if r.finalized {
		return io.EOF
	}
	var trailer [trailerSize]byte
	if r.tr.content.N < trailerSize {
		return malformedf("%s has no room for its trailer after the last record: the bundle was modified", nameStages)
	}
	if err := r.tr.readFull(trailer[:], "the trailer of "+nameStages); err != nil {
		return classify(err)
	}
	r.tr.content.N -= trailerSize
	if binary.BigEndian.Uint32(trailer[:4]) != 0 {
		return malformedf("%s holds more records than the manifest's %d: the bundle was modified", nameStages, r.man.Total)
	}
	if !bytes.Equal(trailer[4:], r.manSum[:]) {
		return malformedf("the manifest's checksum in %s does not match manifest.json: the manifest was modified or damaged", nameStages)
	}
	if left := r.tr.content.N; left != 0 {
		return malformedf("%s has %d bytes after its last record: the bundle was modified", nameStages, left)
	}
	if got := r.dg.sum(); got != r.man.RecordsDigest {
		return malformedf("the records digest is %s, the manifest says %s: the bundle was modified or damaged", got, r.man.RecordsDigest)
	}
	if !maps.Equal(r.counts, r.man.Counts) {
		return malformedf("the records' lifecycle counts %v differ from the manifest's %v", r.counts, r.man.Counts)
	}
	name, _, err := r.tr.next()
	switch {
	case err == io.EOF:
	case err != nil:
		return classify(err)
	default:
		return malformedf("unexpected member %q after %s", truncate([]byte(name)), nameStages)
	}
	r.finalized = true
	return io.EOF
}
