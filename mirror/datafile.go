package mirror

import (
	"os"
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

// release drops one reference, closing the file with the last.
func (f *dataFile) release() {
	if f.refs.Add(-1) == 0 {
		_ = f.db.Close()
	}
}
