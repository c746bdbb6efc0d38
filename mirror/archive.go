package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
)

// A manifest lists every kept generation, but it holds the record (its
// JSON) of the newest ones only. The records of older generations move,
// archiveLen at a time, into immutable archive files in PATH.gens, and
// one archive entry of the manifest lists a file's generations with
// their publish times (all the keep policy reads). A publish then writes
// 16 bytes of manifest per older generation instead of its record, and
// an archive file once every archiveLen publishes. See FORMAT.md.

// archiveLen is how many records an archive file holds: a manifest holds
// the records of at most 2×archiveLen generations, then the oldest
// archiveLen of them move into a new archive file.
const archiveLen = 64

// Manifest entries (format 3), under bucket gens:
//   - a record entry, keyed by its generation: entryRecord, the
//     generation's publish time (Unix nanoseconds, int64 big-endian; noTime
//     for none), then the record's JSON;
//   - an archive entry, keyed by the first generation of an archive file
//     (which names it): entryArchived, then for each generation the
//     manifest keeps whose record the file holds, in order, its number
//     (uint64 big-endian) and its publish time (as above).
//
// A format-2 manifest's entries are the JSON alone, one a generation.
const (
	entryRecord   byte = 1
	entryArchived byte = 2
	entryHead          = 9 // a record entry's bytes before the JSON
	archivedLen        = 16
)

// metaArchive marks an archive file.
const metaArchive = "archive"

// archiveName is the name in PATH.gens of the archive file whose first
// record is generation g's.
func archiveName(g uint64) string { return fmt.Sprintf("g%020d.archive", g) }

// noTime stands for a zero publish time in an entry (a generation
// upgraded from a format-1 file that recorded none), which UnixNano
// cannot represent.
const noTime = math.MinInt64

// unixTime is t as an entry holds it: Unix nanoseconds, noTime for none.
func unixTime(t time.Time) int64 {
	if t.IsZero() {
		return noTime
	}
	return t.UnixNano()
}

// fromUnix is the publish time an entry's n stands for (see unixTime).
func fromUnix(n int64) time.Time {
	if n == noTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func appendTime(v []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(v, uint64(unixTime(t)))
}

func parseTime(v []byte) time.Time { return fromUnix(int64(binary.BigEndian.Uint64(v))) }

// entry encodes the record entry of g, which the manifest holds.
func (g *genRecord) entry() []byte {
	v := make([]byte, 1, entryHead+len(g.raw))
	v[0] = entryRecord
	return append(appendTime(v, g.Published), g.raw...)
}

// parseEntry reads the record entry v of generation n in a manifest of
// format version: a lazy record (see manifest).
func parseEntry(version uint32, n uint64, v []byte) (genRecord, error) {
	if version < 3 {
		return genRecord{Generation: n, raw: bytes.Clone(v), lazy: true}, nil
	}
	if len(v) < entryHead || v[0] != entryRecord {
		return genRecord{}, fmt.Errorf("generation entry %d is damaged", n)
	}
	g := genRecord{Generation: n, lazy: true, val: bytes.Clone(v), Published: parseTime(v[1:])}
	g.raw = g.val[entryHead:]
	return g, nil
}

// archiveOldest moves the records of the oldest archiveLen generations mf
// holds into a new archive file, written, fsynced and checked in dir,
// when mf holds more than 2×archiveLen: a new span lists them, as a
// reader of the manifest finds them (one archive entry). It returns the
// file's path ("": none written). The caller makes dir durable before mf
// can name the file.
func archiveOldest(dir string, mf *manifest, opts Options) (string, error) {
	if len(mf.gens) <= 2*archiveLen {
		return "", nil
	}
	batch := mf.gens[:archiveLen]
	first := batch[0].Generation
	final := filepath.Join(dir, archiveName(first))
	tmp := tempName(final)
	err := writeArchive(tmp, batch, opts)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return "", noSpace(fmt.Errorf("writing the archive of generations %d to %d, %s: %w", first, batch[len(batch)-1].Generation, final, err), tmp, 0)
	}
	stamps := make([]stamp, len(batch))
	for i, g := range batch {
		stamps[i] = stampOf(g)
	}
	mf.setSpans(append(slices.Clip(mf.spans), newSpan(first, stamps)))
	mf.gens = mf.gens[archiveLen:]
	return final, nil
}

// writeArchive writes the records of batch to the archive file name, and
// checks that it reads them back.
func writeArchive(name string, batch []*genRecord, opts Options) error {
	err := writeSmallFile(name, opts, [][]byte{bucketGens, bucketMeta}, func(l boltfile.Loader) error {
		for _, g := range batch {
			if g.raw == nil {
				return fmt.Errorf("generation %d has no record to archive", g.Generation)
			}
			if err := l.Put(bucketGens, beUint64(g.Generation), g.raw); err != nil {
				return err
			}
		}
		return nil
	}, metaEntry{metaArchive, []byte("1")})
	if err != nil {
		return err
	}
	return checkSmallFile(name, opts, func(tx *bolt.Tx) error {
		got, err := readArchive(tx, name)
		if err != nil {
			return err
		}
		if len(got) != len(batch) {
			return fmt.Errorf("it reads back %d records, want %d", len(got), len(batch))
		}
		for _, g := range batch {
			if !bytes.Equal(got[g.Generation], g.raw) {
				return fmt.Errorf("generation %d reads back different", g.Generation)
			}
		}
		return nil
	})
}

// readArchive returns the records the archive file in tx (read from
// path) holds, by generation, copied out of the file.
func readArchive(tx *bolt.Tx, path string) (map[uint64][]byte, error) {
	meta, gb := tx.Bucket(bucketMeta), tx.Bucket(bucketGens)
	if meta == nil || gb == nil || string(meta.Get([]byte(metaMagic))) != magic || meta.Get([]byte(metaArchive)) == nil {
		return nil, errors.New("not a noether-mirror archive file")
	}
	if _, err := formatVersion(meta, path); err != nil {
		return nil, err
	}
	recs := map[uint64][]byte{}
	err := gb.ForEach(func(k, v []byte) error {
		n, ok := u64(k)
		if !ok {
			return fmt.Errorf("generation key %x", k)
		}
		recs[n] = bytes.Clone(v)
		return nil
	})
	return recs, err
}

// checkArchives reads every archive file mf names from disk and checks
// that it holds a record, which decodes, of every generation mf lists in
// it.
func (mf *manifest) checkArchives() error {
	archives := archivesRead{}
	for _, sp := range mf.spans {
		for k := range sp.gens {
			if err := mf.decode(sp.stub(k), archives); err != nil {
				return err
			}
		}
	}
	return nil
}

// archivesRead holds the archive files a walk of the history read so
// far, by first generation (the file's name): each file's records, by
// generation. It belongs to one goroutine (see manifest.decode).
type archivesRead map[uint64]map[uint64][]byte

// errArchiveGone marks an archive file a manifest names that is not
// there.
var errArchiveGone = errors.New("an archive file of the manifest is missing")

// loadArchive reads the archive file of the mirror at path whose first
// record is generation first's. A missing file wraps ErrGenerationGone:
// a writer removes one only once the keep policy dropped all its
// generations, after a manifest that no longer names it, so a reader of
// an older manifest meets that (and reloads).
func loadArchive(path string, first uint64, opts Options) (map[uint64][]byte, error) {
	name := filepath.Join(gensDir(path), archiveName(first))
	db, _, err := openBoltFile(name, opts)
	if errors.Is(err, ErrNoMirror) { // not there
		return nil, fmt.Errorf("%w: %w: %s: the generations from %d it recorded were collected since the manifest was read (reload and retry), or it was lost: "+
			"the current generation is not affected, and `mirror gc --keep N --keep-within none`, with N small enough to drop generation %d, drops them from the history",
			ErrGenerationGone, errArchiveGone, name, first, first)
	}
	if err != nil {
		return nil, damagedArchive(name, err)
	}
	defer db.Close()
	var recs map[uint64][]byte
	err = guarded(name, func() error {
		return db.View(func(tx *bolt.Tx) (err error) {
			recs, err = readArchive(tx, name)
			return err
		})
	})
	if err != nil && !errors.Is(err, ErrFormatVersion) {
		return nil, damagedArchive(name, err)
	}
	return recs, err
}

// damagedArchive is the error for the archive file name that cannot be
// read because of err.
func damagedArchive(name string, err error) error {
	why := strings.TrimSuffix(err.Error(), ": "+corruptAdvice) // that advice is for a data file
	return fmt.Errorf("%w: archive file %s, which holds the records of older generations, is damaged (%s): "+
		"the current generation is not affected; `mirror gc --keep N --keep-within none`, with N small enough to drop the generations it records, drops them from the history",
		ErrCorrupt, name, why)
}

// archiveMemo remembers the archive file a writer read last, decoded.
// Once the history is full, every publish drops the oldest generation
// and reads the record of the oldest one it keeps (see sweepDropped),
// which lies in the same archive file publish after publish. An archive
// file never changes once a manifest names it, so the memo serves while
// the file at its name is still the one read: it holds that file open,
// so that no other file can take its inode, and compares (see sameFile).
// Safe for concurrent use; the zero value is empty; forget releases it.
type archiveMemo struct {
	mu   sync.Mutex
	id   uint64            // the file's first generation
	f    *os.File          // the file, open; nil: empty
	fi   os.FileInfo       // f's
	recs map[uint64][]byte // its records, by generation
}

// seed returns a map of archive files read (see manifest.decode) that
// holds the memo's file, when the mirror at path still has that file.
func (a *archiveMemo) seed(path string) archivesRead {
	a.mu.Lock()
	defer a.mu.Unlock()
	archives := archivesRead{}
	if a.f == nil {
		return archives
	}
	if fi, err := os.Stat(filepath.Join(gensDir(path), archiveName(a.id))); err == nil && sameFile(a.fi, fi) {
		archives[a.id] = a.recs
	} else {
		a.forgetLocked()
	}
	return archives
}

// remember makes the archive file id of the mirror at path, as archives
// holds it, the memo's. Call it under the writer lock, which keeps the
// file from being replaced between its read and this.
func (a *archiveMemo) remember(path string, id uint64, archives archivesRead) {
	recs, ok := archives[id]
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil && a.id == id {
		return
	}
	a.forgetLocked()
	f, err := os.Open(filepath.Join(gensDir(path), archiveName(id)))
	if err != nil {
		return
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return
	}
	a.id, a.f, a.fi, a.recs = id, f, fi, recs
}

// forget empties the memo.
func (a *archiveMemo) forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forgetLocked()
}

func (a *archiveMemo) forgetLocked() {
	if a.f != nil {
		a.f.Close()
	}
	a.id, a.f, a.fi, a.recs = 0, nil, nil, nil
}
