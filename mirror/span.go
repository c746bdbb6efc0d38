package mirror

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// The generations a manifest keeps are, oldest first, the archived ones,
// whose records are in archive files (a span of stamps for each file),
// then the held ones, whose records the manifest holds (at most
// 2×archiveLen). An archived generation costs 16 bytes of flat memory,
// with no pointer for the garbage collector to follow, and manifests
// share the spans they have in common: what a publish does with its
// history (read the manifest, apply the keep policy, write and check the
// next one) walks the archive files and the stamps, never a record per
// generation.

// stamp is an archived generation: its number and its publish time
// (Unix nanoseconds; noTime for none), as its archive entry lists it.
type stamp struct {
	n uint64
	t int64
}

// published returns the stamp's publish time (zero for none).
func (st stamp) published() time.Time { return fromUnix(st.t) }

// stampOf returns the stamp of generation g.
func stampOf(g *genRecord) stamp { return stamp{g.Generation, unixTime(g.Published)} }

// span is the archive entry of one archive file: the kept generations
// whose records the file holds. It is immutable once made (but for the
// records decoded from the file, set by the first decode to finish):
// manifests share the spans they have in common, and with them those
// records. Safe for concurrent use.
type span struct {
	id uint64 // the archive file's first generation, which names it
	// gens are the generations, oldest first (never empty); a damaged
	// entry's lists generation id alone.
	gens    []stamp
	entry   []byte // the manifest entry that lists them
	damaged bool   // the entry could not be read
	// oldest is the earliest publish time of gens (noTime when one has
	// none): the keep policy reads no stamp of a span it keeps by age.
	oldest  int64
	decoded atomic.Pointer[[]*genRecord]
}

// newSpan returns the span of the archive file id that lists gens (not
// empty), with its entry.
func newSpan(id uint64, gens []stamp) *span {
	return makeSpan(id, gens, archiveEntry(gens))
}

// makeSpan returns the span of the archive file id that lists gens (not
// empty) in entry.
func makeSpan(id uint64, gens []stamp, entry []byte) *span {
	sp := &span{id: id, gens: gens, entry: entry, oldest: gens[0].t}
	for _, st := range gens[1:] {
		sp.oldest = min(sp.oldest, st.t)
	}
	return sp
}

// readSpan returns the span of the archive entry v of the archive file
// id: prev's when prev (nil: none) read the same entry, else parsed (a
// damaged entry makes a damaged span: reads of the current generation go
// on, the history fails, see manifest.decode).
func (prev *manifest) readSpan(id uint64, v []byte) *span {
	if prev != nil {
		i, ok := slices.BinarySearchFunc(prev.spans, id, func(sp *span, id uint64) int { return cmp.Compare(sp.id, id) })
		if ok && bytes.Equal(prev.spans[i].entry, v) {
			return prev.spans[i]
		}
	}
	gens, err := parseArchiveEntry(id, v)
	if err != nil {
		return damagedSpan(id)
	}
	return makeSpan(id, gens, bytes.Clone(v))
}

// damagedSpan stands for an entry, keyed id, that could not be read among
// the archive entries: it lists generation id.
func damagedSpan(id uint64) *span {
	return &span{id: id, gens: []stamp{{id, noTime}}, damaged: true, oldest: noTime}
}

func (sp *span) first() uint64 { return sp.gens[0].n }
func (sp *span) last() uint64  { return sp.gens[len(sp.gens)-1].n }

// stub returns the lazy record of the span's k-th generation.
func (sp *span) stub(k int) *genRecord {
	st := sp.gens[k]
	return &genRecord{Generation: st.n, Published: st.published(), lazy: true, archived: true, archive: sp.id, damaged: sp.damaged}
}

// records returns the span's records decoded (read from its archive file
// through archives, see manifest.decode, the first time). The records
// are kept in the span, for every manifest that shares it: mf is one of
// them (it names the mirror and the archive files). The slice is
// shared: do not modify it.
func (sp *span) records(mf *manifest, archives archivesRead) ([]*genRecord, error) {
	if p := sp.decoded.Load(); p != nil {
		return *p, nil
	}
	recs := make([]*genRecord, len(sp.gens))
	for k := range sp.gens {
		recs[k] = sp.stub(k)
		if err := mf.decode(recs[k], archives); err != nil {
			return nil, err
		}
	}
	if !sp.decoded.CompareAndSwap(nil, &recs) { // another decode finished first
		return *sp.decoded.Load(), nil
	}
	return recs, nil
}

// archiveEntry encodes the archive entry that lists gens.
func archiveEntry(gens []stamp) []byte {
	v := make([]byte, 1, 1+archivedLen*len(gens))
	v[0] = entryArchived
	for _, st := range gens {
		v = binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(v, st.n), uint64(st.t))
	}
	return v
}

// parseArchiveEntry reads the archive entry v of the archive file whose
// first record is generation id's: the generations it lists, checked to
// be in order from id on.
func parseArchiveEntry(id uint64, v []byte) ([]stamp, error) {
	if len(v) < 1+archivedLen || v[0] != entryArchived || (len(v)-1)%archivedLen != 0 {
		return nil, fmt.Errorf("the entry of archive file %s is damaged", archiveName(id))
	}
	gens := make([]stamp, 0, (len(v)-1)/archivedLen)
	for p := v[1:]; len(p) > 0; p = p[archivedLen:] {
		n := binary.BigEndian.Uint64(p)
		if n < id || (len(gens) > 0 && n <= gens[len(gens)-1].n) {
			return nil, fmt.Errorf("the entry of archive file %s lists generation %d out of order", archiveName(id), n)
		}
		gens = append(gens, stamp{n, int64(binary.BigEndian.Uint64(p[8:]))})
	}
	return gens, nil
}

// setSpans makes spans (oldest first; a slice no other manifest appends
// to) the manifest's archived generations. Call it before the manifest
// is shared: it is not safe for concurrent use.
func (mf *manifest) setSpans(spans []*span) {
	mf.spans, mf.starts, mf.narch = spans, make([]int, len(spans)), 0
	for i, sp := range spans {
		mf.starts[i] = mf.narch
		mf.narch += len(sp.gens)
	}
}

// count returns how many generations the manifest keeps.
func (mf *manifest) count() int { return mf.narch + len(mf.gens) }

// oldest and newest are the first and last kept generations' numbers
// (a manifest keeps its current generation, held).
func (mf *manifest) oldest() uint64 {
	if len(mf.spans) > 0 {
		return mf.spans[0].first()
	}
	return mf.gens[0].Generation
}

func (mf *manifest) newest() uint64 { return mf.gens[len(mf.gens)-1].Generation }

// index returns the position of generation g among the kept ones.
func (mf *manifest) index(g uint64) (int, bool) {
	if len(mf.gens) > 0 && g >= mf.gens[0].Generation {
		i, ok := mf.heldIndex(g)
		return mf.narch + i, ok
	}
	s, _ := slices.BinarySearchFunc(mf.spans, g, func(sp *span, g uint64) int { return cmp.Compare(sp.last(), g) })
	if s == len(mf.spans) {
		return mf.narch, false
	}
	k, ok := slices.BinarySearchFunc(mf.spans[s].gens, g, func(st stamp, g uint64) int { return cmp.Compare(st.n, g) })
	return mf.starts[s] + k, ok
}

// heldIndex returns the position of generation g in mf.gens.
func (mf *manifest) heldIndex(g uint64) (int, bool) {
	return slices.BinarySearchFunc(mf.gens, g, func(r *genRecord, g uint64) int { return cmp.Compare(r.Generation, g) })
}

// has reports whether the manifest keeps generation g.
func (mf *manifest) has(g uint64) bool {
	_, ok := mf.index(g)
	return ok
}

// at returns the record of the i-th kept generation as the manifest
// holds it: a new lazy stub when it is archived.
func (mf *manifest) at(i int) *genRecord {
	if i >= mf.narch {
		return mf.gens[i-mf.narch]
	}
	s, ok := slices.BinarySearch(mf.starts, i)
	if !ok {
		s--
	}
	return mf.spans[s].stub(i - mf.starts[s])
}

// checkOrder checks that the spans and the held records list their
// generations in increasing order.
func (mf *manifest) checkOrder() error {
	prev, seen := uint64(0), false
	next := func(first, last uint64) error {
		if seen && first <= prev {
			return fmt.Errorf("generation %d is listed after %d", first, prev)
		}
		prev, seen = last, true
		return nil
	}
	for _, sp := range mf.spans { // a span's own order is checked when parsed
		if err := next(sp.first(), sp.last()); err != nil {
			return err
		}
	}
	for _, g := range mf.gens {
		if err := next(g.Generation, g.Generation); err != nil {
			return err
		}
	}
	return nil
}

// cursor walks a manifest's kept generation numbers, oldest first.
type cursor struct {
	mf   *manifest
	s, k int // spans[s].gens[k], or gens[k] once s is len(spans)
}

// peek returns the generation number under the cursor (false: past the
// newest).
func (c *cursor) peek() (uint64, bool) {
	for c.s < len(c.mf.spans) {
		if c.k < len(c.mf.spans[c.s].gens) {
			return c.mf.spans[c.s].gens[c.k].n, true
		}
		c.s, c.k = c.s+1, 0
	}
	if c.k < len(c.mf.gens) {
		return c.mf.gens[c.k].Generation, true
	}
	return 0, false
}

func (c *cursor) next() { c.k++ }

// skipShared moves c and d, on the same generation, past the rest of
// the span both are in when they share it (the rest of its generations
// are the same), and reports whether it did.
func skipShared(c, d *cursor) bool {
	if c.s < len(c.mf.spans) && d.s < len(d.mf.spans) && c.mf.spans[c.s] == d.mf.spans[d.s] {
		c.s, c.k, d.s, d.k = c.s+1, 0, d.s+1, 0
		return true
	}
	return false
}
