// Package mirror is noether-mirror's on-disk store: an offline copy of a
// noether stage registry kept in bbolt files, readable by any number of
// processes while one writer at a time prepares the next version.
//
// A mirror is a sequence of generations. The file at PATH is a manifest
// listing the kept ones; each is a base snapshot plus the deltas a publish
// wrote over it, immutable files in PATH.gens that nobody opens
// read-write. A writer (Mirror.BeginSync or Mirror.BeginLocal) stages
// into PATH.next, then Publish writes only what changed (a delta, or now
// and then a compacted base) and renames a new manifest over PATH.
// Readers keep the generation they opened until they let go; a Mirror
// notices a new manifest on its next read (at most
// Options.ReloadInterval later) without being reopened, and
// Mirror.SnapshotAt pins any kept generation. See FORMAT.md.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/store"
)

// Options configures Open and Create. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds how long opening a bbolt file may wait for its
	// file lock; 0 means 2s. Opening never blocks forever.
	LockTimeout time.Duration
	// ReloadInterval is how often, at most, reads check PATH for a newer
	// snapshot: 0 means 250ms, a negative value means on every read.
	ReloadInterval time.Duration
	// Logger receives warnings (automatic deprecations, discarded staging
	// files, failed reloads); nil discards them.
	Logger *slog.Logger
	// Trust, when set, is the trust policy of the admission gate
	// (Writer.Admit): a stage not signed by one of its keys never enters
	// the mirror. It applies to every write through this Mirror: sync,
	// local edits, bundle import, RemoteStageStore.GetLive.
	Trust *store.TrustPolicy
	// StdlibEd25519 makes the admission gate and Verify check signatures
	// with crypto/ed25519 alone instead of store.Verifier's tables (same
	// results, slower): for auditing, or a suspected bug in the fast path.
	StdlibEd25519 bool
	// BoltTransactions makes Publish write each new snapshot through
	// bbolt's own transactions instead of the sequential page writer:
	// slower (a publish of 10k stages took 1.8× as long, BENCHMARKS.md),
	// for when the hand-written writer is suspected. The file holds the
	// same entries, meta and digest, and passes the same full check
	// before it is published; readers cannot tell the difference.
	BoltTransactions bool
	// MaxOverlay bounds how many stage ids and quarantine keys the deltas
	// a reader folds into memory when it opens a generation may touch
	// together (a few hundred bytes a key, and the time to read them): a
	// publish that would pass it merges the chain into one merged delta,
	// which readers look up on disk instead. 0 means 4096, or 1/64 of
	// the stages when that is more, and at most half the stages.
	MaxOverlay int
	// MaxMerged bounds how many stage ids and quarantine keys all the
	// deltas over a base may touch together: a publish that would pass
	// it compacts the generation into a new base, which writes the whole
	// mirror. 0 means 1/8 of the stages up to 65,536 (at least
	// MaxOverlay), or MaxOverlay when only that is set.
	MaxMerged int
	// MaxLayers bounds the number of deltas over a base: a publish that
	// would pass it first merges the chain into one merged delta; later
	// ones merge the chain's newest deltas into the delta they write,
	// while the delta before them holds at most twice as many keys (so a
	// chain with a merged delta has at least two). 0 means 8.
	MaxLayers int
	// Keep is the history every publish (and GC) keeps; the zero value
	// keeps the last 30 generations and those of the last 7 days.
	Keep KeepPolicy

	// changeBytes replaces maxChangeBytes when set (tests).
	changeBytes int
}

// newVerifier returns the signature verifier the options ask for.
func (m *Mirror) newVerifier() *store.Verifier {
	if m.opts.StdlibEd25519 {
		return store.NewStdlibVerifier()
	}
	return store.NewVerifier()
}

func (o Options) normalized() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 2 * time.Second
	}
	if o.ReloadInterval == 0 {
		o.ReloadInterval = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Mirror is an open mirror. Reads come from the current published
// snapshot, which it replaces with a newer one when one appears. A Mirror
// is safe for concurrent use by multiple goroutines; Close releases it
// (snapshots pinned with Snapshot stay readable until they are closed).
type Mirror struct {
	path string
	opts Options
	log  *slog.Logger

	mu     sync.RWMutex
	cur    *snap // nil once closed
	closed bool

	reloadMu  sync.Mutex
	nextCheck atomic.Int64 // unix nanos of the next staleness check
	handed    *handoff     // under reloadMu: see handOver

	writeMu sync.Mutex // serialises this Mirror's own local writes

	// archives is the archive file the writer read last: see
	// sweepDropped.
	archives archiveMemo

	// rule is the admission rule, store.Admit. Only this package's tests
	// replace it: the storetest suites generate stages with random ids
	// to test store semantics, and the gate has tests of its own.
	rule func(s *store.Stage, rep store.Report, trust *store.TrustPolicy) error
}

var (
	_ store.StageStore    = (*Mirror)(nil)
	_ store.PrefixScanner = (*Mirror)(nil)
)

// snap is one open generation (or format-1 snapshot file), reference
// counted: the Mirror holds one reference while it is current and every
// reader in flight holds one. When the count drops to zero it releases
// its data files, which close when no other snap shares them.
type snap struct {
	file *dataFile   // the base file (or a format-1 file), shared
	db   *bolt.DB    // file.db
	meta Meta        // the generation's
	fi   os.FileInfo // PATH as it was just before the open (after this process published it: just after its rename)
	refs atomic.Int64

	// base is the base file's own meta: its counts size the position
	// buckets. ov is what the generation's deltas change in it, nil when
	// the generation is its base. mf is the manifest the generation was
	// opened from (nil for a format-1 file), gen its record there.
	base Meta
	ov   *overlay
	mf   *manifest
	gen  *genRecord

	// The freshness sidecar, re-read at most every scEvery: Meta runs on
	// every request of a server, and the sidecar only changes when a sync
	// ends (at the pace snapshots are reloaded anyway).
	scMu    sync.Mutex
	scEvery time.Duration
	scAt    time.Time
	scMeta  Meta
}

// metaWithSidecar is s.meta refined by the sidecar at path, cached for
// scEvery. A writer in this process calls forgetSidecar after writing it.
func (s *snap) metaWithSidecar(path string) Meta {
	s.scMu.Lock()
	defer s.scMu.Unlock()
	if s.scAt.IsZero() || time.Since(s.scAt) >= s.scEvery {
		s.scMeta, s.scAt = withSidecar(s.meta, path), time.Now()
	}
	return s.scMeta
}

// forgetSidecar makes the next metaWithSidecar read the sidecar again.
func (s *snap) forgetSidecar() {
	s.scMu.Lock()
	s.scAt = time.Time{}
	s.scMu.Unlock()
}

func (s *snap) release() {
	if s.refs.Add(-1) == 0 {
		s.file.release()
		s.ov.close()
	}
}

// Open opens the mirror at path for reading (and for local writes). It
// never creates or modifies anything. A missing file is ErrNoMirror; an
// empty, truncated, damaged or foreign file is ErrCorrupt; a file from a
// newer noether-mirror is ErrFormatVersion.
func Open(path string, opts Options) (*Mirror, error) {
	opts = opts.normalized()
	s, err := openSnap(path, opts, nil, nil)
	if err != nil {
		return nil, err
	}
	m := &Mirror{path: path, opts: opts, log: opts.Logger, cur: s, rule: store.Admit}
	m.nextCheck.Store(time.Now().Add(opts.ReloadInterval).UnixNano())
	return m, nil
}

// Create is Open, except that when path does not exist it first creates
// an empty mirror there (generation 0), atomically, making parent
// directories (0o755) as needed. An existing file is opened, never
// replaced. Creating is a write: where writes are unsupported (Windows)
// it fails with ErrWriteUnsupported, and only an existing mirror opens.
func Create(path string, opts Options) (*Mirror, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := createEmpty(path, opts.normalized()); err != nil {
			return nil, err
		}
	}
	return Open(path, opts)
}

func createEmpty(path string, opts Options) error {
	if err := checkWritable(path + ".lock"); err != nil {
		return err
	}
	dir := gensDir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the mirror directory %s: %w", dir, err)
	}
	final := filepath.Join(dir, baseName(0))
	tmp, res, err := compile(context.Background(), final, source{}, Meta{}, opts, 0)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("creating %s: %w", final, err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	rec := genRecord{Generation: 0, Digest: digestHex(&res.lt), Published: res.meta.Published,
		Counts: map[string]int{}, ByEffect: map[string]int{}, Base: baseName(0), Bytes: res.meta.SizeBytes}
	mtmp, err := writeManifest(path, &manifest{current: 0, state: res.lt, gens: []*genRecord{&rec}}, opts)
	if err != nil {
		return err
	}
	defer os.Remove(mtmp)
	// Link, unlike rename, fails if path appeared meanwhile: never clobber.
	if err := os.Link(mtmp, path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// openBoltFile opens the bbolt file at path read-only, with the checks
// every read of a mirror file starts with: a file (not a directory, not
// empty), a bbolt file, not locked read-write by someone else, and its
// root pages sound (boltfile.CheckRoots) before any bucket is read. fi is
// the file as opened.
func openBoltFile(path string, opts Options) (db *bolt.DB, fi os.FileInfo, err error) {
	fi, err = os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("%w at %s: run `mirror sync` first (or pass --db)", ErrNoMirror, path)
	case err != nil:
		return nil, nil, fmt.Errorf("opening mirror %s: %w", path, err)
	case fi.IsDir():
		return nil, nil, fmt.Errorf("%w: %s is a directory, not a mirror file: pass the file path with --db", ErrCorrupt, path)
	case fi.Size() == 0:
		return nil, nil, fmt.Errorf("%w: %s is empty: remove it and run `mirror sync` to rebuild the mirror", ErrCorrupt, path)
	}
	err = guarded(path, func() error {
		var file *os.File // the file bbolt opened, whatever path points to by now
		var err error
		db, err = bolt.Open(path, 0o444, &bolt.Options{
			ReadOnly:     true,
			Timeout:      opts.LockTimeout,
			FreelistType: bolt.FreelistMapType,
			OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
				f, err := os.OpenFile(name, flag, perm)
				file = f
				return f, err
			},
		})
		if err != nil {
			if errors.Is(err, berrors.ErrTimeout) {
				return fmt.Errorf("%w: %s is locked read-write by another process (not noether-mirror's snapshot protocol); waited %s: stop that process", ErrBusy, path, opts.LockTimeout)
			}
			return corruptf(path, "not a readable bbolt file: %v", err)
		}
		// Before any bucket is read: see boltfile.CheckRoots.
		if fi, err = file.Stat(); err == nil {
			err = boltfile.CheckRoots(file, fi.Size(), pageSize)
		}
		if err == nil {
			err = db.View(func(tx *bolt.Tx) error {
				if tx.Size() > fi.Size() {
					return fmt.Errorf("truncated: %d bytes, the database needs %d", fi.Size(), tx.Size())
				}
				return nil
			})
		}
		if err != nil {
			_ = db.Close()
			db = nil
			return corruptf(path, "%v", err)
		}
		return nil
	})
	if err != nil && db != nil {
		_ = db.Close()
	}
	if err != nil {
		return nil, nil, err
	}
	return db, fi, nil
}

// guarded runs fn with memory faults turned into panics, and any panic
// (bbolt panics on some damaged pages) into ErrCorrupt naming path.
func guarded(path string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptf(path, "reading it panicked: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// openSnap opens what PATH holds now: the current generation of a
// mirror with generations (its manifest, base and deltas), or a format-1
// snapshot file as it is. prev (nil: none) is a snapshot the caller
// holds, opened before from the same PATH: what the new one has in
// common with it (manifest records, data files, the fold of its deltas)
// is taken from it instead of being read again. h (nil: none) is what
// this process's writer handed over for PATH as it is now: its manifest
// is not read again, nor its data files opened.
func openSnap(path string, opts Options, prev *snap, h *handoff) (*snap, error) {
	if h != nil {
		s, err := openGenWith(path, h.mf, h.mf.current, opts, prev, h.files)
		if err == nil {
			s.fi = h.fi
			return s, nil
		}
		// What the writer handed over is what PATH holds: read it to say
		// what is wrong.
	}
	// A writer may collect the files of the generation a manifest named
	// between our read of the manifest and our open of them; by then a
	// newer manifest is at PATH, so read it again.
	for attempt := 1; ; attempt++ {
		s, err := openSnapOnce(path, opts, prev)
		if err == nil || attempt == 3 || !errors.Is(err, errDataFileGone) {
			return s, err
		}
	}
}

func openSnapOnce(path string, opts Options, prev *snap) (*snap, error) {
	db, fi, err := openBoltFile(path, opts)
	if err != nil {
		return nil, err
	}
	var mf, prevMf *manifest
	if prev != nil {
		prevMf = prev.mf
	}
	err = guarded(path, func() error {
		return db.View(func(tx *bolt.Tx) error {
			if !isManifest(tx) {
				return nil
			}
			var err error
			mf, err = readManifest(tx, path, prevMf)
			return err
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	if mf == nil {
		return fileSnap(newDataFile(path, db, fi), opts)
	}
	_ = db.Close()
	mf.opts = opts
	s, err := openGen(path, mf, mf.current, opts, prev)
	if err != nil {
		return nil, err
	}
	s.fi = fi
	return s, nil
}

// openFile opens one snapshot file (a base, or a format-1 mirror) alone.
func openFile(path string, opts Options) (*snap, error) {
	f, err := openDataFile(path, opts)
	if err != nil {
		return nil, err
	}
	return fileSnap(f, opts)
}

// fileSnap is the snapshot of one open snapshot file; it takes over the
// caller's reference to f, which it releases on error.
func fileSnap(f *dataFile, opts Options) (*snap, error) {
	s := &snap{file: f, db: f.db, fi: f.fi, scEvery: max(opts.ReloadInterval, 0)}
	err := guarded(f.path, func() error {
		return f.db.View(func(tx *bolt.Tx) error {
			var err error
			s.meta, err = readMeta(tx, f.path)
			return err
		})
	})
	if err != nil {
		f.release()
		return nil, err
	}
	s.meta.SizeBytes = f.fi.Size()
	s.base = s.meta
	s.refs.Store(1)
	return s, nil
}

// checkBoltFile checks the root pages of the bbolt file at path (see
// boltfile.CheckRoots) before any of its buckets is read.
func checkBoltFile(path string) error { return boltfile.CheckFile(path, pageSize) }

func corruptf(path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %s", ErrCorrupt, path, fmt.Sprintf(format, args...), corruptAdvice)
}

// corruptAdvice ends corruptf's errors: what to do about a damaged data
// file.
const corruptAdvice = "move it aside and run `mirror sync` to rebuild it (or `mirror verify` for details)"

// dir is the mirror's directory, where its scratch files go.
func (m *Mirror) dir() string { return filepath.Dir(m.path) }

// Path returns the mirror's file path as given to Open.
func (m *Mirror) Path() string { return m.path }

// Close releases the Mirror. Snapshots still pinned stay usable until
// they are closed. Close is idempotent.
func (m *Mirror) Close() error {
	m.archives.forget()
	m.mu.Lock()
	cur := m.cur
	m.cur, m.closed = nil, true
	m.mu.Unlock()
	if cur != nil {
		cur.release()
	}
	m.reloadMu.Lock()
	h := m.handed
	m.handed = nil
	m.reloadMu.Unlock()
	h.release()
	return nil
}

// acquire returns the current snapshot with a reference the caller must
// release, first switching to a newer published file if one is due.
func (m *Mirror) acquire() (*snap, error) {
	if m.opts.ReloadInterval < 0 || time.Now().UnixNano() >= m.nextCheck.Load() {
		if _, err := m.reload(false); err != nil && !errors.Is(err, ErrClosed) {
			m.log.Warn("mirror: keeping the current snapshot: the published file could not be opened", "path", m.path, "err", err)
		}
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cur == nil {
		return nil, fmt.Errorf("%w: mirror %s", ErrClosed, m.path)
	}
	m.cur.refs.Add(1)
	return m.cur, nil
}

// Reload switches to a newer published snapshot now, if there is one, and
// reports whether it did. Readers in flight keep the snapshot they have.
func (m *Mirror) Reload() (changed bool, err error) { return m.reload(true) }

func (m *Mirror) reload(force bool) (bool, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	now := time.Now()
	if !force && m.opts.ReloadInterval >= 0 && now.UnixNano() < m.nextCheck.Load() {
		return false, nil // another goroutine just checked
	}
	m.nextCheck.Store(now.Add(m.opts.ReloadInterval).UnixNano())
	m.mu.RLock()
	cur := m.cur
	if cur != nil {
		cur.refs.Add(1) // held while the next one reuses its files
	}
	m.mu.RUnlock()
	if cur == nil {
		return false, fmt.Errorf("%w: mirror %s", ErrClosed, m.path)
	}
	defer cur.release()
	fi, err := os.Stat(m.path)
	if err != nil {
		return false, fmt.Errorf("checking %s for a newer snapshot: %w", m.path, err)
	}
	h := m.takeHandoff(fi)
	defer h.release()
	if sameFile(fi, cur.fi) {
		return false, nil
	}
	next, err := openSnap(m.path, m.opts, cur, h)
	if err != nil {
		return false, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		next.release()
		return false, fmt.Errorf("%w: mirror %s", ErrClosed, m.path)
	}
	old := m.cur
	m.cur = next
	m.mu.Unlock()
	old.release()
	return true, nil
}

// sameFile reports whether a and b describe the same file, unchanged:
// what tells a reader PATH still is the manifest it read.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Meta describes the current snapshot, with the last sync time from the
// PATH.state sidecar when a later sync confirmed it unchanged.
func (m *Mirror) Meta() Meta {
	s, err := m.acquire()
	if err != nil {
		return Meta{Path: m.path}
	}
	defer s.release()
	return s.metaWithSidecar(m.path)
}

// Snapshot pins the current snapshot: every read through it sees the same
// content, whatever is published meanwhile. It is safe for concurrent use;
// Close it when done (the file stays open until then).
func (m *Mirror) Snapshot() (*Snapshot, error) {
	s, err := m.acquire()
	if err != nil {
		return nil, err
	}
	return &Snapshot{s: s, path: m.path}, nil
}

// syncDir fsyncs a directory so a rename or link in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
