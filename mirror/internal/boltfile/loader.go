// Package boltfile writes and checks bbolt files at the level of bbolt's
// page layout (layout.go), below bbolt's own API: PageLoader writes a
// complete file in one sequential pass, CheckRoots checks the pages bbolt
// would copy to the Go heap before anything reads a bucket. TxLoader
// writes an equivalent file through bbolt's transactions, and CheckTrees
// runs bbolt's own consistency walk.
package boltfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	gosync "sync"
	"unsafe"
)

// Loader writes a bbolt file whose buckets are all top-level and whose
// entries arrive in key order per bucket. Put copies what it is given
// before it returns; Finish completes and fsyncs the file; Close releases
// it, and may be called more than once. A Loader is used by one goroutine.
type Loader interface {
	// Put appends k → v to bucket, whose previous key must sort below k.
	Put(bucket, k, v []byte) error
	// Finish writes what is pending and fsyncs the file. The Loader is
	// done after it, whatever it returns.
	Finish() error
	// Close releases the file.
	Close() error
}

// PageLoader writes a complete bbolt file in one sequential pass, from
// entries that arrive in key order per bucket.
//
// A file written once and never changed, from sorted entries, needs none
// of bbolt's transaction machinery: no node splits, no copy-on-write, no
// freelist. Through bbolt, a snapshot was written as one transaction per
// ~2 MB, each rewriting the right-hand path of every tree, page by page,
// through the page cache. The loader fills each leaf page once, writes the
// pages in big sequential writes (with O_DIRECT where the file system
// takes it, so a 640 MB publish does not push 640 MB of other data out of
// the page cache, and does not pay for fresh page-cache memory), and
// writes the branch pages, the root bucket, an empty freelist and the two
// meta pages at the end.
//
// The file is bbolt's on-disk format version 2 (layout.go): every bucket
// is a top-level bucket with its own root page (none inline), leaves hold
// as many entries as fit in a page (a single bigger entry gets overflow
// pages), branch pages hold at least two. The tests open what it writes
// with bbolt and run bbolt's own consistency check.
type PageLoader struct {
	w        *pageWriter
	pageSize int
	next     uint64 // the next page id to allocate
	buckets  loadBuckets
}

// loadBuckets are a Loader's buckets and the order checks on their keys,
// the same for both loaders.
type loadBuckets struct {
	byName map[string]*loadBucket
	names  [][]byte // in declaration order
}

// loadBucket is a bucket being loaded: the leaf page being filled and the
// first key and page id of every page written at the level above.
type loadBucket struct {
	elems  []loadElem
	data   []byte // keys and values of elems, back to back
	last   []byte // the last key put, to check the order
	hasKey bool
	level  []branchRef
}

type loadElem struct{ ksize, vsize int }

// branchRef points at a page from the level above it.
type branchRef struct {
	key  []byte
	page uint64
}

// errLoadOrder reports a key that is not above the previous key of its
// bucket: a bug in the caller, since every bucket is written sorted.
var errLoadOrder = errors.New("keys out of order")

// newLoadBuckets declares buckets, all empty.
func newLoadBuckets(buckets [][]byte) (loadBuckets, error) {
	lb := loadBuckets{byName: map[string]*loadBucket{}}
	for _, b := range buckets {
		if _, dup := lb.byName[string(b)]; dup {
			return lb, fmt.Errorf("bucket %q declared twice", b)
		}
		lb.byName[string(b)] = &loadBucket{}
		lb.names = append(lb.names, slices.Clone(b))
	}
	return lb, nil
}

// accept checks that k → v may follow what bucket holds, records k as its
// last key and returns the bucket.
func (lb *loadBuckets) accept(bucket, k, v []byte) (*loadBucket, error) {
	b := lb.byName[string(bucket)]
	switch {
	case b == nil:
		return nil, fmt.Errorf("bucket %q is missing", bucket)
	case len(k) == 0:
		return nil, fmt.Errorf("bucket %q: empty key", bucket)
	case len(k) > MaxKeySize:
		return nil, fmt.Errorf("bucket %q: key of %d bytes, bbolt's limit is %d", bucket, len(k), MaxKeySize)
	case len(v) > MaxValueSize:
		return nil, fmt.Errorf("bucket %q: value of %d bytes, bbolt's limit is %d", bucket, len(v), MaxValueSize)
	case b.hasKey && bytes.Compare(k, b.last) <= 0:
		return nil, fmt.Errorf("bucket %q: key %q after %q: %w", bucket, k, b.last, errLoadOrder)
	}
	b.last = append(b.last[:0], k...)
	b.hasKey = true
	return b, nil
}

// NewPageLoader starts a bbolt file at path (which must not hold anything
// the caller wants kept) with the given buckets, all empty. It is the
// loader of large files: 1 MB writes, O_DIRECT where the file system
// takes it, an fsync at Finish.
func NewPageLoader(path string, pageSize int, buckets [][]byte) (*PageLoader, error) {
	return NewPageLoaderWith(path, pageSize, buckets, PageLoaderOptions{Direct: true, BufferBytes: writeBufBytes})
}

// PageLoaderOptions tune a PageLoader for the file it writes.
type PageLoaderOptions struct {
	// Direct writes with O_DIRECT where the file system takes it: for
	// large files, which would otherwise push other data out of the page
	// cache. A small file read back at once is better left cached.
	Direct bool
	// BufferBytes is the size of each of the two write buffers (rounded
	// to whole pages, at least one).
	BufferBytes int
	// NoSync skips the fsync at Finish: for a file that need not survive
	// a crash (a staging file starting out empty).
	NoSync bool
}

// NewPageLoaderWith is NewPageLoader with options.
func NewPageLoaderWith(path string, pageSize int, buckets [][]byte, o PageLoaderOptions) (*PageLoader, error) {
	lb, err := newLoadBuckets(buckets)
	if err != nil {
		return nil, err
	}
	w, err := newPageWriter(path, pageSize, o)
	if err != nil {
		return nil, err
	}
	return &PageLoader{w: w, pageSize: pageSize, next: 2, buckets: lb}, nil
}

// Put appends k → v to bucket, whose previous key must sort below k.
func (l *PageLoader) Put(bucket, k, v []byte) error {
	b, err := l.buckets.accept(bucket, k, v)
	if err != nil {
		return err
	}
	if len(b.elems) > 0 && (len(b.elems) == 0xFFFF ||
		pageSpan(len(b.elems)+1, len(b.data)+len(k)+len(v)) > l.pageSize) {
		if err := l.flushLeaf(b); err != nil {
			return err
		}
	}
	b.elems = append(b.elems, loadElem{len(k), len(v)})
	b.data = append(append(b.data, k...), v...)
	return nil
}

// flushLeaf writes b's pending leaf page.
func (l *PageLoader) flushLeaf(b *loadBucket) error {
	id, err := l.writeLeaf(b.elems, b.data, 0)
	if err != nil {
		return err
	}
	var first []byte
	if len(b.elems) > 0 {
		first = slices.Clone(b.data[:b.elems[0].ksize])
	}
	b.level = append(b.level, branchRef{first, id})
	b.elems, b.data = b.elems[:0], b.data[:0]
	return nil
}

// writeLeaf writes a leaf page of elems, whose keys and values are data,
// each flagged with flags, and returns its page id.
func (l *PageLoader) writeLeaf(elems []loadElem, data []byte, flags uint32) (uint64, error) {
	return l.writePage(leafPage, len(elems), len(data), func(p []byte) {
		ep, start := p[pageHeaderSize:], len(elems)*elemSize
		off := 0
		for i, e := range elems {
			putLeafElem(ep[i*elemSize:], flags, start-i*elemSize+off, e.ksize, e.vsize)
			off += e.ksize + e.vsize
		}
		copy(ep[start:], data)
	})
}

// writePage allocates the pages for one page of the given type, count and
// data size (plus overflow pages as needed), lets fill write its body
// after the header, and appends it to the file. It returns the page id.
func (l *PageLoader) writePage(flags uint16, count, data int, fill func(p []byte)) (uint64, error) {
	size := pageSpan(count, data)
	pages := (size + l.pageSize - 1) / l.pageSize
	p, err := l.w.page(pages * l.pageSize)
	if err != nil {
		return 0, err
	}
	id := l.next
	l.next += uint64(pages)
	putPageHeader(p, id, flags, count, pages-1)
	fill(p[:size])
	clear(p[size:])
	return id, nil
}

// root finishes b's tree and returns its root page: the leaf if there is
// only one, else the branch page above every level.
func (l *PageLoader) root(b *loadBucket) (uint64, error) {
	if len(b.elems) > 0 || len(b.level) == 0 {
		if err := l.flushLeaf(b); err != nil {
			return 0, err
		}
	}
	level := b.level
	for len(level) > 1 {
		var up []branchRef
		for len(level) > 0 {
			n, keys := 0, 0
			for n < len(level) && n < 0xFFFF && (n < 2 || pageSpan(n+1, keys+len(level[n].key)) <= l.pageSize) {
				keys += len(level[n].key)
				n++
			}
			page := level[:n]
			id, err := l.writePage(branchPage, n, keys, func(p []byte) {
				elems, data := p[pageHeaderSize:], n*elemSize
				off := 0
				for i, r := range page {
					putBranchElem(elems[i*elemSize:], data-i*elemSize+off, len(r.key), r.page)
					copy(elems[data+off:], r.key)
					off += len(r.key)
				}
			})
			if err != nil {
				return 0, err
			}
			up = append(up, branchRef{page[0].key, id})
			level = level[n:]
		}
		level = up
	}
	return level[0].page, nil
}

// Finish writes every bucket's remaining pages, the root bucket, an empty
// freelist and the meta pages, and fsyncs the file. The loader is done
// after it, whatever it returns.
func (l *PageLoader) Finish() error {
	names := slices.Clone(l.buckets.names)
	slices.SortFunc(names, bytes.Compare)
	rootBucket := &loadBucket{}
	for _, name := range names {
		id, err := l.root(l.buckets.byName[string(name)])
		if err != nil {
			return err
		}
		var hdr [bucketHeaderSize]byte
		ne.PutUint64(hdr[0:], id) // root page; the sequence stays 0
		rootBucket.elems = append(rootBucket.elems, loadElem{len(name), len(hdr)})
		rootBucket.data = append(append(rootBucket.data, name...), hdr[:]...)
	}
	// The root bucket's page: one entry per bucket, flagged as a bucket.
	if pageSpan(len(rootBucket.elems), len(rootBucket.data)) > l.pageSize {
		return fmt.Errorf("%d bucket names do not fit in one page", len(rootBucket.elems))
	}
	rootID, err := l.writeLeaf(rootBucket.elems, rootBucket.data, bucketEntry)
	if err != nil {
		return err
	}
	freelistID, err := l.writePage(freelistPage, 0, 0, func([]byte) {})
	if err != nil {
		return err
	}
	if err := l.w.flush(); err != nil {
		return err
	}
	// Two meta pages with the same content; bbolt takes the one with the
	// higher transaction id, and either would do.
	metas := alignedBuf(2 * l.pageSize)
	clear(metas)
	for i := range 2 {
		p := metas[i*l.pageSize : (i+1)*l.pageSize]
		putPageHeader(p, uint64(i), metaPage, 0, 0)
		putMeta(p[pageHeaderSize:], meta{
			pageSize: uint32(l.pageSize),
			root:     rootID,
			freelist: freelistID,
			pgid:     l.next,
			txid:     uint64(i), // whose parity is the page id
		})
	}
	l.w.writeMeta(metas)
	return l.w.sync()
}

// Close releases the file. It may be called more than once.
func (l *PageLoader) Close() error { return l.w.close() }

// pageWriter appends pages to a file through aligned buffers, which a
// background goroutine writes while the next one fills, with O_DIRECT when
// the platform and the file system allow it (falling back to ordinary
// writes the first time a direct write is refused). Its methods are called
// from one goroutine.
type pageWriter struct {
	path  string
	size  int    // bytes per recycled buffer
	buf   []byte // the buffer being filled; len is what is filled
	spare []byte // an empty recycled buffer, while buf is an outsized one
	off   int64  // file offset of buf
	free  chan []byte
	work  chan writeJob
	done  chan struct{} // closed when the writer goroutine has stopped

	mu     gosync.Mutex
	werr   error    // the writer goroutine's first error
	f      *os.File // owned by the writer goroutine until done
	direct bool
	noSync bool
	closed bool
}

type writeJob struct {
	b       []byte
	off     int64
	recycle bool // b goes back to free once written
}

// writeBufBytes is the size of each of the writer's two buffers.
const writeBufBytes = 1 << 20

func newPageWriter(path string, pageSize int, o PageLoaderOptions) (*pageWriter, error) {
	f, direct, err := openForLoad(path, o.Direct)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	w := &pageWriter{
		f: f, path: path, direct: direct, noSync: o.NoSync,
		size: max(o.BufferBytes/pageSize, 1) * pageSize,
		off:  2 * int64(pageSize), // after the meta pages
		free: make(chan []byte, 2),
		work: make(chan writeJob, 1),
		done: make(chan struct{}),
	}
	w.buf = alignedBuf(w.size)[:0]
	w.free <- alignedBuf(w.size)[:0]
	go w.loop()
	return w, nil
}

// alignedBuf returns n bytes at an address aligned for direct I/O. The Go
// heap never moves an object, so the alignment holds for its lifetime.
func alignedBuf(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	skip := (align - int(uintptr(unsafe.Pointer(&b[0]))%align)) % align
	return b[skip : skip+n : skip+n]
}

func (w *pageWriter) loop() {
	defer close(w.done)
	for j := range w.work {
		if w.err() == nil {
			if err := w.writeAt(j.b, j.off); err != nil {
				w.mu.Lock()
				w.werr = fmt.Errorf("writing %s: %w", w.path, err)
				w.mu.Unlock()
			}
		}
		if j.recycle {
			w.free <- j.b[:0]
		}
	}
}

func (w *pageWriter) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.werr
}

// page returns the next n bytes of the file (a whole number of pages), to
// be filled before the next call. Their content is undefined.
func (w *pageWriter) page(n int) ([]byte, error) {
	if len(w.buf)+n > cap(w.buf) {
		if err := w.flush(); err != nil {
			return nil, err
		}
	}
	if n > w.size {
		// A page with many overflow pages gets a buffer of its own.
		w.spare, w.buf = w.buf, alignedBuf(n)[:0]
	}
	at := len(w.buf)
	w.buf = w.buf[:at+n]
	return w.buf[at:], nil
}

// flush hands the filled part of the current buffer to the writer
// goroutine and takes an empty one.
func (w *pageWriter) flush() error {
	if err := w.err(); err != nil {
		return err
	}
	if len(w.buf) == 0 {
		return nil
	}
	w.work <- writeJob{w.buf, w.off, w.spare == nil}
	w.off += int64(len(w.buf))
	if w.spare != nil {
		w.buf, w.spare = w.spare, nil
	} else {
		w.buf = <-w.free
	}
	return nil
}

// writeMeta queues the two meta pages, m, for offset 0.
func (w *pageWriter) writeMeta(m []byte) { w.work <- writeJob{m, 0, false} }

// writeAt writes b at off, switching to ordinary writes if a direct write
// is refused. Only the writer goroutine calls it.
func (w *pageWriter) writeAt(b []byte, off int64) error {
	_, err := w.f.WriteAt(b, off)
	if err != nil && w.direct && directRefused(err) {
		f, ferr := os.OpenFile(w.path, os.O_WRONLY, 0)
		if ferr != nil {
			return errors.Join(err, ferr)
		}
		w.f.Close()
		w.f, w.direct = f, false
		_, err = w.f.WriteAt(b, off)
	}
	return err
}

// sync waits for every queued write and fsyncs the file.
func (w *pageWriter) sync() error {
	if err := w.flush(); err != nil {
		return err
	}
	w.stop()
	if err := w.err(); err != nil {
		return err
	}
	if w.noSync {
		return nil
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", w.path, err)
	}
	return nil
}

// stop ends the writer goroutine once the queued writes are done.
func (w *pageWriter) stop() {
	if !w.closed {
		w.closed = true
		close(w.work)
		<-w.done
	}
}

// close stops the writer and closes the file. It may be called more than
// once.
func (w *pageWriter) close() error {
	w.stop()
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	return f.Close()
}
