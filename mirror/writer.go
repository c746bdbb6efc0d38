package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/mirror/internal/scratch"

	"github.com/noether-mirror/mirror/store"
)

// Writer prepares the next generation in the staging file PATH.next while
// holding the mirror's writer lock (PATH.lock). Readers are never blocked.
// A sync and a local edit stage the same way: changed stages go to an
// append-only log, removals to their own buckets, and Publish writes what
// differs from the current generation.
// A Writer is not safe for concurrent use, with one exception: Staged may
// run on any goroutines while one other call (say PutBatch) is running.
// Always end it with Publish or Abort; after a failed Publish, call Abort.
type Writer struct {
	m    *Mirror
	lock *os.File
	db   *bolt.DB
	base *snap // the published snapshot when the writer began
	// verifier checks signatures for the admission gate; redact, if set,
	// cleans the text of its refusals (see RedactWith).
	verifier *store.Verifier
	redact   func(string) string
	mode     string
	// log indexes the staged stages (see stageLog).
	log *stageLog
	// written holds the data files Publish wrote, open (a reference
	// each), until it hands them to the reload that follows (see
	// Mirror.handOver) or releases them.
	written []*dataFile
	// sigs indexes a local writer's staged stages by signature id, for
	// the Active-per-signature invariant; nil for a sync.
	sigs map[store.SignatureID]map[store.StageID]bool
	// synced is when a sync's staging file was last fsynced.
	synced   time.Time
	resumed  bool
	progress []byte
	done     bool
}

// Staging modes, stored in the staging file's writer bucket. Both stage
// into the same append-only log (stageLog); only a sync's is resumed.
// (Mode "sync" was the id-keyed layout, and "local" a copy of the whole
// snapshot, of earlier versions: such a file is only discarded.)
const (
	modeSync  = "sync-log"
	modeLocal = "local-log"
)

// stagingSyncInterval is how often a sync's staging file is fsynced. Each
// page still commits in its own transaction, and a killed process loses
// nothing committed (the data is in the page cache). A power loss may lose
// the last second of pages, or leave a torn file, which resume detects
// (see stageLog.load) and discards. An fsync per page cost a 100k-stage
// sync about 6 s.
const stagingSyncInterval = time.Second

// Writer bucket keys.
var (
	wkMode     = []byte("mode")
	wkProgress = []byte("progress")
	// wkRetain, when present, means what is not staged stays as the
	// current generation has it (less the removed buckets); when absent,
	// the staged content replaces the mirror's (an import). A local
	// writer starts with it; Fill sets it.
	wkRetain = []byte("retain")
)

func (m *Mirror) lockPath() string { return m.path + ".lock" }
func (m *Mirror) nextPath() string { return m.path + ".next" }

// BeginSync starts a writer for a sync: the staging file starts empty, or
// resumes the PATH.next a killed sync left (then Resumed reports true and
// Progress returns what that sync saved). Another writer anywhere gives
// ErrBusy at once.
func (m *Mirror) BeginSync(ctx context.Context) (*Writer, error) {
	return m.begin(ctx, modeSync)
}

// BeginLocal starts a writer for local edits (Put, Upsert, Remove,
// UpdateLifecycle): what it does not touch stays as the current
// generation has it. Another writer anywhere gives ErrBusy at once. A
// staging file a killed sync left behind is discarded.
func (m *Mirror) BeginLocal(ctx context.Context) (*Writer, error) {
	return m.begin(ctx, modeLocal)
}

func (m *Mirror) begin(ctx context.Context, mode string) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lock, stale, err := lockFile(m.lockPath())
	if err != nil {
		return nil, err
	}
	w := &Writer{m: m, lock: lock, mode: mode, verifier: m.newVerifier()}
	if err := w.start(stale); err != nil {
		w.release()
		return nil, err
	}
	return w, nil
}

// start prepares a new writer's staging file: a killed sync's, resumed,
// or a fresh one, first removing what a writer that did not release the
// lock (stale: see lockFile) left: temporary files, and data files no
// kept generation reads. On error a fresh staging file is removed again;
// the caller releases the writer.
func (w *Writer) start(stale bool) error {
	m := w.m
	if stale {
		m.removeTemps()
	}
	if _, err := m.Reload(); err != nil {
		return err
	}
	var err error
	if w.base, err = m.acquire(); err != nil {
		return err
	}
	if w.base.mf == nil {
		if err := w.upgrade(); err != nil {
			return err
		}
	} else if stale {
		// A killed publish may have renamed data files into place whose
		// manifest never followed.
		if _, err := m.sweep(w.base.mf); err != nil {
			m.log.Warn("mirror: could not remove what an interrupted writer left", "dir", gensDir(m.path), "err", err)
		}
	}
	next := m.nextPath()
	if w.mode == modeSync {
		if ok := w.resume(); ok {
			return nil
		}
	} else if _, err := os.Stat(next); err == nil {
		m.log.Warn("mirror: discarding the staging file of an interrupted sync for a local write", "path", next)
	}
	if err := os.Remove(next); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing old staging file %s: %w", next, err)
	}
	if err := w.createStaging(); err != nil {
		w.closeStaging()
		os.Remove(next)
		return err
	}
	return nil
}

// createStaging makes a fresh staging file and its log index.
func (w *Writer) createStaging() error {
	m, next := w.m, w.m.nextPath()
	if err := w.initStaging(); err != nil {
		return noSpace(fmt.Errorf("creating the staging file %s: %w", next, err), next, w.baseSize())
	}
	if err := w.openStaging(true); err != nil {
		return noSpace(err, next, w.baseSize())
	}
	var err error
	if w.log, err = newStageLog(m.dir()); err != nil {
		return fmt.Errorf("starting the staging index: %w", err)
	}
	if w.mode == modeLocal {
		w.sigs = map[store.SignatureID]map[store.StageID]bool{}
	}
	w.synced = time.Now()
	return nil
}

// resume opens a staging file left by a killed sync; on any problem it is
// discarded (a fresh sync is always correct, only slower).
func (w *Writer) resume() bool {
	next := w.m.nextPath()
	if _, err := os.Stat(next); err != nil {
		return false
	}
	// A staging file is fsynced only now and then, so after a power loss
	// it may be torn: check what bbolt would trust before it opens it.
	if err := checkBoltFile(next); err != nil {
		w.m.log.Warn("mirror: discarding a damaged staging file", "path", next, "err", err)
		return false
	}
	if err := w.openStaging(false); err != nil {
		w.m.log.Warn("mirror: discarding an unreadable staging file", "path", next, "err", err)
		return false
	}
	var mode string
	err := w.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWriter)
		if b == nil {
			return errors.New("no writer bucket")
		}
		mode = string(b.Get(wkMode))
		w.progress = bytes.Clone(b.Get(wkProgress))
		return nil
	})
	if err == nil && mode == modeSync {
		if w.log, err = newStageLog(w.m.dir()); err == nil {
			if err = w.log.load(w.db); err != nil {
				err = fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
		}
	}
	if err != nil || mode != modeSync {
		w.m.log.Warn("mirror: discarding a staging file that is not a resumable sync", "path", next, "mode", mode, "err", err)
		_ = w.db.Close()
		w.log.close()
		w.db, w.progress, w.log = nil, nil, nil
		return false
	}
	// What a killed run's Fill decided (removals, retain) was against the
	// listing of that run: this one lists again and fills again.
	if err := w.forgetFill(); err != nil {
		w.m.log.Warn("mirror: discarding a staging file whose removals cannot be reset", "path", next, "err", err)
		_ = w.db.Close()
		w.log.close()
		w.db, w.progress, w.log = nil, nil, nil
		return false
	}
	w.resumed = true
	w.synced = time.Now()
	return true
}

// initStaging writes an empty staging file with its buckets and mode.
// bbolt would fsync a file it creates; an empty staging file need not
// survive a crash, so the page writer lays it out without one (a local
// edit is a few milliseconds, and an fsync is one of them).
func (w *Writer) initStaging() (err error) {
	ps := w.stagingPageSize()
	l, err := boltfile.NewPageLoaderWith(w.m.nextPath(), ps, stagingBuckets(),
		boltfile.PageLoaderOptions{BufferBytes: 64 << 10, NoSync: true})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := l.Close(); err == nil {
			err = cerr
		}
	}()
	wb := []metaEntry{{string(wkMode), []byte(w.mode)}}
	if w.mode == modeLocal {
		wb = append(wb, metaEntry{string(wkRetain), []byte{}})
	}
	for _, e := range wb { // mode sorts before retain
		if err := l.Put(bucketWriter, []byte(e.k), e.v); err != nil {
			return err
		}
	}
	return l.Finish()
}

// stagingBuckets are the buckets of a staging file.
func stagingBuckets() [][]byte {
	return [][]byte{bucketLog, bucketQuarantine, bucketRemoved, bucketQRemoved, bucketWriter}
}

// forgetFill empties the staging file's removals and drops its retain
// mark, as before Fill.
func (w *Writer) forgetFill() error {
	return update(w.db, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRemoved, bucketQRemoved} {
			if tx.Bucket(b) == nil {
				continue
			}
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if wb := tx.Bucket(bucketWriter); wb != nil {
			return wb.Delete(wkRetain)
		}
		return nil
	})
}

// stagingPageSize is the page size of a new staging file. A sync's log
// only grows at its end, so the snapshot's 64 KiB pages suit it too: a
// commit writes about its own bytes and one more leaf. A local edit
// stages a few stages, for which an empty file of 64 KiB pages (a root
// page a bucket) already writes 600 KB: it takes a delta's 4 KiB pages.
func (w *Writer) stagingPageSize() int {
	if w.mode == modeLocal {
		return smallPageSize
	}
	return pageSize
}

// openStaging opens PATH.next read-write: fresh, as initStaging just
// wrote it, or a killed sync's, which it makes sure has the staging
// buckets.
func (w *Writer) openStaging(fresh bool) error {
	next := w.m.nextPath()
	db, err := bolt.Open(next, 0o644, &bolt.Options{
		Timeout:        w.m.opts.LockTimeout,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: false,
		// No fsync per commit: a sync fsyncs every stagingSyncInterval
		// (and when it stops), a local write is redone from scratch. Nor
		// when a commit grows the file (bbolt's default).
		NoSync:     true,
		NoGrowSync: true,
	})
	if err != nil {
		return fmt.Errorf("opening the staging file %s: %w", next, err)
	}
	if fresh {
		w.db = db
		return nil
	}
	err = update(db, func(tx *bolt.Tx) error {
		for _, b := range stagingBuckets()[:4] {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		wb, err := tx.CreateBucketIfNotExists(bucketWriter)
		if err != nil {
			return err
		}
		if wb.Get(wkMode) != nil {
			return nil
		}
		if w.mode == modeLocal {
			if err := wb.Put(wkRetain, []byte{}); err != nil {
				return err
			}
		}
		return wb.Put(wkMode, []byte(w.mode))
	})
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("preparing the staging file %s: %w", next, err)
	}
	w.db = db
	return nil
}

// update runs fn in a read-write transaction, turning a bbolt panic on a
// damaged staging file into an error.
func update(db *bolt.DB, fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: staging file %s: %v: abort and run the sync again", ErrCorrupt, db.Path(), r)
		}
	}()
	return db.Update(fn)
}

// removeTemps deletes snapshot and sidecar temporaries a killed writer
// left. Only the lock holder calls it, so none is in use.
func (m *Mirror) removeTemps() {
	for _, pat := range []string{m.path + ".tmp-*", sidecarPath(m.path) + ".tmp-*",
		filepath.Join(gensDir(m.path), "*.tmp-*"),
		// A scratch file is unlinked as soon as it is made; one is left
		// only if a writer died in between. (Another mirror's writer in
		// the same directory may be in between right now: its file
		// stays usable through its descriptor, only its own unlink fails.)
		// A compaction's are in PATH.gens.
		filepath.Join(m.dir(), scratch.Pattern), filepath.Join(gensDir(m.path), scratch.Pattern)} {
		names, _ := filepath.Glob(pat)
		for _, n := range names {
			if err := os.Remove(n); err == nil {
				m.log.Warn("mirror: removed a temporary file left by an interrupted writer", "path", n)
			}
		}
	}
}

// release closes the staging file and the base snapshot and drops the lock.
func (w *Writer) release() {
	w.closeStaging()
	w.log.close()
	if w.base != nil {
		w.base.release()
		w.base = nil
	}
	if w.lock != nil {
		_ = w.lock.Truncate(0)
		_ = w.lock.Close() // closing the descriptor releases the flock
		w.lock = nil
	}
	w.done = true
}

func (w *Writer) closeStaging() {
	if w.db != nil {
		_ = w.db.Close()
		w.db = nil
	}
}

func (w *Writer) check() error {
	if w.done {
		return fmt.Errorf("%w: writer for %s already published or aborted", ErrClosed, w.m.path)
	}
	return nil
}

// Resumed reports whether the writer resumed a staging file left by a
// killed sync.
func (w *Writer) Resumed() bool { return w.resumed }

// Progress returns the opaque state saved with the last committed
// PutBatch (nil if none), e.g. the page a resumed sync continues from.
func (w *Writer) Progress() []byte { return bytes.Clone(w.progress) }

// recordOf builds the record of a decoded stage.
func recordOf(s *store.Stage, rep store.Report) *Record {
	r := &Record{
		ID: s.ID, SignatureID: s.SignatureID, Name: s.Name, HasName: s.HasName,
		Lifecycle: s.Lifecycle, Raw: s.Raw, Unknown: s.Unknown, Report: rep,
	}
	for _, e := range s.Signature.Effects {
		r.Effects = append(r.Effects, e.DebugKey())
	}
	return r
}

// PutBatch stores entries and the caller's progress in ONE transaction
// (durable when it returns). Every entry must come from the writer's
// admission gate (Admit, AdmitStage): an admitted one is staged,
// replacing any stage with the same id; a refused one goes to quarantine,
// replacing a staged stage with its key (and vice versa). No lifecycle
// rule or invariant is applied (a sync mirrors what upstream says).
func (w *Writer) PutBatch(entries []Entry, progress []byte) error {
	if err := w.check(); err != nil {
		return err
	}
	if err := checkEntries(entries); err != nil {
		return err
	}
	now := time.Now().UTC()
	err := w.stage(func(st stagingTx) error {
		tx := st.tx
		for i := range entries {
			e := &entries[i]
			if e.Admitted() {
				if err := st.put(e.record()); err != nil {
					return err
				}
				if err := tx.Bucket(bucketQuarantine).Delete([]byte(e.ID())); err != nil {
					return err
				}
				if err := tx.Bucket(bucketRemoved).Delete([]byte(e.ID())); err != nil {
					return err
				}
				continue
			}
			key := e.QuarantineKey()
			q := QuarantineEntry{ID: key, Raw: e.raw, Reasons: e.reasons, FirstSeen: w.firstSeen(tx, key, e.raw, now)}
			if e.stage != nil {
				q.ID = string(e.stage.ID)
			}
			if err := tx.Bucket(bucketQuarantine).Put([]byte(key), encodeQuarantine([]byte(key), &q)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketQRemoved).Delete([]byte(key)); err != nil {
				return err
			}
			if err := st.delete(key); err != nil {
				return err
			}
		}
		wb := tx.Bucket(bucketWriter)
		if progress == nil {
			return wb.Delete(wkProgress)
		}
		return wb.Put(wkProgress, progress)
	})
	if err != nil {
		return noSpace(fmt.Errorf("staging a batch of %d stages in %s: %w", len(entries), w.m.nextPath(), err), w.m.nextPath(), w.baseSize())
	}
	if w.mode == modeSync && time.Since(w.synced) >= stagingSyncInterval {
		if err := w.syncStaging(); err != nil {
			return err
		}
	}
	w.progress = bytes.Clone(progress)
	return nil
}

// syncStaging fsyncs a sync's staging file.
func (w *Writer) syncStaging() error {
	if err := w.db.Sync(); err != nil {
		return fmt.Errorf("syncing the staging file %s: %w", w.m.nextPath(), err)
	}
	w.synced = time.Now()
	return nil
}

// stagingTx writes staged stages in one transaction: to the log, whose
// index takes the changes once the transaction has committed.
type stagingTx struct {
	tx  *bolt.Tx
	log *logTx
}

// stage runs fn in one read-write transaction on the staging file and
// applies fn's changes to the log's index once the transaction has
// committed (room for them is made before it commits).
func (w *Writer) stage(fn func(st stagingTx) error) error {
	var lt *logTx
	err := update(w.db, func(tx *bolt.Tx) error {
		var err error
		if lt, err = w.log.begin(tx); err != nil {
			return err
		}
		if err := fn(stagingTx{tx: tx, log: lt}); err != nil {
			return err
		}
		return lt.prepare()
	})
	if err == nil {
		lt.commit()
	}
	return err
}

func (st stagingTx) put(r *Record) error { return st.log.put(r) }

func (st stagingTx) delete(id string) error { return st.log.delete(id) }

// firstSeen keeps the first time these exact bytes were quarantined, from
// the staging file or the current generation, so an unchanged upstream
// gives an unchanged generation.
func (w *Writer) firstSeen(tx *bolt.Tx, key string, raw []byte, now time.Time) time.Time {
	if v := tx.Bucket(bucketQuarantine).Get([]byte(key)); v != nil {
		if q, err := decodeQuarantine([]byte(key), v); err == nil && bytes.Equal(q.Raw, raw) && !q.FirstSeen.IsZero() {
			return q.FirstSeen
		}
	}
	if v, ok, err := w.base.quarValue(key); err == nil && ok {
		if q, err := decodeQuarantine([]byte(key), v); err == nil && bytes.Equal(q.Raw, raw) && !q.FirstSeen.IsZero() {
			return q.FirstSeen
		}
	}
	return now
}

// Staged returns a copy of the JSON staged under id, if any, so a resumed
// sync can skip re-verifying bytes it already has.
func (w *Writer) Staged(id store.StageID) (raw []byte, ok bool, err error) {
	err = w.viewStaged(id, func(val []byte) error {
		r, err := recordRaw([]byte(id), val)
		if err != nil {
			return fmt.Errorf("%w: staged record %s: %v", ErrCorrupt, id, err)
		}
		raw, ok = bytes.Clone(r), true
		return nil
	})
	return raw, ok, err
}

// stagedRecord returns the record staged under id, if any.
func (w *Writer) stagedRecord(id store.StageID) (rec Record, ok bool, err error) {
	err = w.viewStaged(id, func(val []byte) error {
		r, err := decodeRecord([]byte(id), val)
		if err != nil {
			return fmt.Errorf("%w: staged record %s: %v", ErrCorrupt, id, err)
		}
		rec, ok = r, true
		return nil
	})
	return rec, ok, err
}

// viewStaged calls fn with the record value staged under id, in a read
// transaction of the staging file; fn is not called when none is staged.
// The value is bbolt memory: fn must not keep it.
func (w *Writer) viewStaged(id store.StageID, fn func(val []byte) error) error {
	if err := w.check(); err != nil {
		return err
	}
	return w.db.View(func(tx *bolt.Tx) error {
		v, ok, err := w.log.value(tx, string(id))
		if err != nil || !ok {
			return err
		}
		return fn(v)
	})
}

// Delete removes stages (and quarantine entries) with these ids from
// staging, in one transaction. Absent ids are ignored.
func (w *Writer) Delete(ids ...store.StageID) error {
	if err := w.check(); err != nil {
		return err
	}
	return w.stage(func(st stagingTx) error {
		for _, id := range ids {
			if err := st.delete(string(id)); err != nil {
				return err
			}
			if err := st.tx.Bucket(bucketQuarantine).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Abort ends the writer without publishing and releases the lock.
// keepStaging leaves PATH.next for a later BeginSync to resume; otherwise
// it is deleted. Abort after Publish (or a second Abort) does nothing.
func (w *Writer) Abort(keepStaging bool) error {
	if w.done {
		return nil
	}
	next := w.m.nextPath()
	defer w.release() // the lock goes last: nobody else may own PATH.next yet
	var err error
	if keepStaging && w.mode == modeSync && w.db != nil {
		// What this run staged survives a power loss, for the next one.
		err = w.syncStaging()
	}
	w.closeStaging()
	if !keepStaging {
		if err := os.Remove(next); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing the staging file %s: %w", next, err)
		}
	}
	return err
}

// Refuse ends the writer without publishing, as Abort(false) does, and
// records r in PATH.state, where Meta().Refused reports it until a sync
// publishes (or finds nothing new). The staging file is removed: the next
// sync is a new one, not a resumption (it lists everything again anyway).
func (w *Writer) Refuse(r SyncRefusal) error {
	if err := w.check(); err != nil {
		return err
	}
	m := w.m
	cur := w.base.meta
	sc, ok := readSidecar(m.path)
	if !ok || sc.Generation != cur.Generation {
		sc = sidecar{Generation: cur.Generation, syncState: syncStateOf(cur)}
	}
	r.At = r.At.UTC()
	sc.Refused = &r
	err := writeSidecar(m.path, sc)
	w.base.forgetSidecar()
	if aerr := w.Abort(false); err == nil {
		err = aerr
	}
	if err != nil {
		return fmt.Errorf("recording the refused sync in %s: %w", sidecarPath(m.path), err)
	}
	return nil
}

// PublishInfo describes the sync being published. Zero fields keep the
// current snapshot's values (a local write is not a sync).
type PublishInfo struct {
	Upstream       string
	SyncTime       time.Time
	UpstreamTotals map[string]int
	// UpstreamGeneration and UpstreamDigest, for a sync from another
	// mirror, name the upstream generation the staged content was taken
	// from (recorded as Meta.UpstreamGeneration and UpstreamDigest). A
	// sync (Upstream set) that leaves them zero records none; a local
	// edit keeps the current ones.
	UpstreamGeneration uint64
	UpstreamDigest     string
	// ExpectDigest, when set, is the content digest the published
	// generation must have: Publish and Refresh return ErrDigestMismatch,
	// and publish nothing, when the staged content's differs. A sync from
	// another mirror proves with it that it holds everything the upstream
	// holds.
	ExpectDigest string
}

// checkDigest returns ErrDigestMismatch when info expects a digest other
// than got.
func (info PublishInfo) checkDigest(path, got string) error {
	if info.ExpectDigest == "" || info.ExpectDigest == got {
		return nil
	}
	return fmt.Errorf("%w: the content staged for %s has digest %.16s…, not the expected %.16s…; nothing was published",
		ErrDigestMismatch, path, got, info.ExpectDigest)
}

// PublishResult says what Publish did.
type PublishResult struct {
	// Generation is the published snapshot's generation (the current one
	// when Unchanged).
	Generation uint64
	// Unchanged is true when the staged content equals the current
	// snapshot's: nothing new was published, only the sidecar refreshed.
	Unchanged bool
	Path      string
	Total     int
	Digest    string
}

// Refresh ends a sync that found the snapshot it began from current: it
// compiles and renames nothing, and only PATH.state records the sync (its
// time, upstream and totals), as Publish does when the content is
// unchanged. It refuses when anything is staged (see Dirty) or when
// another snapshot was published since the writer began; then the writer
// stays open (call Fill and Publish, or Abort). On success the staging
// file is removed and the lock released.
func (w *Writer) Refresh(ctx context.Context, info PublishInfo) (PublishResult, error) {
	if err := ctx.Err(); err != nil {
		return PublishResult{}, err
	}
	if dirty, err := w.Dirty(); err != nil || dirty {
		if err == nil {
			err = errors.New("mirror: Refresh with stages staged: publish them instead")
		}
		return PublishResult{}, err
	}
	cur, prev, err := w.current()
	if err != nil {
		return PublishResult{}, err
	}
	defer cur.release()
	if cur.meta.Generation != w.base.meta.Generation || cur.meta.Digest != w.base.meta.Digest {
		return PublishResult{}, fmt.Errorf("mirror: %s changed while the sync ran; run it again", w.m.path)
	}
	if err := info.checkDigest(w.m.path, cur.meta.Digest); err != nil {
		return PublishResult{}, err
	}
	meta := nextMeta(prev, info)
	sc := nextSidecar(prev, meta)
	sc.Generation = cur.meta.Generation
	out := PublishResult{Path: w.m.path, Total: cur.meta.Total, Digest: cur.meta.Digest, Generation: cur.meta.Generation, Unchanged: true}
	return out, w.finish(cur, sc)
}

// current reloads the mirror and returns its current snapshot (released
// by the caller) and that snapshot's meta refined by the sidecar.
func (w *Writer) current() (*snap, Meta, error) {
	if _, err := w.m.Reload(); err != nil {
		return nil, Meta{}, err
	}
	cur, err := w.m.acquire()
	if err != nil {
		return nil, Meta{}, err
	}
	return cur, withSidecar(cur.meta, w.m.path), nil
}

// nextMeta is the meta of the snapshot after prev, as info describes it.
func nextMeta(prev Meta, info PublishInfo) Meta {
	meta := Meta{
		Generation: prev.Generation + 1, Upstream: prev.Upstream, LastSync: prev.LastSync,
		UpstreamTotals: prev.UpstreamTotals, Published: time.Now().UTC(),
	}
	if info.Upstream != "" {
		meta.Upstream = info.Upstream
	}
	if !info.SyncTime.IsZero() {
		meta.LastSync = info.SyncTime.UTC()
	}
	if info.UpstreamTotals != nil {
		meta.UpstreamTotals = maps.Clone(info.UpstreamTotals) // readers keep it
	}
	meta.UpstreamGeneration, meta.UpstreamDigest = prev.UpstreamGeneration, prev.UpstreamDigest
	if info.Upstream != "" {
		meta.UpstreamGeneration, meta.UpstreamDigest = info.UpstreamGeneration, info.UpstreamDigest
	}
	return meta
}

// nextSidecar is the sidecar that records meta after prev (the caller
// sets its generation). A change of upstream is recorded; a refused sync
// is forgotten.
func nextSidecar(prev, meta Meta) sidecar {
	st := syncStateOf(meta)
	st.PreviousUpstream, st.UpstreamSince = prev.PreviousUpstream, prev.UpstreamSince
	sc := sidecar{syncState: st}
	if prev.Upstream != "" && meta.Upstream != prev.Upstream {
		sc.PreviousUpstream, sc.UpstreamSince = prev.Upstream, meta.Published
	}
	return sc
}

// finish records sc (when it holds a sync), removes the staging file,
// releases the lock and picks up the published snapshot.
func (w *Writer) finish(cur *snap, sc sidecar) error {
	m := w.m
	if !sc.LastSync.IsZero() {
		if err := writeSidecar(m.path, sc); err != nil {
			m.log.Warn("mirror: could not record the sync time", "path", sidecarPath(m.path), "err", err)
		}
		cur.forgetSidecar()
	}
	next := m.nextPath()
	w.closeStaging()
	if err := os.Remove(next); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("mirror: could not remove the staging file", "path", next, "err", err)
	}
	w.release()
	_, err := m.Reload()
	return err
}
