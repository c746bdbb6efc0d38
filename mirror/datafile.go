package mirror

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// dataFile is one open data file of a mirror with generations: a base or a
// delta, opened read-only. Data files never change once published, so
// the snapshots of successive generations share the files they have in
// common instead of opening and mapping them again (see openGen): each
// holds a reference, and the file is closed when the last one is
// released. Safe for concurrent use.
type dataFile struct {
	path string
	db   *bolt.DB
	// fi is the file as it was opened: another file may take its name
	// later (a mirror rebuilt in the same place), see reuse.
	fi   os.FileInfo
	refs atomic.Int32

	// view reuses read transactions: the file is immutable, so one never
	// goes stale, and bbolt's Begin and Rollback cost more than a
	// look-up. Each is used by one goroutine at a time. The last release
	// marks the file closed (views after it fail with ErrClosed), waits
	// for the views in flight (active, signalled by idle), and rolls every
	// transaction back before it closes the file.
	txMu   sync.Mutex
	idle   *sync.Cond // on txMu: active dropped to zero
	active int
	closed bool
	txFree []*fileTx
	txAll  []*fileTx
}

// fileTx is a read transaction of a data file with the buckets and
// cursors its look-ups opened, kept for the next: bbolt's Tx.Bucket and
// Bucket.Get allocate on every call. Used by one goroutine at a time.
type fileTx struct {
	tx   *bolt.Tx
	open []openBucket
}

// openBucket is a bucket a fileTx opened (or found missing) and its
// kept cursor.
type openBucket struct {
	name string
	b    *bolt.Bucket // nil: missing
	c    *bolt.Cursor
}

// bucket returns the top-level bucket name, or nil if it is missing.
func (t *fileTx) bucket(name []byte) *bolt.Bucket { return t.opened(name).b }

// opened returns the openBucket of name, opening it on first use. The
// pointer is valid until the next call.
func (t *fileTx) opened(name []byte) *openBucket {
	for i := range t.open {
		if t.open[i].name == string(name) {
			return &t.open[i]
		}
	}
	ob := openBucket{name: string(name), b: t.tx.Bucket(name)}
	if ob.b != nil {
		ob.c = ob.b.Cursor()
	}
	t.open = append(t.open, ob)
	return &t.open[len(t.open)-1]
}

// cursor returns the kept cursor of bucket name (which must exist, see
// bucket).
func (t *fileTx) cursor(name []byte) *bolt.Cursor { return t.opened(name).c }

// get returns the value under key in bucket name (which must exist, see
// bucket), or nil, as Bucket.Get does, through the bucket's kept cursor.
func (t *fileTx) get(name, key []byte) []byte {
	k, v := t.opened(name).c.Seek(key)
	if !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// openDataFile opens the data file at path with one reference.
func openDataFile(path string, opts Options) (*dataFile, error) {
	db, fi, err := openBoltFile(path, opts)
	if err != nil {
		return nil, err
	}
	return newDataFile(path, db, fi), nil
}

// newDataFile returns the data file db, opened from path (as fi), with
// one reference.
func newDataFile(path string, db *bolt.DB, fi os.FileInfo) *dataFile {
	f := &dataFile{path: path, db: db, fi: fi}
	f.idle = sync.NewCond(&f.txMu)
	f.refs.Store(1)
	return f
}

// reuse returns f with one more reference when it is the file at path
// now, or nil (f nil, another path, or another file by that name). The
// caller must hold a reference to f.
func (f *dataFile) reuse(path string) *dataFile {
	if f == nil || !f.isAt(path) {
		return nil
	}
	f.refs.Add(1)
	return f
}

// isAt reports whether f is the file at path now.
func (f *dataFile) isAt(path string) bool {
	if f.path != path {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && os.SameFile(fi, f.fi)
}

// release drops one reference, closing the file with the last, once the
// views in flight on other goroutines return. A goroutine in a view of f
// must not drop f's last reference.
func (f *dataFile) release() {
	if f.refs.Add(-1) != 0 {
		return
	}
	f.txMu.Lock()
	f.closed = true
	for f.active > 0 {
		f.idle.Wait()
	}
	for _, t := range f.txAll {
		_ = t.tx.Rollback()
	}
	f.txAll, f.txFree = nil, nil
	f.txMu.Unlock()
	_ = f.db.Close()
}

// view runs fn in a read transaction of f, one taken from f's pool (or
// begun) and put back after. Nothing fn reads from it may outlive fn. It
// returns ErrClosed once f's last reference is released (a Snapshot
// closed while another goroutine reads from it).
func (f *dataFile) view(fn func(t *fileTx) error) error {
	f.txMu.Lock()
	if f.closed {
		f.txMu.Unlock()
		return fmt.Errorf("%w: %s", ErrClosed, f.path)
	}
	f.active++
	var t *fileTx
	if n := len(f.txFree); n > 0 {
		t, f.txFree = f.txFree[n-1], f.txFree[:n-1]
	}
	f.txMu.Unlock()
	defer func() {
		f.txMu.Lock()
		if t != nil {
			f.txFree = append(f.txFree, t)
		}
		if f.active--; f.active == 0 {
			f.idle.Broadcast()
		}
		f.txMu.Unlock()
	}()
	if t == nil {
		tx, err := f.db.Begin(false)
		if err != nil {
			return fmt.Errorf("%s: starting a read: %w", f.path, err)
		}
		t = &fileTx{tx: tx}
		f.txMu.Lock()
		f.txAll = append(f.txAll, t)
		f.txMu.Unlock()
	}
	return fn(t)
}
