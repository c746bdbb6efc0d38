package mirror

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// FormatVersion is the mirror format this version writes and the newest
// it reads: 3, generations (a manifest at PATH; bases, deltas and archive
// files of older generations' records in PATH.gens). It reads format 2
// (the same, with every record in the manifest) and format 1 (one
// snapshot file at PATH) too, and the first writer upgrades such a mirror
// in place. See FORMAT.md.
const FormatVersion uint32 = 3

// magic identifies a bbolt file as a noether-mirror snapshot.
const magic = "noether-mirror"

// pageSize is the bbolt page size of snapshot files. bbolt never splits a
// leaf of four or fewer entries, and a leaf bigger than a page spills onto
// whole extra pages: with ~5.4 KB records, 4 KiB pages hold one record
// in two pages and 16 KiB pages two or three records in two pages (a file
// ~1.65x the JSON). 64 KiB pages hold eleven or twelve records with about
// half a record wasted per page (~1.1x). Reads touch only the OS pages
// they need, so the large page costs nothing at read time.
const pageSize = 64 << 10

// Bucket names.
var (
	bucketStages     = []byte("stages")
	bucketByName     = []byte("by_name")
	bucketBySig      = []byte("by_sig")
	bucketQuarantine = []byte("quarantine")
	bucketMeta       = []byte("meta")
	bucketPosAll     = []byte("pos_all")
	// bucketWriter is only in staging files (PATH.next).
	bucketWriter = []byte("writer")
)

// posBucket returns the position bucket listing one lifecycle kind
// (LifecycleUnknown: every stage).
func posBucket(k store.LifecycleKind) []byte {
	switch k {
	case store.LifecycleDraft:
		return []byte("pos_draft")
	case store.LifecycleActive:
		return []byte("pos_active")
	case store.LifecycleDeprecated:
		return []byte("pos_deprecated")
	case store.LifecycleTombstone:
		return []byte("pos_tombstone")
	}
	return bucketPosAll
}

// digestBuckets are the data buckets the meta digest covers, in the order
// they are hashed.
func digestBuckets() [][]byte {
	return [][]byte{
		bucketStages, bucketByName, bucketBySig, bucketQuarantine, bucketPosAll,
		posBucket(store.LifecycleDraft), posBucket(store.LifecycleActive),
		posBucket(store.LifecycleDeprecated), posBucket(store.LifecycleTombstone),
	}
}

// Meta keys.
const (
	metaMagic          = "magic"
	metaFormatVersion  = "format_version"
	metaGeneration     = "generation"
	metaUpstream       = "upstream"
	metaLastSync       = "last_sync"
	metaPublished      = "published"
	metaUpstreamTotals = "upstream_totals"
	metaCounts         = "counts"
	metaTotal          = "total"
	metaQuarantined    = "quarantined"
	metaByEffect       = "by_effect"
	metaDigest         = "digest"
)

// Meta describes one published snapshot. It is a plain value.
type Meta struct {
	FormatVersion uint32
	// Generation counts publishes: 0 for an empty mirror made by Create,
	// +1 for every publish that changed content.
	Generation uint64
	// Upstream is the registry URL the content came from ("" if none).
	Upstream string
	// LastSync is the last successful sync (including syncs that found
	// nothing new, recorded in PATH.state); zero if never synced.
	LastSync time.Time
	// Published is when this snapshot was written.
	Published time.Time
	// UpstreamTotals are the registry's totals by lifecycle at LastSync.
	UpstreamTotals map[string]int
	// UpstreamGeneration and UpstreamDigest name the generation of the
	// upstream mirror this content was proven equal to (its digest then
	// equalled Digest), when the last sync read another mirror's change
	// feed; 0 and "" otherwise. A sync from that mirror asks for the
	// changes since it, as long as Digest still equals UpstreamDigest.
	UpstreamGeneration uint64
	UpstreamDigest     string
	// Counts are this snapshot's stages by lowercase lifecycle name (only
	// non-zero kinds appear).
	Counts map[string]int
	// ByEffect is Stats.ByEffect of this snapshot.
	ByEffect map[string]int
	// Total is the number of stages (every lifecycle); Quarantined the
	// number of quarantined entries, which Total excludes.
	Total       int
	Quarantined int
	// Digest is the generation's content digest: the hex SHA-256 of the
	// LtHash of its stages' and quarantine entries' raw bytes (see
	// FORMAT.md), so equal digests mean equal content however it was
	// built. For a format-1 mirror, the file digest it was written with.
	Digest string
	// Path is the mirror file and SizeBytes the size of the files the
	// generation reads (its base and deltas; for a format-1 mirror, the
	// one file).
	Path      string
	SizeBytes int64
	// Layers is the number of delta files over the generation's base, and
	// Overlay the number of stage ids and quarantine keys they touch (at
	// most: a key that a merged delta and a later delta both touch counts
	// twice); both 0 for a compacted generation.
	Layers  int
	Overlay int
	// Changes is what the generation changed against the one before it
	// (zero for a format-1 mirror, which keeps no history).
	Changes Changes
	// PreviousUpstream is the upstream the mirror was synced from before
	// Upstream, and UpstreamSince when that changed (both zero when it
	// never did). From PATH.state.
	PreviousUpstream string
	UpstreamSince    time.Time
	// Refused is the last sync that refused to publish, nil once a sync
	// has published or found nothing new since. From PATH.state.
	Refused *SyncRefusal
}

// count returns the number of stages of kind k (LifecycleUnknown: all).
func (m *Meta) count(k store.LifecycleKind) int {
	if k == store.LifecycleUnknown {
		return m.Total
	}
	return m.Counts[k.Name()]
}

func u64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// readMeta reads and validates the meta bucket of a snapshot.
func readMeta(tx *bolt.Tx, path string) (Meta, error) {
	notOurs := func(what string) error {
		return fmt.Errorf("%w: %s is a bbolt file but not a noether-mirror snapshot (%s): move it aside and run `mirror sync` to rebuild it", ErrCorrupt, path, what)
	}
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return Meta{}, notOurs("no meta bucket")
	}
	if string(b.Get([]byte(metaMagic))) != magic {
		return Meta{}, notOurs("no noether-mirror marker")
	}
	m := Meta{Path: path}
	var err error
	switch m.FormatVersion, err = formatVersion(b, path); {
	case errors.Is(err, errNoFormatVersion):
		return Meta{}, notOurs("no format version")
	case err != nil:
		return Meta{}, err
	}
	bad := func(key string, err error) error {
		return fmt.Errorf("%w: %s: meta %q is damaged (%v): run `mirror sync` to rebuild the mirror", ErrCorrupt, path, key, err)
	}
	var ok bool
	if m.Generation, ok = u64(b.Get([]byte(metaGeneration))); !ok {
		return Meta{}, bad(metaGeneration, fmt.Errorf("want 8 bytes"))
	}
	m.Upstream = string(b.Get([]byte(metaUpstream)))
	for _, t := range []struct {
		key string
		dst *time.Time
	}{{metaLastSync, &m.LastSync}, {metaPublished, &m.Published}} {
		if v := b.Get([]byte(t.key)); v != nil {
			n, ok := u64(v)
			if !ok {
				return Meta{}, bad(t.key, fmt.Errorf("want 8 bytes"))
			}
			*t.dst = time.Unix(0, int64(n)).UTC()
		}
	}
	for _, j := range []struct {
		key string
		dst *map[string]int
	}{{metaUpstreamTotals, &m.UpstreamTotals}, {metaCounts, &m.Counts}, {metaByEffect, &m.ByEffect}} {
		if v := b.Get([]byte(j.key)); v != nil {
			if err := json.Unmarshal(v, j.dst); err != nil {
				return Meta{}, bad(j.key, err)
			}
		}
	}
	for _, c := range []struct {
		key string
		dst *int
	}{{metaTotal, &m.Total}, {metaQuarantined, &m.Quarantined}} {
		n, ok := u64(b.Get([]byte(c.key)))
		if !ok || n > 1<<40 {
			return Meta{}, bad(c.key, fmt.Errorf("want an 8-byte count"))
		}
		*c.dst = int(n)
	}
	d := b.Get([]byte(metaDigest))
	if len(d) != sha256.Size {
		return Meta{}, bad(metaDigest, fmt.Errorf("want %d bytes", sha256.Size))
	}
	m.Digest = fmt.Sprintf("%x", d)
	if m.Counts == nil {
		m.Counts = map[string]int{}
	}
	if m.ByEffect == nil {
		m.ByEffect = map[string]int{}
	}
	return m, nil
}

// metaEntry is one entry of the meta bucket.
type metaEntry struct {
	k string
	v []byte
}

// metaEntries returns the meta bucket's entries for m (digest given as raw
// bytes), in key order.
func metaEntries(m *Meta, digest []byte) ([]metaEntry, error) {
	fv := make([]byte, 4)
	binary.BigEndian.PutUint32(fv, m.FormatVersion)
	var es []metaEntry
	var err error
	put := func(k string, v []byte) { es = append(es, metaEntry{k, v}) }
	js := func(k string, v map[string]int) {
		if v == nil {
			return
		}
		j, jerr := json.Marshal(v)
		if jerr != nil && err == nil {
			err = jerr
		}
		put(k, j)
	}
	put(metaMagic, []byte(magic))
	put(metaFormatVersion, fv)
	put(metaGeneration, beUint64(m.Generation))
	if m.Upstream != "" {
		put(metaUpstream, []byte(m.Upstream))
	}
	if !m.LastSync.IsZero() {
		put(metaLastSync, beUint64(uint64(m.LastSync.UnixNano())))
	}
	put(metaPublished, beUint64(uint64(m.Published.UnixNano())))
	js(metaUpstreamTotals, m.UpstreamTotals)
	js(metaCounts, m.Counts)
	js(metaByEffect, m.ByEffect)
	put(metaTotal, beUint64(uint64(m.Total)))
	put(metaQuarantined, beUint64(uint64(m.Quarantined)))
	put(metaDigest, digest)
	slices.SortFunc(es, func(a, b metaEntry) int { return strings.Compare(a.k, b.k) })
	return es, err
}

// digester computes the content digest: one SHA-256 per data bucket over
// its entries in key order (each as uvarint-length-prefixed key and
// value), combined by a SHA-256 over (bucket name, bucket digest) pairs in
// digestBuckets order.
type digester struct {
	per map[string]hash.Hash
}

func newDigester() *digester {
	d := &digester{per: map[string]hash.Hash{}}
	for _, b := range digestBuckets() {
		d.per[string(b)] = sha256.New()
	}
	return d
}

// add hashes one entry; entries of a bucket must come in key order.
func (d *digester) add(bucket, k, v []byte) {
	h := d.per[string(bucket)]
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(k)))])
	h.Write(k)
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
	h.Write(v)
}

func (d *digester) sum() []byte {
	top := sha256.New()
	var n [binary.MaxVarintLen64]byte
	for _, b := range digestBuckets() {
		top.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		top.Write(b)
		top.Write(d.per[string(b)].Sum(nil))
	}
	return top.Sum(nil)
}

// indexBucket returns the name of the by_sig (sig) or by_name index.
func indexBucket(sig bool) []byte {
	if sig {
		return bucketBySig
	}
	return bucketByName
}

// errNoFormatVersion: a meta bucket records no format version.
var errNoFormatVersion = errors.New("no format version")

// formatVersion returns the format version that the meta bucket b of the
// file at path records: errNoFormatVersion when it records none, an
// error wrapping ErrFormatVersion when a newer noether-mirror wrote it.
func formatVersion(b *bolt.Bucket, path string) (uint32, error) {
	fv := b.Get([]byte(metaFormatVersion))
	if len(fv) != 4 {
		return 0, errNoFormatVersion
	}
	v := binary.BigEndian.Uint32(fv)
	if v > FormatVersion {
		return v, fmt.Errorf("%w: %s was written by a newer noether-mirror (format %d > %d): upgrade", ErrFormatVersion, path, v, FormatVersion)
	}
	return v, nil
}
