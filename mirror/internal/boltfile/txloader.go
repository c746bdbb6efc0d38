package boltfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TxLoader writes the same buckets and entries as a PageLoader, through
// bbolt's own transactions: the buckets are created in a first
// transaction, and the entries put in key order, a batch of about
// txBatchBytes per transaction, with FillPercent 1.0 (the keys arrive
// sorted, so full leaves are never split again). It is slower than a
// PageLoader (it writes every page through bbolt's copy-on-write and the
// page cache), and is there for when the page writer is suspected:
// readers cannot tell the files apart (other than by bbolt's page
// layout, freelist and transaction ids).
type TxLoader struct {
	db      *bolt.DB
	tx      *bolt.Tx
	open    map[string]*bolt.Bucket // in tx
	pending int                     // bytes put in tx
	buckets loadBuckets
}

// txBatchBytes is how many bytes of keys and values a TxLoader puts per
// transaction.
const txBatchBytes = 4 << 20

// NewTxLoader starts a bbolt file at path (which must be empty or absent)
// with the given buckets, all empty.
func NewTxLoader(path string, pageSize int, buckets [][]byte) (*TxLoader, error) {
	lb, err := newLoadBuckets(buckets)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		return nil, fmt.Errorf("%s is not empty", path)
	}
	db, err := bolt.Open(path, 0o644, &bolt.Options{PageSize: pageSize, Timeout: time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	l := &TxLoader{db: db, buckets: lb}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range lb.names {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// Put appends k → v to bucket, whose previous key must sort below k.
func (l *TxLoader) Put(bucket, k, v []byte) error {
	if _, err := l.buckets.accept(bucket, k, v); err != nil {
		return err
	}
	b, err := l.bucket(bucket)
	if err != nil {
		return err
	}
	// bbolt copies the key but keeps v until the commit, and a Loader's
	// caller may reuse v as soon as Put returns.
	if err := b.Put(k, bytes.Clone(v)); err != nil {
		return fmt.Errorf("bucket %q: %w", bucket, err)
	}
	l.pending += len(k) + len(v)
	if l.pending >= txBatchBytes {
		return l.commit()
	}
	return nil
}

// bucket returns bucket in the open transaction, beginning one if needed.
func (l *TxLoader) bucket(name []byte) (*bolt.Bucket, error) {
	if l.tx == nil {
		tx, err := l.db.Begin(true)
		if err != nil {
			return nil, err
		}
		l.tx, l.open = tx, map[string]*bolt.Bucket{}
	}
	if b := l.open[string(name)]; b != nil {
		return b, nil
	}
	b := l.tx.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("bucket %q is missing from the file", name)
	}
	b.FillPercent = 1.0
	l.open[string(name)] = b
	return b, nil
}

// commit commits the open transaction, if any.
func (l *TxLoader) commit() error {
	if l.tx == nil {
		return nil
	}
	tx := l.tx
	l.tx, l.open, l.pending = nil, nil, 0
	return tx.Commit()
}

// Finish commits what is pending (bbolt fsyncs each commit) and closes
// the file. The loader is done after it, whatever it returns.
func (l *TxLoader) Finish() error {
	if err := l.commit(); err != nil {
		return err
	}
	return l.Close()
}

// Close rolls back what is not committed and closes the file. It may be
// called more than once.
func (l *TxLoader) Close() error {
	if l.db == nil {
		return nil
	}
	var err error
	if l.tx != nil {
		err = l.tx.Rollback()
		l.tx, l.open = nil, nil
	}
	err = errors.Join(err, l.db.Close())
	l.db = nil
	return err
}
