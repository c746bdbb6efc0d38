package mirror

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	gosync "sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/mirror/internal/lthash"
	"github.com/noether-mirror/mirror/store"
)

// compileResult summarises a compiled snapshot.
type compileResult struct {
	meta   Meta
	digest []byte
	// lt is the content hash of what was compiled (the generation digest).
	lt lthash.State
}

// source is what compile reads: a read transaction on a staging file (nil
// tx: an empty mirror) and its log index.
type source struct {
	tx  *bolt.Tx
	log *stageLog
}

// compile writes a new snapshot file next to path from src and returns its
// name. The file is complete and fsynced; on error it is removed.
func compile(ctx context.Context, path string, src source, meta Meta, opts Options, current int64) (name string, res compileResult, err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", res, fmt.Errorf("creating the next snapshot next to %s: %w", path, err)
	}
	tmp := f.Name() // the returns below clear name before the defers run
	f.Close()
	defer func() {
		if err != nil {
			err = noSpace(err, tmp, current) // before the file goes: its size
			os.Remove(tmp)
		}
	}()
	l, err := newLoader(tmp, opts)
	if err != nil {
		return "", res, fmt.Errorf("creating snapshot %s: %w", tmp, err)
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing snapshot %s: %w", tmp, cerr)
		}
	}()
	c := &compiler{out: l, dir: filepath.Dir(path), dg: newDigester(), lh: lthash.NewHasher(), counts: map[string]int{}, byEffect: map[string]int{}, effects: map[string]string{}}
	if err = c.run(ctx, src); err != nil {
		return "", res, err
	}
	meta.FormatVersion = FormatVersion
	meta.Total = c.total
	meta.Quarantined = c.quarantined
	meta.Counts = c.counts
	meta.ByEffect = c.byEffect
	if meta.Published.IsZero() {
		meta.Published = time.Now().UTC()
	}
	res.digest = c.dg.sum()
	res.lt = c.lt
	meta.Digest = fmt.Sprintf("%x", res.digest)
	entries, err := metaEntries(&meta, res.digest)
	if err != nil {
		return "", res, fmt.Errorf("writing snapshot meta: %w", err)
	}
	if err = putMeta(l, entries); err != nil {
		return "", res, fmt.Errorf("writing snapshot meta: %w", err)
	}
	if err = l.Finish(); err != nil {
		return "", res, fmt.Errorf("writing snapshot %s: %w", tmp, err)
	}
	if err = checkCompiled(tmp, &meta, opts); err != nil {
		return "", res, err
	}
	if err = os.Chmod(tmp, 0o644); err != nil {
		return "", res, err
	}
	res.meta = meta
	return tmp, res, nil
}

// newLoader starts the snapshot file name with every snapshot bucket, to
// be written by the page writer or, with opts.BoltTransactions, through
// bbolt's transactions.
func newLoader(name string, opts Options) (boltfile.Loader, error) {
	buckets := append(digestBuckets(), bucketMeta)
	if opts.BoltTransactions {
		return boltfile.NewTxLoader(name, pageSize, buckets)
	}
	return boltfile.NewPageLoader(name, pageSize, buckets)
}

// checkCompiled fully checks the snapshot just written at name before it
// can be published: it opens it as a reader would (root pages, meta),
// compares the meta's digest and counts with what the compiler computed,
// recomputes the digest from every entry of every digested bucket, and
// runs bbolt's consistency walk over every page (boltfile.CheckTrees).
// Any difference is ErrCorrupt, and compile then removes the file. The
// file is read once sequentially first (readAhead): at 10k stages the
// whole check costs about as much as writing the file.
func checkCompiled(name string, meta *Meta, opts Options) (err error) {
	if err := readAhead(name); err != nil {
		return err
	}
	s, err := openFile(name, opts)
	if err != nil {
		return fmt.Errorf("the snapshot just written does not open: %w", err)
	}
	defer s.release()
	if s.meta.Digest != meta.Digest || s.meta.Total != meta.Total || s.meta.Quarantined != meta.Quarantined {
		return fmt.Errorf("%w: the snapshot just written reads back %d stages, %d quarantined, with digest %s, want %d, %d with %s",
			ErrCorrupt, s.meta.Total, s.meta.Quarantined, s.meta.Digest, meta.Total, meta.Quarantined, meta.Digest)
	}
	// The digest walk reads every entry under recover and
	// SetPanicOnFault; tx.Check, whose goroutine has neither, runs only
	// after it read the whole file cleanly.
	if err := s.db.View(func(tx *bolt.Tx) error { return checkDigest(tx, meta) }); err != nil {
		return fmt.Errorf("%w: the snapshot just written: %v", ErrCorrupt, err)
	}
	if err := s.db.View(boltfile.CheckTrees); err != nil {
		return fmt.Errorf("%w: the snapshot just written: %v", ErrCorrupt, err)
	}
	return nil
}

// readAhead reads the file at name once, sequentially, so that the
// checks after it find its pages in the page cache. bbolt maps a file
// with MADV_RANDOM, so a walk of a file that is not cached (the page
// writer writes with O_DIRECT) faults it in one 4 KiB page at a time.
func readAhead(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		_, err := f.Read(buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the snapshot just written: %w", err)
		}
	}
}

// checkDigest recomputes the digest of the snapshot tx reads from every
// entry of every digested bucket, and counts its stages and quarantined
// stages, against meta.
func checkDigest(tx *bolt.Tx, meta *Meta) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading it panicked: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	dg := newDigester()
	counts := map[string]int{}
	for _, name := range digestBuckets() {
		b := tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("bucket %q is missing", name)
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			dg.add(name, k, v)
			counts[string(name)]++
		}
	}
	if got := fmt.Sprintf("%x", dg.sum()); got != meta.Digest {
		return fmt.Errorf("its entries digest to %s, want %s", got, meta.Digest)
	}
	if counts[string(bucketStages)] != meta.Total || counts[string(bucketQuarantine)] != meta.Quarantined {
		return fmt.Errorf("it holds %d stages and %d quarantined, want %d and %d",
			counts[string(bucketStages)], counts[string(bucketQuarantine)], meta.Total, meta.Quarantined)
	}
	return nil
}

type compiler struct {
	out         boltfile.Loader
	dir         string // for scratch files
	dg          *digester
	lh          *lthash.Hasher
	lt          lthash.State // the content hash (see tagStage)
	total       int
	quarantined int
	counts      map[string]int
	byEffect    map[string]int
	effects     map[string]string // interned effect keys
	pos         map[store.LifecycleKind]uint64
}

// put writes one entry (keys must arrive in order per bucket) and hashes
// it into the digest.
func (c *compiler) put(bucket, k, v []byte) error {
	c.dg.add(bucket, k, v)
	return c.out.Put(bucket, k, v)
}

func (c *compiler) run(ctx context.Context, s source) (err error) {
	if s.tx == nil {
		return nil
	}
	c.pos = map[store.LifecycleKind]uint64{}
	if err := c.fromLog(ctx, s.tx, s.log); err != nil {
		return err
	}
	return c.copyQuarantine(s.tx)
}

// decodeStaged decodes a staged record in place: only a few fields are
// read, inside the source transaction, so nothing is copied out of the
// memory map.
func decodeStaged(k, v []byte) (Record, error) {
	rec, err := decodeBorrowed(k, v)
	if err != nil {
		return rec, fmt.Errorf("%w: staging record %q is damaged (%v); it is discarded, run the sync again", ErrCorrupt, k, err)
	}
	return rec, nil
}

// placeStage writes record v of stage k, already decoded as rec and
// already hashed into the digest, with its position entries, and counts it.
func (c *compiler) placeStage(ctx context.Context, k, v []byte, rec *Record) error {
	if c.total%1024 == 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if err := c.out.Put(bucketStages, k, v); err != nil {
		return err
	}
	kinds := []store.LifecycleKind{store.LifecycleUnknown}
	if rec.Lifecycle.Kind != store.LifecycleUnknown {
		kinds = append(kinds, rec.Lifecycle.Kind)
	}
	for _, kind := range kinds {
		if err := c.put(posBucket(kind), beUint64(c.pos[kind]), k); err != nil {
			return err
		}
		c.pos[kind]++
	}
	c.total++
	c.counts[rec.Lifecycle.Kind.Name()]++
	for _, e := range rec.Effects {
		// e aliases the memory map, and assigning to a map entry replaces
		// its string key too: count under an owned copy, made once.
		k, ok := c.effects[e]
		if !ok {
			k = strings.Clone(e)
			c.effects[k] = k
		}
		c.byEffect[k]++
	}
	return nil
}

// fromLog writes a sync's staged log in id order, then builds the name and
// signature indexes from it. The id order, the ids and the index entries
// (values copied out of the log) are sorted in scratch files, not on the
// Go heap, so a publish's memory does not grow with the registry.
// Collecting and sorting the index entries runs on its own goroutine, in
// a second read transaction, while this one writes the stages: at 100k
// stages the sorts took 0.6 s of a 6.9 s publish when they waited for the
// last stage.
func (c *compiler) fromLog(ctx context.Context, src *bolt.Tx, l *stageLog) error {
	lb := src.Bucket(bucketLog)
	if lb == nil {
		return fmt.Errorf("%w: the staging file has no log bucket; it is discarded, run the sync again", ErrCorrupt)
	}
	sorted, err := l.sorted()
	if err != nil {
		return fmt.Errorf("sorting the staging index: %w", err)
	}
	defer sorted.Close()
	seqs := sorted.All()
	ixTx, err := src.DB().Begin(false)
	if err != nil {
		return fmt.Errorf("reading the staging file: %w", err)
	}
	// collectIndexes reads in its own transaction (bbolt transactions are
	// not for concurrent use); what it keeps is copied to scratch files.
	defer func() { _ = ixTx.Rollback() }()
	var ix *logIndexes
	stop, collected := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(collected)
		ix = collectIndexes(ixTx.Bucket(bucketLog), seqs, c.dir, stop)
	}()
	defer func() {
		<-collected
		ix.close()
	}()
	// Reading and decoding the log (and hashing the records) runs on its
	// own goroutine too, while this one writes the snapshot, whose commits
	// are most of the cost.
	batches := make(chan []stagedItem, 8)
	done := make(chan struct{})
	var wg gosync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(batches)
		c.readLog(lb, seqs, batches, done)
	}()
	defer func() {
		close(stop)
		close(done)
		for range batches {
		}
		wg.Wait()
		<-collected
	}()
	i := 0
	for batch := range batches {
		for _, it := range batch {
			if it.err != nil {
				return it.err
			}
			if err := c.placeStage(ctx, it.id, it.rec, &it.r); err != nil {
				return err
			}
			i++
		}
	}
	if i != len(seqs) {
		return fmt.Errorf("compiling the log stopped after %d of %d stages", i, len(seqs))
	}
	<-collected
	if ix.err != nil {
		return ix.err
	}
	var key []byte
	var buf [64]byte
	for _, index := range []struct {
		bucket  []byte
		entries *Scratch[ixRef]
	}{{bucketByName, ix.names}, {bucketBySig, ix.sigs}} {
		for _, e := range index.entries.All() {
			v := []byte{}
			if bytes.Equal(index.bucket, bucketBySig) {
				v = kindByte[e.kind]
			}
			key = appendIndexKey(key[:0], ix.value(e), ix.id(e.stage, &buf))
			if err := c.put(index.bucket, key, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// logIndexes is what collectIndexes found: the id of every staged stage
// in id order, and the name and signature index entries sorted in index
// key order, all in scratch files (see Scratch), not on the Go heap.
type logIndexes struct {
	ids         *Scratch[idRef]
	odd         []string       // ids that are not 64 lowercase hex (none from a registry)
	arena       *Scratch[byte] // the names and signature ids of the entries
	names, sigs *Scratch[ixRef]
	err         error
}

// idRef is a staged stage's id: the 32 bytes of a hex id, or (odd > 0)
// odd[odd-1].
type idRef struct {
	k   [32]byte
	odd uint32
}

// ixRef is one by_name or by_sig entry: its value is arena[off:off+n],
// stage the position of the stage's id in id order.
type ixRef struct {
	off   uint64
	n     uint32
	stage uint32
	kind  store.LifecycleKind
}

func (ix *logIndexes) close() {
	if ix == nil {
		return
	}
	for _, c := range []interface{ Close() error }{ix.ids, ix.arena, ix.names, ix.sigs} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// value returns e's name or signature id.
func (ix *logIndexes) value(e ixRef) []byte { return ix.arena.All()[e.off : e.off+uint64(e.n)] }

// id returns the id of the stage at position i, hex-encoded into buf
// unless it is odd.
func (ix *logIndexes) id(i uint32, buf *[64]byte) []byte {
	r := &ix.ids.All()[i]
	if r.odd > 0 {
		return []byte(ix.odd[r.odd-1])
	}
	hex.Encode(buf[:], r.k[:])
	return buf[:]
}

// compareIDs orders the ids at positions a and b as strings.
func (ix *logIndexes) compareIDs(a, b uint32) int {
	ids := ix.ids.All()
	if ids[a].odd == 0 && ids[b].odd == 0 {
		return bytes.Compare(ids[a].k[:], ids[b].k[:]) // hex sorts as its bytes
	}
	var ba, bb [64]byte
	return bytes.Compare(ix.id(a, &ba), ix.id(b, &bb))
}

// compare orders two entries by index key: value, 0x00, id.
func (ix *logIndexes) compare(a, b ixRef) int {
	av, bv := ix.value(a), ix.value(b)
	if bytes.IndexByte(av, 0) < 0 && bytes.IndexByte(bv, 0) < 0 {
		if c := bytes.Compare(av, bv); c != 0 {
			return c
		}
		return ix.compareIDs(a.stage, b.stage)
	}
	var ba, bb [64]byte
	return bytes.Compare(appendIndexKey(nil, av, ix.id(a.stage, &ba)), appendIndexKey(nil, bv, ix.id(b.stage, &bb)))
}

// collectIndexes reads the log entries seqs (in id order) and returns the
// index entries of their records, sorted, unless stop is closed first.
// The result is never nil; close it.
func collectIndexes(lb *bolt.Bucket, seqs []uint64, dir string, stop <-chan struct{}) *logIndexes {
	ix := &logIndexes{}
	if lb == nil {
		ix.err = fmt.Errorf("%w: the staging file has no log bucket; it is discarded, run the sync again", ErrCorrupt)
		return ix
	}
	if ix.ids, ix.err = NewScratch[idRef](dir); ix.err != nil {
		return ix
	}
	if ix.arena, ix.err = NewScratch[byte](dir); ix.err != nil {
		return ix
	}
	if ix.names, ix.err = NewScratch[ixRef](dir); ix.err != nil {
		return ix
	}
	if ix.sigs, ix.err = NewScratch[ixRef](dir); ix.err != nil {
		return ix
	}
	add := func(to *Scratch[ixRef], value string, i int, kind store.LifecycleKind) error {
		e := ixRef{off: uint64(ix.arena.Len()), n: uint32(len(value)), stage: uint32(i), kind: kind}
		if err := ix.arena.Append([]byte(value)...); err != nil {
			return err
		}
		return to.Append(e)
	}
	for i, seq := range seqs {
		if i%1024 == 0 {
			select {
			case <-stop:
				ix.err = errors.New("stopped")
				return ix
			default:
			}
		}
		it := readStaged(lb, seq)
		if it.err != nil {
			ix.err = it.err
			return ix
		}
		var r idRef
		if k, ok := store.IDBytes(string(it.id)); ok {
			r.k = k
		} else {
			ix.odd = append(ix.odd, string(it.id))
			r.odd = uint32(len(ix.odd))
		}
		if ix.err = ix.ids.Append(r); ix.err != nil {
			return ix
		}
		if it.r.HasName {
			if ix.err = add(ix.names, it.r.Name, i, 0); ix.err != nil {
				return ix
			}
		}
		if it.r.SignatureID != "" {
			if ix.err = add(ix.sigs, string(it.r.SignatureID), i, it.r.Lifecycle.Kind); ix.err != nil {
				return ix
			}
		}
	}
	for _, entries := range []*Scratch[ixRef]{ix.names, ix.sigs} {
		slices.SortFunc(entries.All(), ix.compare)
	}
	return ix
}

// stagedItem is one staged stage read from the log: id and rec are the
// source's memory, r decodes rec in place; or err says why it could not be
// read.
type stagedItem struct {
	id, rec []byte
	r       Record
	err     error
}

// readLog sends the log entries seqs in batches, hashing each record into
// the stages digest, until done is closed or an entry fails (its error is
// the last item sent).
func (c *compiler) readLog(lb *bolt.Bucket, seqs []uint64, out chan<- []stagedItem, done <-chan struct{}) {
	const batchLen = 128
	batch := make([]stagedItem, 0, batchLen)
	send := func() bool {
		select {
		case out <- batch:
			batch = make([]stagedItem, 0, batchLen)
			return true
		case <-done:
			return false
		}
	}
	for _, seq := range seqs {
		it := readStaged(lb, seq)
		if it.err == nil {
			c.dg.add(bucketStages, it.id, it.rec)
			c.lh.Add(&c.lt, tagStage, it.id, it.r.Raw)
		}
		batch = append(batch, it)
		if it.err != nil {
			send()
			return
		}
		if len(batch) == batchLen && !send() {
			return
		}
	}
	if len(batch) > 0 {
		send()
	}
}

// readStaged reads and decodes log entry seq, in place.
func readStaged(lb *bolt.Bucket, seq uint64) (it stagedItem) {
	v := lb.Get(beUint64(seq))
	if v == nil {
		it.err = fmt.Errorf("%w: staged log entry %d is missing; it is discarded, run the sync again", ErrCorrupt, seq)
	} else if it.id, it.rec, it.err = splitLogValue(v); it.err != nil {
		it.err = fmt.Errorf("%w: staged log entry %d is damaged (%v); it is discarded, run the sync again", ErrCorrupt, seq, it.err)
	} else {
		it.r, it.err = decodeStaged(it.id, it.rec)
	}
	return it
}

// kindByte holds the one-byte by_sig values, shared read-only.
var kindByte = func() [store.LifecycleTombstone + 1][]byte {
	var t [store.LifecycleTombstone + 1][]byte
	for k := range t {
		t[k] = []byte{byte(k)}
	}
	return t
}()

// copyQuarantine copies the staged quarantine.
func (c *compiler) copyQuarantine(src *bolt.Tx) error {
	if qb := src.Bucket(bucketQuarantine); qb != nil {
		qc := qb.Cursor()
		for k, v := qc.First(); k != nil; k, v = qc.Next() {
			q, err := decodeQuarantine(k, v)
			if err != nil {
				return fmt.Errorf("%w: staging quarantine entry %q is damaged (%v); it is discarded, run the sync again", ErrCorrupt, k, err)
			}
			c.lh.Add(&c.lt, tagQuarantine, k, q.Raw)
			if err := c.put(bucketQuarantine, k, v); err != nil {
				return err
			}
			c.quarantined++
		}
	}
	return nil
}

// indexKey is a by_name or by_sig key: value, 0x00, id.
func indexKey(value string, id store.StageID) []byte {
	return appendIndexKey(make([]byte, 0, len(value)+1+len(id)), value, id)
}

// appendIndexKey appends indexKey(value, id) to dst.
func appendIndexKey[V, I ~string | ~[]byte](dst []byte, value V, id I) []byte {
	dst = append(dst, value...)
	dst = append(dst, 0)
	return append(dst, id...)
}
