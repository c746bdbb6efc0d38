package mirror

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// batchBytes is how many bytes of index entries build writes per
// transaction: large enough to amortise commits, small enough to bound
// the memory bbolt holds for a transaction's dirty pages.
const batchBytes = 2 << 20

// build turns a staging file into a format-2 snapshot in place, without
// moving a record: it reads the log front to back, then rebuilds the
// stages, by_name, by_sig and position buckets from what it read, hashes
// the quarantine, writes meta (completed with the counts and digest,
// which it returns), drops the writer bucket and fsyncs the file. l must
// index exactly the log's entries. A damaged log is ErrCorrupt.
//
// A build killed part way leaves a staging file that is still a valid
// staging file (the writer bucket goes in the last transaction), so the
// next build starts over. No read transaction is open while build writes,
// so bbolt can grow its memory map.
func build(ctx context.Context, db *bolt.DB, l *stageLog, meta Meta) (Meta, error) {
	b := &builder{counts: map[string]int{}, byEffect: map[string]int{}, effects: map[string]string{}}
	if err := b.scan(ctx, db, l); err != nil {
		return Meta{}, err
	}
	w := &indexWriter{db: db, dg: newDigester()}
	if err := w.run(func() error { return b.write(ctx, w) }); err != nil {
		return Meta{}, err
	}
	meta.FormatVersion = FormatVersion
	meta.Total = len(b.entries)
	meta.Quarantined = b.quarantined
	meta.Counts = b.counts
	meta.ByEffect = b.byEffect
	if meta.Published.IsZero() {
		meta.Published = time.Now().UTC()
	}
	digest := w.dg.sum()
	meta.Digest = hex.EncodeToString(digest)
	err := update(db, func(tx *bolt.Tx) error {
		if tx.Bucket(bucketWriter) != nil {
			if err := tx.DeleteBucket(bucketWriter); err != nil {
				return err
			}
		}
		return writeMeta(tx, &meta, digest)
	})
	if err != nil {
		return Meta{}, fmt.Errorf("writing snapshot meta: %w", err)
	}
	if err := db.Sync(); err != nil {
		return Meta{}, fmt.Errorf("syncing %s: %w", db.Path(), err)
	}
	return meta, nil
}

// builtStage is what build keeps of one stage between reading the log and
// writing the indexes: 120 bytes, plus its name (and a signature id that
// is not 64 hex characters) in the builder's arena.
type builtStage struct {
	key  [32]byte // the id's bytes, for the 64-hex ids a registry hands out
	sum  [sha256.Size]byte
	sig  [32]byte // the signature id's bytes, when sigHex
	seq  uint64
	name span
	odd  int32 // the id's index in builder.odd, or -1 for a hex id
	// oddSig is the signature id in the arena when it is not hex.
	oddSig  span
	hasName bool
	sigHex  bool
	kind    store.LifecycleKind
}

// span is a string in builder.arena.
type span struct{ off, n uint32 }

type builder struct {
	entries     []builtStage
	odd         []string
	arena       []byte
	counts      map[string]int
	byEffect    map[string]int
	effects     map[string]string // interned effect keys
	quarantined int
}

func (b *builder) bytes(s span) []byte { return b.arena[s.off : s.off+s.n] }

func (b *builder) add(s string) span {
	sp := span{off: uint32(len(b.arena)), n: uint32(len(s))}
	b.arena = append(b.arena, s...)
	return sp
}

// id appends the id of e to dst.
func (b *builder) id(dst []byte, e *builtStage) []byte {
	if e.odd >= 0 {
		return append(dst, b.odd[e.odd]...)
	}
	return hex.AppendEncode(dst, e.key[:])
}

// sigID appends the signature id of e to dst ("" if none).
func (b *builder) sigID(dst []byte, e *builtStage) []byte {
	if e.sigHex {
		return hex.AppendEncode(dst, e.sig[:])
	}
	return append(dst, b.bytes(e.oddSig)...)
}

// compareIDs orders stages by id: lowercase hex sorts like the bytes it
// encodes.
func (b *builder) compareIDs(x, y *builtStage) int {
	if x.odd < 0 && y.odd < 0 {
		return bytes.Compare(x.key[:], y.key[:])
	}
	var bx, by [64]byte
	return bytes.Compare(b.id(bx[:0], x), b.id(by[:0], y))
}

// compareValues orders index values (names or signature ids) x and y of
// the stages at positions i and j of the id-ordered entries as their
// index keys (value 0x00 id) sort. Without a 0x00 in either value that is
// value order, then id order, which is position order.
func (b *builder) compareValues(x, y []byte, i, j int32) int {
	if bytes.IndexByte(x, 0) >= 0 || bytes.IndexByte(y, 0) >= 0 {
		return bytes.Compare(b.indexKey(x, &b.entries[i]), b.indexKey(y, &b.entries[j]))
	}
	if c := bytes.Compare(x, y); c != 0 {
		return c
	}
	return int(i - j)
}

// indexKey is the by_name or by_sig key of value for stage e.
func (b *builder) indexKey(value []byte, e *builtStage) []byte {
	k := make([]byte, 0, len(value)+1+64)
	k = append(append(k, value...), 0)
	return b.id(k, e)
}

func corruptStaging(format string, args ...any) error {
	return fmt.Errorf("%w: staging %s; it is discarded, run the sync again", ErrCorrupt, fmt.Sprintf(format, args...))
}

// scan reads the log and the quarantine, checking every record, in one
// read transaction; nothing read outlives it but copies. The records'
// SHA-256s are computed on a second goroutine. Once the log is read its
// index l is dropped, to make room for the entries.
func (b *builder) scan(ctx context.Context, db *bolt.DB, l *stageLog) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptStaging("file: reading it failed: %v", p)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	l.mu.Lock()
	defer l.mu.Unlock()
	err = db.View(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketLog)
		if lb == nil {
			return corruptStaging("file has no log bucket")
		}
		b.entries = make([]builtStage, 0, l.lenLocked())
		h := newHasher(b.entries[:cap(b.entries)])
		defer h.wait()
		c := lb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(b.entries)%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if len(b.entries) == cap(b.entries) {
				return corruptStaging("log holds more stages than its index (%d)", cap(b.entries))
			}
			rec, err := b.addLogEntry(l, k, v)
			if err != nil {
				return err
			}
			h.add(len(b.entries)-1, rec)
		}
		if len(b.entries) != l.lenLocked() {
			return corruptStaging("log holds %d stages, its index %d", len(b.entries), l.lenLocked())
		}
		if qb := tx.Bucket(bucketQuarantine); qb != nil {
			qc := qb.Cursor()
			for k, v := qc.First(); k != nil; k, v = qc.Next() {
				if _, err := decodeQuarantine(k, v); err != nil {
					return corruptStaging("quarantine entry %q is damaged (%v)", k, err)
				}
				b.quarantined++
			}
		}
		return nil
	})
	l.resetLocked()
	return err
}

// hasher computes SHA-256s of records into entries on its own goroutine.
type hasher struct {
	entries []builtStage
	batch   []hashJob
	jobs    chan []hashJob
	done    chan struct{}
}

type hashJob struct {
	i   int
	rec []byte
}

func newHasher(entries []builtStage) *hasher {
	h := &hasher{entries: entries, jobs: make(chan []hashJob, 4), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for batch := range h.jobs {
			for _, j := range batch {
				h.entries[j.i].sum = sha256.Sum256(j.rec)
			}
		}
	}()
	return h
}

// add queues the hash of rec into entry i.
func (h *hasher) add(i int, rec []byte) {
	h.batch = append(h.batch, hashJob{i, rec})
	if len(h.batch) == 256 {
		h.jobs <- h.batch
		h.batch = make([]hashJob, 0, 256)
	}
}

// wait hashes what is queued and returns when every hash is done; the
// records it read must stay valid until then.
func (h *hasher) wait() {
	if len(h.batch) > 0 {
		h.jobs <- h.batch
	}
	close(h.jobs)
	<-h.done
}

// addLogEntry checks and records one log entry (k, v), returning its
// record.
func (b *builder) addLogEntry(l *stageLog, k, v []byte) ([]byte, error) {
	seq, ok := u64(k)
	if !ok {
		return nil, corruptStaging("log key %x is not a sequence number", k)
	}
	id, rec, err := splitLogValue(v)
	if err != nil {
		return nil, corruptStaging("log entry %d is damaged (%v)", seq, err)
	}
	if at, ok := l.getLocked(string(id)); !ok || at != seq {
		return nil, corruptStaging("log entry %d holds stage %q, which its index does not place there", seq, id)
	}
	r, err := decodeBorrowed(id, rec)
	if err != nil {
		return nil, corruptStaging("record %q is damaged (%v)", id, err)
	}
	e := builtStage{odd: -1, seq: seq, hasName: r.HasName, kind: r.Lifecycle.Kind}
	if key, ok := store.IDBytes(string(id)); ok {
		e.key = key
	} else {
		e.odd = int32(len(b.odd))
		b.odd = append(b.odd, string(id))
	}
	if r.HasName {
		e.name = b.add(r.Name)
	}
	if r.SignatureID != "" {
		if e.sig, e.sigHex = store.IDBytes(string(r.SignatureID)); !e.sigHex {
			e.oddSig = b.add(string(r.SignatureID))
		}
	}
	b.entries = append(b.entries, e)
	b.counts[r.Lifecycle.Kind.Name()]++
	for _, eff := range r.Effects {
		// eff aliases the memory map, and assigning to a map entry
		// replaces its string key too: count under an owned copy.
		k, ok := b.effects[eff]
		if !ok {
			k = strings.Clone(eff)
			b.effects[k] = k
		}
		b.byEffect[k]++
	}
	return rec, nil
}

// write rebuilds every index bucket from the entries and hashes the
// quarantine.
func (b *builder) write(ctx context.Context, w *indexWriter) error {
	if err := w.recreate(); err != nil {
		return err
	}
	slices.SortFunc(b.entries, func(x, y builtStage) int { return b.compareIDs(&x, &y) })
	pos := map[store.LifecycleKind]uint64{}
	var names, sigs []int32
	for i := range b.entries {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		e := &b.entries[i]
		id := b.id(make([]byte, 0, 64), e) // bbolt keeps keys and values until the commit
		if err := w.putHashed(bucketStages, id, stagesValue(e.seq, &e.sum), e.sum[:]); err != nil {
			return err
		}
		kinds := []store.LifecycleKind{store.LifecycleUnknown}
		if e.kind != store.LifecycleUnknown {
			kinds = append(kinds, e.kind)
		}
		for _, kind := range kinds {
			if err := w.put(posBucket(kind), beUint64(pos[kind]), id); err != nil {
				return err
			}
			pos[kind]++
		}
		if e.hasName {
			names = append(names, int32(i))
		}
		if e.sigHex || e.oddSig.n > 0 {
			sigs = append(sigs, int32(i))
		}
	}
	// by_name, sorted on the names in the arena.
	slices.SortFunc(names, func(x, y int32) int {
		return b.compareValues(b.bytes(b.entries[x].name), b.bytes(b.entries[y].name), x, y)
	})
	for _, i := range names {
		e := &b.entries[i]
		if err := w.put(bucketByName, b.indexKey(b.bytes(e.name), e), []byte{}); err != nil {
			return err
		}
	}
	// by_sig: hex signature ids sort like their bytes.
	slices.SortFunc(sigs, func(x, y int32) int {
		ex, ey := &b.entries[x], &b.entries[y]
		if ex.sigHex && ey.sigHex {
			if c := bytes.Compare(ex.sig[:], ey.sig[:]); c != 0 {
				return c
			}
			return int(x - y)
		}
		var bx, by [64]byte
		return b.compareValues(b.sigID(bx[:0], ex), b.sigID(by[:0], ey), x, y)
	})
	var sigBuf []byte
	for _, i := range sigs {
		e := &b.entries[i]
		sigBuf = b.sigID(sigBuf[:0], e)
		if err := w.put(bucketBySig, b.indexKey(sigBuf, e), kindByte[e.kind]); err != nil {
			return err
		}
	}
	return w.hashQuarantine()
}

// kindByte holds the one-byte by_sig values, shared read-only.
var kindByte = func() [store.LifecycleTombstone + 1][]byte {
	var t [store.LifecycleTombstone + 1][]byte
	for k := range t {
		t[k] = []byte{byte(k)}
	}
	return t
}()

// indexKey is a by_name or by_sig key: value, 0x00, id.
func indexKey(value string, id store.StageID) []byte {
	k := make([]byte, 0, len(value)+1+len(id))
	k = append(k, value...)
	k = append(k, 0)
	return append(k, id...)
}

// indexWriter writes entries in key order into a file's buckets, hashing
// them into dg and committing every batchBytes.
type indexWriter struct {
	db      *bolt.DB
	dg      *digester
	tx      *bolt.Tx
	buckets map[string]*bolt.Bucket
	pending int
}

// indexBuckets are the buckets build makes from the log.
func indexBuckets() [][]byte {
	return [][]byte{
		bucketStages, bucketByName, bucketBySig, bucketPosAll,
		posBucket(store.LifecycleDraft), posBucket(store.LifecycleActive),
		posBucket(store.LifecycleDeprecated), posBucket(store.LifecycleTombstone),
	}
}

// run calls fn, then commits the last batch; on error it rolls back.
func (w *indexWriter) run(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = corruptStaging("file: writing it failed: %v", p)
		}
		if w.tx != nil {
			_ = w.tx.Rollback()
			w.tx = nil
		}
	}()
	if err := fn(); err != nil {
		return err
	}
	return w.commit()
}

// recreate empties the index buckets (a killed build may have left some)
// and makes sure quarantine and meta exist.
func (w *indexWriter) recreate() error {
	return update(w.db, func(tx *bolt.Tx) error {
		for _, name := range indexBuckets() {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		for _, name := range append(indexBuckets(), bucketQuarantine, bucketMeta, bucketLog) {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
}

// put writes one entry (keys must arrive in order per bucket) and hashes
// it. k and v must stay unchanged until the commit.
func (w *indexWriter) put(bucket, k, v []byte) error {
	return w.putHashed(bucket, k, v, v)
}

// putHashed is put for an entry whose digest value is hv.
func (w *indexWriter) putHashed(bucket, k, v, hv []byte) error {
	w.dg.add(bucket, k, hv)
	if w.tx == nil {
		tx, err := w.db.Begin(true)
		if err != nil {
			return err
		}
		w.tx = tx
		w.buckets = map[string]*bolt.Bucket{}
	}
	b := w.buckets[string(bucket)]
	if b == nil {
		if b = w.tx.Bucket(bucket); b == nil {
			return fmt.Errorf("bucket %q is missing", bucket)
		}
		b.FillPercent = 1.0 // keys arrive in order: pack pages full
		w.buckets[string(bucket)] = b
	}
	// bbolt keeps k and v until the commit: they must not be reused.
	if err := b.Put(k, v); err != nil {
		return err
	}
	w.pending += len(k) + len(v)
	if w.pending >= batchBytes {
		return w.commit()
	}
	return nil
}

func (w *indexWriter) commit() error {
	w.pending = 0
	if w.tx == nil {
		return nil
	}
	tx := w.tx
	w.tx = nil
	return tx.Commit()
}

// hashQuarantine hashes the quarantine bucket, which build leaves as the
// writer staged it.
func (w *indexWriter) hashQuarantine() error {
	if err := w.commit(); err != nil {
		return err
	}
	return w.db.View(func(tx *bolt.Tx) error {
		qb := tx.Bucket(bucketQuarantine)
		if qb == nil {
			return errors.New("the quarantine bucket is missing")
		}
		c := qb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			w.dg.add(bucketQuarantine, k, v)
		}
		return nil
	})
}
