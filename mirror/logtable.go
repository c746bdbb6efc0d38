package mirror

import (
	"hash/maphash"
)

// logSlot is one slot of a logTable: a stage id's 32 bytes and its log
// sequence number plus one (0: empty, slotDeleted: deleted).
type logSlot struct {
	key  [32]byte
	seq1 uint64
}

const slotDeleted = ^uint64(0)

// logTable maps 32-byte stage ids to log sequence numbers: an open
// addressing hash table (linear probing, at most half full), in a
// Scratch once it passes heapSlots, so that the staging log's index of a
// sync, 40 bytes a slot, is not on the Go heap (see Scratch). Hashing is
// seeded per table, so a registry cannot choose ids that collide. Not
// safe for concurrent use: stageLog locks it.
type logTable struct {
	dir   string
	seed  maphash.Seed
	s     *Scratch[logSlot] // nil while the slots are on the heap
	slots []logSlot
	live  int // entries
	used  int // entries and deleted slots
}

func newLogTable(dir string) (*logTable, error) {
	t := &logTable{dir: dir, seed: maphash.MakeSeed()}
	if err := t.resize(64); err != nil {
		return nil, err
	}
	return t, nil
}

// heapSlots is the largest table kept on the Go heap (40 KiB): a scratch
// file costs a local edit of one stage more than its whole index.
const heapSlots = 1024

// newSlots returns n empty slots: on the heap up to heapSlots, else in a
// new Scratch (returned too, to close).
func newSlots(dir string, n int) (*Scratch[logSlot], []logSlot, error) {
	if n <= heapSlots {
		return nil, make([]logSlot, n), nil
	}
	s, err := NewScratch[logSlot](dir)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Grow(n); err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, s.All(), nil
}

// resize moves every entry into a new table of n slots.
func (t *logTable) resize(n int) error {
	s, slots, err := newSlots(t.dir, n)
	if err != nil {
		return err
	}
	old, oldS := t.slots, t.s
	t.s, t.slots, t.live, t.used = s, slots, 0, 0
	for i := range old {
		if sl := &old[i]; sl.seq1 != 0 && sl.seq1 != slotDeleted {
			t.set(sl.key, sl.seq1-1)
		}
	}
	return oldS.Close()
}

func (t *logTable) home(k *[32]byte) int {
	return int(maphash.Bytes(t.seed, k[:]) & uint64(len(t.slots)-1))
}

// find returns the slot holding k, or -1.
func (t *logTable) find(k [32]byte) int {
	for i := t.home(&k); ; i = (i + 1) & (len(t.slots) - 1) {
		switch sl := &t.slots[i]; {
		case sl.seq1 == 0:
			return -1
		case sl.seq1 != slotDeleted && sl.key == k:
			return i
		}
	}
}

func (t *logTable) get(k [32]byte) (uint64, bool) {
	if i := t.find(k); i >= 0 {
		return t.slots[i].seq1 - 1, true
	}
	return 0, false
}

// set maps k to seq. It grows the table first when it would be more than
// half full; growing can fail (a full disk).
func (t *logTable) set(k [32]byte, seq uint64) error {
	if i := t.find(k); i >= 0 {
		t.slots[i].seq1 = seq + 1
		return nil
	}
	if err := t.reserve(1); err != nil {
		return err
	}
	i := t.home(&k)
	for t.slots[i].seq1 != 0 && t.slots[i].seq1 != slotDeleted {
		i = (i + 1) & (len(t.slots) - 1)
	}
	if t.slots[i].seq1 == 0 {
		t.used++
	}
	t.slots[i] = logSlot{key: k, seq1: seq + 1}
	t.live++
	return nil
}

// reserve makes room for extra more entries, so that the next extra sets
// do not grow the table.
func (t *logTable) reserve(extra int) error {
	if 2*(t.used+extra) <= len(t.slots) {
		return nil
	}
	n := len(t.slots)
	for 4*(t.live+extra) > n {
		n *= 2
	}
	return t.resize(n)
}

func (t *logTable) delete(k [32]byte) {
	if i := t.find(k); i >= 0 {
		t.slots[i].seq1 = slotDeleted
		t.live--
	}
}

// all calls fn for every entry, in no order.
func (t *logTable) all(fn func(k *[32]byte, seq uint64)) {
	for i := range t.slots {
		if sl := &t.slots[i]; sl.seq1 != 0 && sl.seq1 != slotDeleted {
			fn(&sl.key, sl.seq1-1)
		}
	}
}

func (t *logTable) close() error {
	err := t.s.Close()
	t.s, t.slots = nil, nil
	return err
}
