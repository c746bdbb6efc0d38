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
// the id → sequence index lives in memory, rebuilt by one scan of the log
// when an interrupted sync is resumed. Publish sorts that index and
// builds the snapshot, name and signature indexes included, from it.
//
// The index is guarded by mu because a sync reads staged stages (Staged)
// from its verification goroutines while a page commits. Index changes
// are applied only after their transaction commits.
type stageLog struct {
	mu gosync.RWMutex
	// hex indexes ids that are 64 lowercase hex characters (every id a
	// registry hands out) in 40 bytes an entry; odd indexes any other.
	hex  map[[32]byte]uint64
	odd  map[string]uint64
	next uint64
}

func newStageLog() *stageLog {
	return &stageLog{hex: map[[32]byte]uint64{}, odd: map[string]uint64{}}
}

func (l *stageLog) get(id string) (uint64, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.getLocked(id)
}

func (l *stageLog) getLocked(id string) (uint64, bool) {
	if k, ok := store.IDBytes(id); ok {
		seq, found := l.hex[k]
		return seq, found
	}
	seq, found := l.odd[id]
	return seq, found
}

func (l *stageLog) setLocked(id string, seq uint64, present bool) {
	if k, ok := store.IDBytes(id); ok {
		if present {
			l.hex[k] = seq
		} else {
			delete(l.hex, k)
		}
		return
	}
	if present {
		l.odd[id] = seq
	} else {
		delete(l.odd, id)
	}
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
// in-memory index once the transaction has committed.
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

// commit applies the transaction's changes to the index; call it only
// after the bbolt transaction committed.
func (t *logTx) commit() {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	for id, c := range t.changed {
		t.l.setLocked(id, c.seq, c.present)
	}
	t.l.next = max(t.l.next, t.next)
}

// raw returns a copy of the stage JSON staged under id.
func (l *stageLog) raw(tx *bolt.Tx, id string) ([]byte, bool, error) {
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
	r, err := recordRaw(gotID, rec)
	if err != nil {
		return nil, false, fmt.Errorf("%w: staged record %s: %v", ErrCorrupt, id, err)
	}
	return bytes.Clone(r), true, nil
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
			l.setLocked(string(id), seq, true)
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
// characters as the bytes they encode, any other as itself.
func (l *stageLog) keys() ([][32]byte, []store.StageID) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	hs := make([][32]byte, 0, len(l.hex))
	for k := range l.hex {
		hs = append(hs, k)
	}
	os := make([]store.StageID, 0, len(l.odd))
	for id := range l.odd {
		os = append(os, store.StageID(id))
	}
	return hs, os
}

// sorted returns the sequence numbers of every staged stage, in id order.
func (l *stageLog) sorted() []uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	type hexRef struct {
		k   [32]byte
		seq uint64
	}
	hs := make([]hexRef, 0, len(l.hex))
	for k, seq := range l.hex {
		hs = append(hs, hexRef{k, seq})
	}
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
	out := make([]uint64, 0, len(hs)+len(os))
	var buf [64]byte
	for len(hs) > 0 || len(os) > 0 {
		if len(hs) > 0 {
			hex.Encode(buf[:], hs[0].k[:])
			if len(os) == 0 || string(buf[:]) < os[0].id {
				out = append(out, hs[0].seq)
				hs = hs[1:]
				continue
			}
		}
		out = append(out, os[0].seq)
		os = os[1:]
	}
	return out
}
