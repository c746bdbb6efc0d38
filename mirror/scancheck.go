package mirror

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/noether-mirror/mirror/store"
)

// scanBatch is how many base records a scan checks as one piece of work,
// and scanWindow how many pieces may be in flight at once.
const (
	scanBatch  = 128
	scanWindow = 16
)

// scanItem is one record of a scan: its key and value (the files' memory,
// valid in the scan's transactions), the delta it comes from (nil: the
// base) and, once checked, its id, its raw JSON or what is wrong with it.
// A base item also learns whether the overlay hides it (skip) and how
// many of its batch's delta items sort before it (before).
type scanItem struct {
	key, v, raw []byte
	id          store.StageID
	src         *layer
	err         error
	skip        bool
	before      int
}

// scanBatchItems is one batch of a scan: base items in id order, and the
// overlay's live items (from deltas) that sort at or before the last base
// item (after the batches before), or after every base item when the
// batch has none, in id order. done
// receives once its checks are over.
type scanBatchItems struct {
	base, delta []scanItem
	done        chan struct{}
}

// checker checks a scan's records on GOMAXPROCS goroutines, a batch at a
// time, keeping up to scanWindow batches in flight while the scan
// collects more, and emits the checked batches in order on the scan's
// goroutine; a damaged record stops the scan where it is.
//
// Everything that reads a record's memory runs in the checks: the
// CRC-32C of each record (most of a scan's time, bound by memory
// bandwidth), the copy of its id, and the comparisons that drop the base
// records the overlay hides (hidden, sorted) and place the overlay's
// records among the base's. The scan's goroutine walks the trees' pages,
// reads the overlay's records from their deltas, and compares the last
// base key of each batch with the overlay's ids, so the checks keep every
// core busy.
//
// The items are the files' memory: stop must return before the scan's
// transactions end. A checker is used by one scan's goroutine.
type checker struct {
	s      *snap
	emit   func(id store.StageID, raw []byte) error
	hidden []string

	cur      *scanBatchItems   // being collected
	inFlight []*scanBatchItems // sent to the checks, oldest first
	free     []*scanBatchItems
	work     chan *scanBatchItems // nil until the first flush
	quit     atomic.Bool          // stop: skip the checks left
	wg       sync.WaitGroup
}

// batch returns the batch being collected.
func (c *checker) batch() *scanBatchItems {
	if c.cur == nil {
		if n := len(c.free); n > 0 {
			c.cur, c.free = c.free[n-1], c.free[:n-1]
		} else {
			c.cur = &scanBatchItems{base: make([]scanItem, 0, scanBatch), done: make(chan struct{}, 1)}
		}
	}
	return c.cur
}

// addBase collects a base record and reports whether the batch's base
// part is full.
func (c *checker) addBase(k, v []byte) bool {
	b := c.batch()
	b.base = append(b.base, scanItem{key: k, v: v})
	return len(b.base) >= scanBatch
}

// baseLen is how many base records the batch being collected holds.
func (c *checker) baseLen() int {
	if c.cur == nil {
		return 0
	}
	return len(c.cur.base)
}

// addDelta collects one of the overlay's records, which sorts after the
// base items of the batches flushed before.
func (c *checker) addDelta(it scanItem) {
	b := c.batch()
	b.delta = append(b.delta, it)
}

// flush sends the collected batch to the checks, then emits checked
// batches while more than scanWindow are in flight.
func (c *checker) flush() error {
	if c.cur == nil {
		return nil
	}
	if c.work == nil {
		c.work = make(chan *scanBatchItems, scanWindow+1)
		for range runtime.GOMAXPROCS(0) {
			c.wg.Go(c.checks)
		}
	}
	c.inFlight = append(c.inFlight, c.cur)
	c.work <- c.cur
	c.cur = nil
	for len(c.inFlight) > scanWindow {
		if err := c.emitOldest(); err != nil {
			return err
		}
	}
	return nil
}

// checks is one checking goroutine: it runs until stop.
func (c *checker) checks() {
	for b := range c.work {
		if !c.quit.Load() {
			checkBase(b.base, c.hidden, b.delta)
			checkDelta(b.delta)
		}
		b.done <- struct{}{}
	}
}

// emitOldest waits for the oldest batch in flight and emits it.
func (c *checker) emitOldest() error {
	b := c.inFlight[0]
	<-b.done
	c.inFlight = c.inFlight[1:]
	err := c.emitAll(b)
	clear(b.base)
	clear(b.delta)
	b.base, b.delta = b.base[:0], b.delta[:0]
	c.free = append(c.free, b)
	return err
}

// finish checks and emits what is left.
func (c *checker) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	for len(c.inFlight) > 0 {
		if err := c.emitOldest(); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the checking goroutines, skipping the checks not yet begun,
// and returns once none is reading the files.
func (c *checker) stop() {
	if c.work == nil {
		return
	}
	c.quit.Store(true)
	close(c.work)
	c.wg.Wait()
	c.work = nil
}

// emitAll emits a checked batch in id order, stopping at a damaged record.
func (c *checker) emitAll(b *scanBatchItems) error {
	d := 0
	emitDelta := func(upTo int) error {
		for ; d < upTo; d++ {
			if err := c.emitOne(&b.delta[d]); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range b.base {
		it := &b.base[i]
		if it.skip && it.err == nil {
			continue
		}
		if err := emitDelta(it.before); err != nil {
			return err
		}
		if err := c.emitOne(it); err != nil {
			return err
		}
	}
	return emitDelta(len(b.delta))
}

// emitOne emits a checked item, or returns its damage as ErrCorrupt.
func (c *checker) emitOne(it *scanItem) error {
	if it.err != nil {
		return c.s.corrupt(it)
	}
	return c.emit(it.id, it.raw)
}

// checkBase checks a run of base items in id order: whether the overlay
// hides each (the sorted hidden), and if not, its id, how many of delta
// sort before it, and its record. (A fault on an item's key, before its
// place is known, stops the scan there without the overlay records of
// its batch that sort before it: a shorter prefix, still in order.)
func checkBase(part []scanItem, hidden []string, delta []scanItem) {
	h, d := -1, 0
	checkEach(part, func(it *scanItem) {
		if h < 0 { // the run's first: find where it starts
			first := string(it.key)
			h = sort.SearchStrings(hidden, first)
			d = sort.Search(len(delta), func(x int) bool { return string(delta[x].id) >= first })
		}
		for h < len(hidden) && hidden[h] < string(it.key) {
			h++
		}
		if h < len(hidden) && hidden[h] == string(it.key) {
			it.skip = true
			return
		}
		for d < len(delta) && string(delta[d].id) < string(it.key) {
			d++
		}
		it.before = d
		it.id = store.StageID(it.key)
		it.raw, it.err = recordRaw(it.key, it.v)
	})
}

// checkDelta checks a run of the overlay's items, whose ids are set.
func checkDelta(part []scanItem) {
	checkEach(part, func(it *scanItem) { it.raw, it.err = recordRaw(it.key, it.v) })
}

// checkEach runs check on each item of part in order. A memory fault
// reading an item (a file cut short under its mapping) is that item's
// error, and ends the run: the scan stops at it.
func checkEach(part []scanItem, check func(it *scanItem)) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	i := 0
	defer func() {
		if r := recover(); r != nil {
			part[i].err = fmt.Errorf("reading it panicked: %v", r)
			part[i].skip = false
		}
	}()
	for ; i < len(part); i++ {
		check(&part[i])
	}
}
