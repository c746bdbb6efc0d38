package mirror

import (
	"bytes"
	"os"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// dataFile is one open data file of a format-2 mirror: a base or a
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

	// view reuses read transactions, as a snapshot's point reads do: the
	// file is immutable, so one never goes stale, and bbolt's Begin and
	// Rollback cost more than a look-up. Each is used by one goroutine at
	// a time; all are rolled back before the file is closed.
	txMu   sync.Mutex
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

type openBucket struct {
	name string
	b    *bolt.Bucket // nil: missing
	c    *bolt.Cursor
}

// bucket returns the top-level bucket name, or nil if it is missing.
func (t *fileTx) bucket(name []byte) *bolt.Bucket { return t.opened(name).b }

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
	f := &dataFile{path: path, db: db, fi: fi}
	f.refs.Store(1)
	return f, nil
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

// release drops one reference, closing the file with the last. The
// caller must not be in view.
func (f *dataFile) release() {
	if f.refs.Add(-1) == 0 {
		f.txMu.Lock()
		for _, t := range f.txAll {
			_ = t.tx.Rollback()
		}
		f.txAll, f.txFree = nil, nil
		f.txMu.Unlock()
		_ = f.db.Close()
	}
}

// view runs fn in a read transaction of f, one taken from f's pool (or
// begun) and put back after. Nothing fn reads from it may outlive fn. The
// caller holds a reference to f.
func (f *dataFile) view(fn func(t *fileTx) error) error {
	f.txMu.Lock()
	var t *fileTx
	if n := len(f.txFree); n > 0 {
		t, f.txFree = f.txFree[n-1], f.txFree[:n-1]
	}
	f.txMu.Unlock()
	if t == nil {
		tx, err := f.db.Begin(false)
		if err != nil {
			return corruptf(f.path, "starting a read: %v", err)
		}
		t = &fileTx{tx: tx}
		f.txMu.Lock()
		f.txAll = append(f.txAll, t)
		f.txMu.Unlock()
	}
	defer func() {
		f.txMu.Lock()
		f.txFree = append(f.txFree, t)
		f.txMu.Unlock()
	}()
	return fn(t)
}
