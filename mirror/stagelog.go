package mirror

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	gosync "sync"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// bucketLog holds a sync's staged stages in arrival order (see stageLog).
var bucketLog = []byte("log")

// stageLog is how a sync stages stages. A registry lists stages in its own
// order, so keying staged records by id made every commit a page of
// random inserts: each one rewrote a leaf holding two or three other
// records, plus the name and signature index pages it touched (about 4 MB
// written per 200-stage page, over 2 GB for a 100k-stage registry).
// Instead the records are appended to bucket "log" under 8-byte big-endian
// sequence numbers, each value being uvarint(len id) ‖ id ‖ record (the
// record exactly as a snapshot stores it under id, checksum included), and
// the id → sequence index is a hash table in a scratch file (logTable,
// off the Go heap), rebuilt by one scan of the log when an interrupted
// sync is resumed. Publish sorts that index and
// builds the snapshot, name and signature indexes included, from it.
//
// The index is guarded by mu because a sync reads staged stages (Staged)
// from its verification goroutines while a page commits. Index changes
// are applied only after their transaction commits.
type stageLog struct {
	mu gosync.RWMutex
	// hex indexes ids that are 64 lowercase hex characters (every id a
	// registry hands out) in a scratch-file hash table, off the Go heap;
	// odd indexes any other.
	hex  *logTable
	odd  map[string]uint64
	next uint64
}

// newStageLog returns an empty index whose table lives in a scratch file
// in dir. Close it when the writer is done.
func newStageLog(dir string) (*stageLog, error) {
	t, err := newLogTable(dir)
	if err != nil {
		return nil, err
	}
	return &stageLog{hex: t, odd: map[string]uint64{}}, nil
}

// close releases the index's scratch file. Nil-safe and idempotent.
func (l *stageLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hex != nil {
		_ = l.hex.close()
		l.hex = nil
	}
}

func (l *stageLog) get(id string) (uint64, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.getLocked(id)
}

func (l *stageLog) getLocked(id string) (uint64, bool) {
	if k, ok := store.IDBytes(id); ok {
		return l.hex.get(k)
	}
	seq, found := l.odd[id]
	return seq, found
}

// setLocked records id at seq (or its removal). It can fail only by
// growing the table: reserve room first where failing is not allowed.
func (l *stageLog) setLocked(id string, seq uint64, present bool) error {
	if k, ok := store.IDBytes(id); ok {
		if present {
			return l.hex.set(k, seq)
		}
		l.hex.delete(k)
		return nil
	}
	if present {
		l.odd[id] = seq
	} else {
		delete(l.odd, id)
	}
	return nil
}

// logValue encodes one log entry.
func logValue(r *Record) []byte {
	v := make([]byte, 0, binary.MaxVarintLen64+len(r.ID)+recordSize(r))
	v = binary.AppendUvarint(v, uint64(len(r.ID)))
	v = append(v, r.ID...)
	return appendRecord(v, r)
}

// splitLogValue returns the id and record of a log entry (sub-slices of v).
func splitLogValue(v []byte) (id, record []byte, err error) {
	n, w := binary.Uvarint(v)
	if w <= 0 || n == 0 || n > uint64(len(v)-w) {
		return nil, nil, errors.New("log entry has no valid id length")
	}
	return v[w : w+int(n)], v[w+int(n):], nil
}

// logTx is one transaction's view of the log: lookups see the changes
// made earlier in the same transaction, and commit publishes them to the
// index once the transaction has committed.
type logTx struct {
	l       *stageLog
	b       *bolt.Bucket
	next    uint64
	changed map[string]logChange
}

type logChange struct {
	seq     uint64
	present bool
}

func (l *stageLog) begin(tx *bolt.Tx) (*logTx, error) {
	b := tx.Bucket(bucketLog)
	if b == nil {
		return nil, fmt.Errorf("%w: the staging file has no log bucket", ErrCorrupt)
	}
	// Keys only grow: pack leaves full instead of splitting them in half.
	b.FillPercent = 1.0
	l.mu.RLock()
	next := l.next
	l.mu.RUnlock()
	return &logTx{l: l, b: b, next: next, changed: map[string]logChange{}}, nil
}

func (t *logTx) lookup(id string) (uint64, bool) {
	if c, ok := t.changed[id]; ok {
		return c.seq, c.present
	}
	return t.l.get(id)
}

// put appends r, replacing whatever was staged under its id.
func (t *logTx) put(r *Record) error {
	if err := t.delete(string(r.ID)); err != nil {
		return err
	}
	seq := t.next
	t.next++
	if err := t.b.Put(beUint64(seq), logValue(r)); err != nil {
		return err
	}
	t.changed[string(r.ID)] = logChange{seq: seq, present: true}
	return nil
}

// delete removes the stage staged under id, if any.
func (t *logTx) delete(id string) error {
	seq, ok := t.lookup(id)
	if !ok {
		return nil
	}
	if err := t.b.Delete(beUint64(seq)); err != nil {
		return err
	}
	t.changed[id] = logChange{}
	return nil
}

// prepare makes room in the index for the transaction's changes, so that
// commit cannot fail. Call it before the bbolt transaction commits.
func (t *logTx) prepare() error {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	return t.l.hex.reserve(len(t.changed))
}

// commit applies the transaction's changes to the index; call it only
// after prepare and after the bbolt transaction committed.
func (t *logTx) commit() {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	for id, c := range t.changed {
		if err := t.l.setLocked(id, c.seq, c.present); err != nil {
			panic("mirror: staging index changed after prepare: " + err.Error())
		}
	}
	t.l.next = max(t.l.next, t.next)
}

// value returns the record value staged under id (bbolt memory, valid
// only during tx).
func (l *stageLog) value(tx *bolt.Tx, id string) ([]byte, bool, error) {
	seq, ok := l.get(id)
	if !ok {
		return nil, false, nil
	}
	b := tx.Bucket(bucketLog)
	if b == nil {
		return nil, false, fmt.Errorf("%w: the staging file has no log bucket", ErrCorrupt)
	}
	v := b.Get(beUint64(seq))
	if v == nil {
		// Replaced by a commit that finished after the look-up.
		return nil, false, nil
	}
	gotID, rec, err := splitLogValue(v)
	if err != nil || string(gotID) != id {
		return nil, false, fmt.Errorf("%w: staged log entry %d does not hold stage %s", ErrCorrupt, seq, id)
	}
	return rec, true, nil
}

// load rebuilds the index from the log of a resumed staging file, and
// checks it: the file is fsynced only every stagingSyncInterval, so after
// a power loss it may be torn. Every log record and quarantine entry must
// pass its checksum, and a bbolt panic on a damaged page is an error.
// Anything wrong means the file is discarded, never resumed.
func (l *stageLog) load(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("reading the staging file panicked: %v", p)
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		if b == nil {
			return errors.New("no log bucket")
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq, ok := u64(k)
			if !ok {
				return fmt.Errorf("log key %x is not a sequence number", k)
			}
			id, rec, err := splitLogValue(v)
			if err != nil {
				return fmt.Errorf("log entry %d: %w", seq, err)
			}
			if _, err := open(id, rec); err != nil {
				return fmt.Errorf("log entry %d (stage %q): %w", seq, id, err)
			}
			if _, dup := l.getLocked(string(id)); dup {
				return fmt.Errorf("stage %q is in the log twice", id)
			}
			if err := l.setLocked(string(id), seq, true); err != nil {
				return err
			}
			l.next = max(l.next, seq+1)
		}
		if qb := tx.Bucket(bucketQuarantine); qb != nil {
			qc := qb.Cursor()
			for k, v := qc.First(); k != nil; k, v = qc.Next() {
				if _, err := decodeQuarantine(k, v); err != nil {
					return fmt.Errorf("quarantine entry %q: %w", k, err)
				}
			}
		}
		return nil
	})
}

// keys returns the ids of every staged stage: those of 64 lowercase hex
// characters as the bytes they encode, in a Scratch the caller closes,
// any other as itself.
func (l *stageLog) keys() (*Scratch[[32]byte], []store.StageID, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	hs, err := NewScratch[[32]byte](l.hex.dir)
	if err != nil {
		return nil, nil, err
	}
	l.hex.all(func(k *[32]byte, _ uint64) {
		if err == nil {
			err = hs.Append(*k)
		}
	})
	if err != nil {
		hs.Close()
		return nil, nil, err
	}
	os := make([]store.StageID, 0, len(l.odd))
	for id := range l.odd {
		os = append(os, store.StageID(id))
	}
	return hs, os, nil
}

// sorted returns the sequence numbers of every staged stage, in id order,
// in a Scratch the caller closes.
func (l *stageLog) sorted() (*Scratch[uint64], error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	dir := l.hex.dir
	type hexRef struct {
		k   [32]byte
		seq uint64
	}
	refs, err := NewScratch[hexRef](dir)
	if err != nil {
		return nil, err
	}
	defer refs.Close()
	l.hex.all(func(k *[32]byte, seq uint64) {
		if err == nil {
			err = refs.Append(hexRef{*k, seq})
		}
	})
	if err != nil {
		return nil, err
	}
	hs := refs.All()
	slices.SortFunc(hs, func(a, b hexRef) int { return bytes.Compare(a.k[:], b.k[:]) })
	type oddRef struct {
		id  string
		seq uint64
	}
	os := make([]oddRef, 0, len(l.odd))
	for id, seq := range l.odd {
		os = append(os, oddRef{id, seq})
	}
	slices.SortFunc(os, func(a, b oddRef) int { return strings.Compare(a.id, b.id) })
	// Merge the two: lowercase hex sorts like the bytes it encodes.
	out, err := NewScratch[uint64](dir)
	if err != nil {
		return nil, err
	}
	var buf [64]byte
	for err == nil && (len(hs) > 0 || len(os) > 0) {
		if len(hs) > 0 {
			hex.Encode(buf[:], hs[0].k[:])
			if len(os) == 0 || string(buf[:]) < os[0].id {
				err = out.Append(hs[0].seq)
				hs = hs[1:]
				continue
			}
		}
		err = out.Append(os[0].seq)
		os = os[1:]
	}
	if err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}
