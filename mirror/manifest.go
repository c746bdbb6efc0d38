package mirror

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/mirror/internal/lthash"
)

// A mirror with generations (format 2 and 3) is a manifest at PATH and
// immutable data files in the directory PATH.gens: bases (complete
// snapshots, the format-1 layout), deltas (what one publish changed) and
// archive files (older generations' records, format 3). The manifest
// lists every kept generation with the files that make it up; publishing
// is writing a new manifest and renaming it over PATH. See FORMAT.md.

// Manifest buckets and meta keys.
var (
	bucketGens = []byte("gens")

	metaManifest = "manifest"
	metaCurrent  = "current"
	metaLTHash   = "lthash"
)

// Changes counts what a generation changed against the one before it.
// Added, Removed and Changed count stages by id (a stage whose bytes
// changed only in its lifecycle counts in Lifecycle, not Changed);
// QuarantineIn and QuarantineOut count quarantine entries that appeared
// and went. It is a plain value.
type Changes struct {
	Added         int `json:"added"`
	Removed       int `json:"removed"`
	Changed       int `json:"changed"`
	Lifecycle     int `json:"lifecycle"`
	QuarantineIn  int `json:"quarantine_in"`
	QuarantineOut int `json:"quarantine_out"`
}

// genRecord is one kept generation as the manifest lists it.
type genRecord struct {
	Generation uint64    `json:"generation"`
	Digest     string    `json:"digest"`
	Published  time.Time `json:"published"`
	syncState
	Counts      map[string]int `json:"counts"`
	ByEffect    map[string]int `json:"by_effect"`
	Total       int            `json:"total"`
	Quarantined int            `json:"quarantined"`
	// Base and Deltas are file names in PATH.gens: the generation is the
	// base with the deltas applied in order.
	Base   string   `json:"base"`
	Deltas []string `json:"deltas,omitempty"`
	// Overlay is at most the number of keys the deltas touch together
	// (see overlay.size), Folded how many of them a reader folds into
	// memory at open (all of them but a merged first delta's stage ids;
	// a record written before merged deltas has none: Folded is set to
	// Overlay when it is read).
	Overlay int     `json:"overlay"`
	Folded  int     `json:"folded"`
	Changes Changes `json:"changes"`
	// Bytes is the size of the files this generation added (its delta, or
	// its base when it was compacted).
	Bytes int64 `json:"bytes"`

	// raw is the JSON a manifest holds for the record, once it was read
	// from or written to one (nil before). A record in a manifest is never
	// changed, so the next manifest copies raw instead of encoding the
	// record again, and a reader that finds the same bytes keeps the
	// record it decoded before (see readManifest).
	raw []byte
	// lazy marks a record read but not decoded yet: only Generation,
	// Published (but from a format-2 manifest), raw (unless archived) and
	// the fields below are set (see manifest.records).
	lazy bool
	// val is the record's entry in a format-3 manifest (see entry), once
	// it was read from or written to one (nil before); the next manifest
	// copies it, and a reader compares it.
	val []byte
	// archived says the record is in the archive file whose first record
	// is generation archive's, not in the manifest (see archiveOldest).
	archived bool
	archive  uint64
	// damaged marks a lazy record whose entry could not be read: it
	// fails when decoded, and a publish refuses the manifest.
	damaged bool
}

// files returns every data file the generation reads.
func (g *genRecord) files() []string { return append([]string{g.Base}, g.Deltas...) }

// gensFiles returns every file of PATH.gens the generation needs: the
// data files it reads, and the archive file that holds its record when
// it is archived.
func (g *genRecord) gensFiles() []string {
	if g.archived {
		return append(g.files(), archiveName(g.archive))
	}
	return g.files()
}

// manifest is the content of PATH: the kept generations, oldest first,
// the current one's number and the LtHash state of its content (from
// which the next generation's digest is computed in O(change)).
//
// Reading a manifest decodes the current generation's record only: the
// others are lazy until records is called (log, --at, resolve, publish),
// so that a process that reads the current generation never pays for
// the history the mirror keeps (a record's JSON takes ~30 µs to decode,
// and an hourly sync keeps 168 generations). Safe for concurrent use.
type manifest struct {
	current uint64
	state   lthash.State
	// version is the format the manifest was read in (FormatVersion for
	// one written here): format 2 has no archive files, and its entries
	// are the records alone.
	version uint32
	// opts opens archive files.
	opts Options
	// spans are the archived generations, oldest first, one archive file
	// each (see span.go); starts[i] is the position of spans[i]'s first
	// generation among the kept ones, narch how many the spans list. Set
	// them with setSpans.
	spans  []*span
	starts []int
	narch  int
	// gens are the records the manifest holds, oldest first (after every
	// span's), lazy but the current one's. A record is never changed once
	// a manifest holds it: manifests read one after the other share the
	// records they have in common.
	gens []*genRecord
	// path names the manifest in errors.
	path string

	histMu   sync.Mutex
	histDone atomic.Bool
	hist     []*genRecord // every kept generation's record, decoded, once histDone
}

// get returns the record of generation g, decoding the history first if
// g is not the current generation.
func (mf *manifest) get(g uint64) (*genRecord, bool, error) {
	i, ok := mf.index(g)
	if !ok {
		return nil, false, nil
	}
	if r := mf.at(i); !r.lazy {
		return r, true, nil
	}
	if recs, err := mf.records(); err == nil {
		return recs[i], true, nil
	}
	// Another generation's record cannot be read (an archive collected
	// since this manifest was read, a damaged entry): g's may be.
	d := *mf.at(i)
	if err := mf.decode(&d, archivesRead{}); err != nil {
		return nil, false, err
	}
	return &d, true, nil
}

// records returns every kept generation's record, decoded (the first
// call that succeeds decodes the lazy ones, reading their archive files;
// a failure is not kept, so a later call tries again). The slice is
// shared: do not modify it.
func (mf *manifest) records() ([]*genRecord, error) {
	if mf.histDone.Load() {
		return mf.hist, nil
	}
	mf.histMu.Lock()
	defer mf.histMu.Unlock()
	if mf.histDone.Load() {
		return mf.hist, nil
	}
	recs := make([]*genRecord, 0, mf.count())
	archives := archivesRead{}
	for _, sp := range mf.spans {
		dec, err := sp.records(mf, archives)
		if err != nil {
			return nil, err
		}
		recs = append(recs, dec...)
	}
	for _, g := range mf.gens {
		if g.lazy {
			d := *g
			if err := mf.decode(&d, archives); err != nil {
				return nil, err
			}
			g = &d
		}
		recs = append(recs, g)
	}
	mf.hist = recs
	mf.histDone.Store(true)
	return mf.hist, nil
}

// decode decodes the lazy record g in place, reading its archive file
// first when it is archived (archives holds the files read so far, by
// first generation).
func (mf *manifest) decode(g *genRecord, archives archivesRead) error {
	switch {
	case !g.lazy:
		return nil
	case g.damaged:
		return damagedManifest(mf.path, "generation entry %d", g.Generation)
	}
	raw := g.raw
	if g.archived {
		recs, ok := archives[g.archive]
		if !ok {
			var err error
			if recs, err = loadArchive(mf.path, g.archive, mf.opts); err != nil {
				return err
			}
			archives[g.archive] = recs
		}
		if raw = recs[g.Generation]; raw == nil {
			return damagedArchive(filepath.Join(gensDir(mf.path), archiveName(g.archive)), fmt.Errorf("it has no record of generation %d", g.Generation))
		}
	}
	d, err := decodeGenRecord(g.Generation, raw)
	// An archived generation's time is its archive entry's (format 3
	// on), whatever the manifest reading it: its record may be kept in
	// a span that other manifests share (see span.records).
	if err == nil && (mf.version >= 3 || g.archived) && !d.Published.Equal(g.Published) {
		err = fmt.Errorf("generation %d was published at %s, its entry says %s", g.Generation, d.Published, g.Published)
	}
	if err != nil {
		return damagedManifest(mf.path, "%v", err)
	}
	d.val, d.archived, d.archive = g.val, g.archived, g.archive
	*g = d
	return nil
}

// peek returns the record of generation n, which the manifest holds,
// as decoded as it is now, without decoding anything.
func (mf *manifest) peek(n uint64) (*genRecord, bool) {
	i, ok := mf.heldIndex(n)
	switch {
	case !ok:
		return nil, false
	case mf.histDone.Load():
		return mf.hist[mf.narch+i], true
	}
	return mf.gens[i], true
}

// damagedManifest is the error for a manifest that cannot be read.
func damagedManifest(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: the generation manifest is damaged (%s): move PATH aside and run `mirror sync` to rebuild the mirror", ErrCorrupt, path, fmt.Sprintf(format, args...))
}

// gensDir is the directory of a mirror's data files.
func gensDir(path string) string { return path + ".gens" }

func baseName(g uint64) string  { return fmt.Sprintf("g%020d.base", g) }
func deltaName(g uint64) string { return fmt.Sprintf("g%020d.delta", g) }

// isManifest reports whether the meta bucket of the file tx reads marks
// it as a manifest (format 2 or 3) rather than a snapshot.
func isManifest(tx *bolt.Tx) bool {
	b := tx.Bucket(bucketMeta)
	return b != nil && b.Get([]byte(metaManifest)) != nil
}

// readManifest reads the manifest tx holds, decoding the current
// generation's record (the others are lazy, see manifest). prev (nil:
// none) is a manifest read before: a record whose bytes are the same as
// there is taken from it as it is (decoded and checked, if it was), and
// so is a span, so that reading the manifest again after a publish
// decodes only what is new. The entries list generations in increasing
// order, archive entries first (a writer archives the oldest records);
// an entry that cannot be read fails the history only (see decode).
func readManifest(tx *bolt.Tx, path string, prev *manifest) (*manifest, error) {
	bad := func(format string, args ...any) error { return damagedManifest(path, format, args...) }
	b := tx.Bucket(bucketMeta)
	if string(b.Get([]byte(metaMagic))) != magic {
		return nil, bad("no noether-mirror marker")
	}
	mf := &manifest{path: path}
	var err error
	switch mf.version, err = formatVersion(b, path); {
	case errors.Is(err, errNoFormatVersion):
		return nil, bad("no format version")
	case err != nil:
		return nil, err
	}
	if prev != nil {
		mf.gens = make([]*genRecord, 0, len(prev.gens)+1)
	}
	var ok bool
	if mf.current, ok = u64(b.Get([]byte(metaCurrent))); !ok {
		return nil, bad("no current generation")
	}
	if !mf.state.Unmarshal(b.Get([]byte(metaLTHash))) {
		return nil, bad("no content hash")
	}
	gb := tx.Bucket(bucketGens)
	if gb == nil {
		return nil, bad("no generations")
	}
	var spans []*span
	err = gb.ForEach(func(k, v []byte) error {
		n, ok := u64(k)
		if !ok {
			return bad("generation entry %x", k)
		}
		if mf.version >= 3 && len(v) > 0 && v[0] == entryArchived {
			sp := prev.readSpan(n, v)
			switch {
			case len(mf.gens) == 0:
				spans = append(spans, sp)
			case sp.damaged: // one damaged entry among the records
				mf.gens = append(mf.gens, &genRecord{Generation: n, lazy: true, damaged: true})
			case !allDamaged(mf.gens): // a writer archives the oldest records
				return bad("the archive entry %d follows the record of generation %d", n, mf.gens[len(mf.gens)-1].Generation)
			default: // damaged entries among the archive entries
				for _, g := range mf.gens {
					spans = append(spans, damagedSpan(g.Generation))
				}
				spans, mf.gens = append(spans, sp), mf.gens[:0]
			}
			return nil
		}
		if err := mf.readRecordEntry(n, v, prev); err != nil {
			return bad("%v", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	mf.setSpans(spans)
	if err := mf.checkOrder(); err != nil {
		return nil, bad("%v", err)
	}
	if i, ok := mf.heldIndex(mf.current); !ok || mf.gens[i].lazy {
		return nil, bad("the current generation %d is not listed", mf.current)
	}
	return mf, nil
}

// readRecordEntry appends the record of generation n, whose entry is v,
// to mf.gens: prev's when prev read the same entry, else parsed (lazy but
// for the current generation's, which is decoded). A damaged entry of
// another generation becomes a damaged record: reads of the current
// generation go on, the history fails (see decode).
func (mf *manifest) readRecordEntry(n uint64, v []byte, prev *manifest) error {
	if prev != nil {
		if g, ok := prev.peek(n); ok && sameEntry(mf.version, g, v) && (!g.lazy || n != mf.current) {
			mf.gens = append(mf.gens, g)
			return nil
		}
	}
	g, err := parseEntry(mf.version, n, v)
	if err != nil && n != mf.current {
		g, err = genRecord{Generation: n, lazy: true, val: bytes.Clone(v), damaged: true}, nil
	}
	if err != nil {
		return err
	}
	if n == mf.current {
		if g.archived {
			return fmt.Errorf("the current generation %d is archived", n)
		}
		val := g.val
		if g, err = decodeGenRecord(n, g.raw); err != nil {
			return err
		}
		g.val = val
	}
	mf.gens = append(mf.gens, &g)
	return nil
}

// sameEntry reports whether g, read from a manifest of format version,
// was read from the entry v.
func sameEntry(version uint32, g *genRecord, v []byte) bool {
	if version >= 3 {
		return bytes.Equal(g.val, v)
	}
	return g.val == nil && bytes.Equal(g.raw, v)
}

// allDamaged reports whether every record of gens is a damaged entry's.
func allDamaged(gens []*genRecord) bool {
	for _, g := range gens {
		if !g.damaged {
			return false
		}
	}
	return true
}

// decodeGenRecord decodes and checks the record of generation n, which a
// manifest holds as v; the record keeps a copy of v.
func decodeGenRecord(n uint64, v []byte) (genRecord, error) {
	g := genRecord{Folded: -1}
	if json.Unmarshal(v, &g) != nil || g.Generation != n || g.Base == "" {
		return genRecord{}, fmt.Errorf("generation entry %d", n)
	}
	for _, f := range g.files() {
		if f != filepath.Base(f) || f == "." || f == ".." {
			return genRecord{}, fmt.Errorf("generation %d names file %q outside its directory", n, f)
		}
	}
	if g.Folded < 0 {
		g.Folded = g.Overlay
	}
	if g.Counts == nil {
		g.Counts = map[string]int{}
	}
	if g.ByEffect == nil {
		g.ByEffect = map[string]int{}
	}
	g.raw = bytes.Clone(v)
	return g, nil
}

// tempName returns a new name for a temporary file that will replace
// final, beside it, for a loader to create: its 64 random bits make a
// collision with another writer's (there is one at a time, but Create
// runs before the mirror exists) practically impossible, and a writer
// removes those a killed one left (removeTemps). Naming it instead of
// creating it with os.CreateTemp saves a file create and a reopen for
// every file a publish writes.
func tempName(final string) string {
	return fmt.Sprintf("%s.tmp-%016x", final, rand.Uint64())
}

// writeManifest writes mf to a temporary file next to path, fsyncs and
// checks it, and returns its name; the caller renames it over path.
func writeManifest(path string, mf *manifest, opts Options) (string, error) {
	tmp := tempName(path)
	if err := loadManifest(tmp, mf, opts); err != nil {
		os.Remove(tmp)
		return "", noSpace(fmt.Errorf("writing the generation manifest %s: %w", tmp, err), tmp, 0)
	}
	return tmp, nil
}

func loadManifest(name string, mf *manifest, opts Options) error {
	var fresh []int // records encoded here, which the check decodes
	err := writeSmallFile(name, opts, [][]byte{bucketGens, bucketMeta}, func(l boltfile.Loader) (err error) {
		fresh, err = mf.putEntries(l)
		return err
	}, metaEntry{metaCurrent, beUint64(mf.current)}, metaEntry{metaLTHash, mf.state.Marshal()}, metaEntry{metaManifest, []byte("1")})
	if err != nil {
		return err
	}
	return checkManifest(name, mf, fresh, opts)
}

// putEntries puts mf's entries into the gens bucket of l, in order: an
// archive entry a span, then a record entry a held generation. A record
// without its entry yet is replaced by a copy that has it (fresh lists
// the ones encoded here, by position in mf.gens).
func (mf *manifest) putEntries(l boltfile.Loader) (fresh []int, err error) {
	for _, sp := range mf.spans {
		if sp.damaged {
			return nil, fmt.Errorf("the entry of archive file %s is damaged", archiveName(sp.id))
		}
		if err := l.Put(bucketGens, beUint64(sp.id), sp.entry); err != nil {
			return nil, err
		}
	}
	for i, g := range mf.gens {
		if g.val == nil { // records are shared: a new one gets its entry
			if g.lazy { // from a format-2 manifest: no publish time yet
				return nil, fmt.Errorf("generation %d: writing a record not decoded", g.Generation)
			}
			c := *g
			if c.raw == nil {
				j, err := json.Marshal(&c)
				if err != nil {
					return nil, err
				}
				c.raw = j
				fresh = append(fresh, i)
			}
			c.val = c.entry()
			g, mf.gens[i] = &c, &c
		}
		if err := l.Put(bucketGens, beUint64(g.Generation), g.val); err != nil {
			return nil, err
		}
	}
	mf.version = FormatVersion
	return fresh, nil
}

// checkManifest fully checks the manifest loadManifest wrote at name
// from mf (fresh: the records it encoded).
func checkManifest(name string, mf *manifest, fresh []int, opts Options) error {
	return checkSmallFile(name, opts, func(tx *bolt.Tx) error {
		// Every record must read back as the bytes just written.
		got, err := readManifest(tx, name, mf)
		if err != nil {
			return err
		}
		if got.current != mf.current || len(got.spans) != len(mf.spans) || len(got.gens) != len(mf.gens) || !got.state.Equal(&mf.state) {
			return errors.New("the manifest reads back different")
		}
		for i, sp := range got.spans {
			if w := mf.spans[i]; sp.id != w.id || sp.damaged || !bytes.Equal(sp.entry, w.entry) {
				return fmt.Errorf("the archive entry %d reads back different", w.id)
			}
		}
		for i, g := range got.gens {
			if w := mf.gens[i]; g.Generation != w.Generation || !bytes.Equal(g.val, w.val) {
				return fmt.Errorf("generation %d reads back different", w.Generation)
			}
		}
		// Records taken from a manifest read before were checked there;
		// a new one is checked as a reader will check it.
		for _, i := range fresh {
			if _, err := decodeGenRecord(mf.gens[i].Generation, got.gens[i].val[entryHead:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// smallPageSize is the bbolt page size of manifests and deltas. Each
// bucket has a root page of its own, so a delta of one stage is about
// ten pages: 40 KiB at 4 KiB pages, 640 KiB at a base's 64 KiB. A record
// (about 5.4 KB) takes a leaf and an overflow page, 1.5x its bytes, which
// matters little in files that hold only what changed. Readers take the
// page size from the file.
const smallPageSize = 4 << 10

// writeSmallFile writes the small bbolt file name (a manifest, a delta or
// an archive file) with the given buckets, through the page writer or
// bbolt's transactions as opts says: fill puts every entry but meta's,
// bucket by bucket in key order; the meta bucket gets meta, the magic and
// the format version. The file is fsynced, and its mode 0644 (readers
// may run as other users); the caller checks it.
func writeSmallFile(name string, opts Options, buckets [][]byte, fill func(l boltfile.Loader) error, meta ...metaEntry) (err error) {
	var l boltfile.Loader
	if opts.BoltTransactions {
		l, err = boltfile.NewTxLoader(name, smallPageSize, buckets)
	} else {
		// Read back at once by the check, and by readers soon: through
		// the page cache, in small buffers.
		l, err = boltfile.NewPageLoaderWith(name, smallPageSize, buckets, boltfile.PageLoaderOptions{BufferBytes: 64 << 10})
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := fill(l); err != nil {
		return err
	}
	meta = append(meta, metaEntry{metaFormatVersion, binary.BigEndian.AppendUint32(nil, FormatVersion)}, metaEntry{metaMagic, []byte(magic)})
	slices.SortFunc(meta, func(a, b metaEntry) int { return strings.Compare(a.k, b.k) })
	if err := putMeta(l, meta); err != nil {
		return err
	}
	if err := l.Finish(); err != nil {
		return err
	}
	return os.Chmod(name, 0o644) // whatever the umask: readers may be other users
}

// putMeta puts entries, in key order, into l's meta bucket.
func putMeta(l boltfile.Loader, entries []metaEntry) error {
	for _, e := range entries {
		if err := l.Put(bucketMeta, []byte(e.k), e.v); err != nil {
			return err
		}
	}
	return nil
}

// checkSmallFile fully checks a manifest or delta just written, before
// anything can point at it: it opens as a reader opens it (root pages
// first), every page is read under the fault guard by check and by a
// walk of every bucket, and bbolt's consistency walk runs last.
func checkSmallFile(name string, opts Options, check func(tx *bolt.Tx) error) error {
	db, _, err := openChecked(name, opts, check)
	if err == nil {
		err = db.Close()
	}
	return err
}

// openChecked is checkSmallFile returning the file open, as a reader
// opens it, when it passes.
func openChecked(name string, opts Options, check func(tx *bolt.Tx) error) (*bolt.DB, os.FileInfo, error) {
	db, fi, err := openBoltFile(name, opts)
	if err != nil {
		return nil, nil, err
	}
	if err := checkOpen(db, name, check); err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, fi, nil
}

// checkOpen is what checkSmallFile checks of the file name, open as db.
func checkOpen(db *bolt.DB, name string, check func(tx *bolt.Tx) error) error {
	err := guarded(name, func() error {
		return db.View(func(tx *bolt.Tx) error {
			if err := check(tx); err != nil {
				return err
			}
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				return b.ForEach(func(_, _ []byte) error { return nil })
			})
		})
	})
	if err != nil {
		return fmt.Errorf("%w: %s just written: %v", ErrCorrupt, name, err)
	}
	if err := db.View(boltfile.CheckTrees); err != nil {
		return fmt.Errorf("%w: %s just written: %v", ErrCorrupt, name, err)
	}
	return nil
}
