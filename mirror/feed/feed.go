// Package feed owns the wire format of a noether-mirror's change feed:
// what `mirror serve` answers under /mirror/v1/ and what a downstream
// `mirror sync` reads from it.
//
// GET /mirror/v1/ answers, in the registry's JSON envelope, a
// Capabilities document: the mirror's current generation and digest, and
// the oldest generation it keeps. GET /mirror/v1/changes/{from}/{to} then
// answers the changes from one kept generation to another (from 0: the
// whole content of to) as a stream in the format below, which never
// changes for a given pair and is served immutable.
//
// A stream is the 8-byte magic "NMFEED1\n"; a uvarint length and that
// many bytes of Header JSON; items, each a kind byte (mirror.ChangeKind,
// 1 to 6), a uvarint length and the key (a stage id or quarantine key),
// a uvarint length and the raw bytes (empty for removals); and a trailer:
// a 0 byte and the SHA-256 of every byte before the hash, that 0
// included. A reader accepts
// a stream only once it has read the trailer, checked the hash and the
// number of items the header announced, and found nothing after it: a
// response cut off anywhere is an error, never a shorter feed.
//
// The package is pure: Writer and Reader work on an io.Writer and an
// io.Reader, and are not safe for concurrent use.
package feed

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// Version is the feed format this package reads and writes.
const Version = 1

// Paths of the feed's endpoints, relative to a mirror's base URL.
const (
	// BasePath answers Capabilities.
	BasePath = "/mirror/v1/"
	// ChangesPrefix is followed by "{from}/{to}" (see ChangesPath), or
	// answers "?since=G" with a redirect to the changes from G to the
	// current generation.
	ChangesPrefix = "/mirror/v1/changes"
	// ContentType is the media type of a change stream.
	ContentType = "application/vnd.noether-mirror.changes.v1"
	// Software names noether-mirror in Capabilities.Mirror.
	Software = "noether-mirror"
)

// ChangesPath is the path of the change stream from one generation to
// another.
func ChangesPath(from, to uint64) string {
	return ChangesPrefix + "/" + strconv.FormatUint(from, 10) + "/" + strconv.FormatUint(to, 10)
}

// Capabilities is what GET /mirror/v1/ answers: that the upstream is a
// noether-mirror serving a change feed, and where it is. A plain value.
type Capabilities struct {
	// Mirror is Software.
	Mirror string `json:"mirror"`
	// FeedVersion is the stream format served (Version).
	FeedVersion int `json:"feed_version"`
	// Generation and Digest are the current generation's; Oldest is the
	// oldest generation kept, the oldest a feed can start from (besides
	// 0, which means from nothing).
	Generation uint64    `json:"generation"`
	Digest     string    `json:"digest"`
	Oldest     uint64    `json:"oldest"`
	Total      int       `json:"total"`
	Published  time.Time `json:"published"`
	// Changes is the path template of a change stream.
	Changes string `json:"changes"`
}

// ErrNotAFeed: an answer to GET /mirror/v1/ is not a noether-mirror's
// capabilities (the upstream is a plain registry, or something else).
var ErrNotAFeed = errors.New("not a noether-mirror change feed")

// ParseCapabilities decodes the result of GET /mirror/v1/: ErrNotAFeed
// unless it is a noether-mirror's capabilities, ErrFormat when it is one
// of another feed version.
func ParseCapabilities(raw []byte) (Capabilities, error) {
	var c Capabilities
	if err := json.Unmarshal(raw, &c); err != nil || c.Mirror != Software {
		return Capabilities{}, ErrNotAFeed
	}
	if c.FeedVersion != Version {
		return c, fmt.Errorf("%w: the upstream serves change feed version %d and this mirror reads version %d: upgrade the older of the two", ErrFormat, c.FeedVersion, Version)
	}
	return c, nil
}

// Header opens a change stream. A plain value.
type Header struct {
	Version int `json:"version"`
	// From and FromDigest name the generation the changes start from (0
	// and "" for the whole content of To: Full).
	From       uint64 `json:"from"`
	FromDigest string `json:"from_digest"`
	Full       bool   `json:"full"`
	// To, Digest, Total, Quarantined and Counts describe the generation
	// the changes lead to: a downstream that applied them to From's
	// content must hold content with this digest.
	To          uint64         `json:"to"`
	Digest      string         `json:"digest"`
	Published   time.Time      `json:"published"`
	Total       int            `json:"total"`
	Quarantined int            `json:"quarantined"`
	Counts      map[string]int `json:"counts"`
	// Changes counts the items by kind; Items is their number.
	Changes mirror.Changes `json:"changes"`
	Items   int            `json:"items"`
}

// Item is one change. Its Raw is owned by the caller once returned.
type Item struct {
	Kind mirror.ChangeKind
	Key  string
	Raw  []byte
}

// ErrFormat: the bytes are not a well-formed change stream of this
// version (damaged, or from another version): asking again gets the same
// bytes.
var ErrFormat = errors.New("malformed change feed")

// ErrTruncated: the stream ended before its trailer (the connection was
// cut): asking again may get all of it.
var ErrTruncated = errors.New("change feed cut off")

// Limits a Reader enforces.
const (
	maxHeaderBytes = 1 << 20
	maxKeyBytes    = 256
	maxRawBytes    = store.MaxStageBytes
)

var magic = []byte("NMFEED1\n")

// Writer writes one change stream. Call Add for each of the header's
// Items, then Close.
type Writer struct {
	bw    *bufio.Writer
	h     hash.Hash
	out   io.Writer // bw and h
	want  int
	items int
	err   error
	buf   []byte
}

// NewWriter writes the magic and h to w and returns a Writer for the
// items.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	h.Version = Version
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encoding the change feed header: %w", err)
	}
	fw := &Writer{bw: bufio.NewWriterSize(w, 64<<10), h: sha256.New(), want: h.Items}
	fw.out = io.MultiWriter(fw.bw, fw.h)
	fw.write(magic)
	fw.buf = binary.AppendUvarint(fw.buf[:0], uint64(len(hdr)))
	fw.write(fw.buf)
	fw.write(hdr)
	return fw, fw.err
}

func (w *Writer) write(p []byte) {
	if w.err == nil {
		_, w.err = w.out.Write(p)
	}
}

// Add writes one item.
func (w *Writer) Add(kind mirror.ChangeKind, key string, raw []byte) error {
	if w.items == w.want {
		return fmt.Errorf("feed: more items than the %d the header announced", w.want)
	}
	if kind < mirror.ChangeAdded || kind > mirror.ChangeReleased || len(key) > maxKeyBytes || len(raw) > maxRawBytes {
		return fmt.Errorf("feed: item %s %q (%d bytes) cannot be encoded", kind, key, len(raw))
	}
	w.items++
	w.buf = append(w.buf[:0], byte(kind))
	w.buf = binary.AppendUvarint(w.buf, uint64(len(key)))
	w.buf = append(w.buf, key...)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(raw)))
	w.write(w.buf)
	w.write(raw)
	return w.err
}

// Close writes the trailer and flushes. It fails when fewer items were
// added than the header announced.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.items != w.want {
		return fmt.Errorf("feed: %d items written, the header announced %d", w.items, w.want)
	}
	w.write([]byte{0})
	if w.err != nil {
		return w.err
	}
	if _, err := w.bw.Write(w.h.Sum(nil)); err != nil {
		return err
	}
	return w.bw.Flush()
}

// Reader reads one change stream.
type Reader struct {
	br     *bufio.Reader
	h      hash.Hash
	hdr    Header
	items  int
	done   bool
	offset int64
}

// NewReader reads the magic and the header from r.
func NewReader(r io.Reader) (*Reader, error) {
	fr := &Reader{br: bufio.NewReaderSize(r, 64<<10), h: sha256.New()}
	m := make([]byte, len(magic))
	if err := fr.full(m); err != nil {
		return nil, fr.formatErr("reading the magic", err)
	}
	if string(m) != string(magic) {
		return nil, fmt.Errorf("%w: the answer does not start with %q (is it a noether-mirror feed?)", ErrFormat, magic[:7])
	}
	n, err := fr.uvarint(maxHeaderBytes, "header length")
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, n)
	if err := fr.full(hdr); err != nil {
		return nil, fr.formatErr("reading the header", err)
	}
	if err := json.Unmarshal(hdr, &fr.hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrFormat, err)
	}
	if fr.hdr.Version != Version {
		return nil, fmt.Errorf("%w: version %d, this noether-mirror reads version %d: upgrade it", ErrFormat, fr.hdr.Version, Version)
	}
	if fr.hdr.Items < 0 || fr.hdr.Total < 0 || fr.hdr.Quarantined < 0 {
		return nil, fmt.Errorf("%w: header counts are negative", ErrFormat)
	}
	return fr, nil
}

// Header returns the stream's header.
func (r *Reader) Header() Header { return r.hdr }

// Next returns the next item; io.EOF once the trailer was read and
// checked. Any other error wraps ErrFormat or ErrTruncated, or is the
// underlying reader's own.
func (r *Reader) Next() (Item, error) {
	if r.done {
		return Item{}, io.EOF
	}
	kind, err := r.byte()
	if err != nil {
		return Item{}, r.formatErr("reading an item", err)
	}
	if kind == 0 {
		return Item{}, r.trailer()
	}
	if kind > byte(mirror.ChangeReleased) {
		return Item{}, fmt.Errorf("%w: unknown item kind %d at byte %d", ErrFormat, kind, r.offset-1)
	}
	if r.items == r.hdr.Items {
		return Item{}, fmt.Errorf("%w: more items than the %d the header announced", ErrFormat, r.hdr.Items)
	}
	r.items++
	kn, err := r.uvarint(maxKeyBytes, "key length")
	if err != nil {
		return Item{}, err
	}
	key := make([]byte, kn)
	if err := r.full(key); err != nil {
		return Item{}, r.formatErr("reading a key", err)
	}
	rn, err := r.uvarint(maxRawBytes, "stage length")
	if err != nil {
		return Item{}, err
	}
	var raw []byte
	if rn > 0 {
		raw = make([]byte, rn)
		if err := r.full(raw); err != nil {
			return Item{}, r.formatErr("reading a stage", err)
		}
	}
	return Item{Kind: mirror.ChangeKind(kind), Key: string(key), Raw: raw}, nil
}

// trailer checks the hash, the item count and that nothing follows.
func (r *Reader) trailer() error {
	want := r.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r.br, got); err != nil {
		return r.formatErr("reading the trailer", err)
	}
	if string(got) != string(want) {
		return fmt.Errorf("%w: the stream's SHA-256 does not match its trailer (damaged in transit)", ErrFormat)
	}
	if r.items != r.hdr.Items {
		return fmt.Errorf("%w: %d items, the header announced %d", ErrFormat, r.items, r.hdr.Items)
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: bytes after the trailer", ErrFormat)
	}
	r.done = true
	return io.EOF
}

func (r *Reader) full(p []byte) error {
	n, err := io.ReadFull(r.br, p)
	r.h.Write(p[:n])
	r.offset += int64(n)
	return err
}

func (r *Reader) byte() (byte, error) {
	b, err := r.br.ReadByte()
	if err == nil {
		r.h.Write([]byte{b})
		r.offset++
	}
	return b, err
}

// uvarint reads a length of at most limit.
func (r *Reader) uvarint(limit int, what string) (int, error) {
	var x uint64
	for shift := 0; ; shift += 7 {
		b, err := r.byte()
		if err != nil {
			return 0, r.formatErr("reading the "+what, err)
		}
		if shift > 56 {
			return 0, fmt.Errorf("%w: %s overflows", ErrFormat, what)
		}
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			break
		}
	}
	if x > uint64(limit) {
		return 0, fmt.Errorf("%w: %s %d is over the limit of %d", ErrFormat, what, x, limit)
	}
	return int(x), nil
}

// formatErr describes a read that failed: a stream that ended early is
// ErrTruncated; another error (the connection's) is returned as it is,
// with where it happened.
func (r *Reader) formatErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends after %d bytes, %s: the answer was cut off", ErrTruncated, r.offset, what)
	}
	return fmt.Errorf("change feed, %s after %d bytes: %w", what, r.offset, err)
}
