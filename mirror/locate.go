package mirror

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// locator finds the record a stages entry stands for, in one read
// transaction of a snapshot of either format: in format 1 the stages
// value is the record itself; in format 2 it names a log entry (see
// stagesValue). A locator keeps a log cursor, so one goroutine uses it at
// a time, and it lives no longer than its transaction; so do the records
// it returns, which point into the memory map.
type locator struct {
	log *bolt.Bucket // nil in format 1
	cur *bolt.Cursor
}

// newLocator returns the locator of tx, a transaction on a snapshot of
// format version. A format-2 snapshot without a log bucket is damaged.
func newLocator(tx *bolt.Tx, version uint32) (locator, error) {
	if version < 2 {
		return locator{}, nil
	}
	b := tx.Bucket(bucketLog)
	if b == nil {
		return locator{}, fmt.Errorf("bucket %q is missing", bucketLog)
	}
	return locator{log: b}, nil
}

// record returns the record of the stages entry (id, v). The error says
// what is wrong with a damaged entry; the caller names the file.
func (l *locator) record(id, v []byte) ([]byte, error) {
	if l.log == nil {
		return v, nil
	}
	if len(v) != stagesValueLen {
		return nil, fmt.Errorf("stages entry has %d bytes, want %d", len(v), stagesValueLen)
	}
	if l.cur == nil {
		l.cur = l.log.Cursor()
	}
	seq := v[:8]
	k, lv := l.cur.Seek(seq)
	if !bytes.Equal(k, seq) {
		return nil, fmt.Errorf("its log entry %x is missing", seq)
	}
	got, rec, err := splitLogValue(lv)
	if err != nil {
		return nil, fmt.Errorf("log entry %x: %v", seq, err)
	}
	if !bytes.Equal(got, id) {
		return nil, fmt.Errorf("log entry %x holds stage %q", seq, got)
	}
	return rec, nil
}
