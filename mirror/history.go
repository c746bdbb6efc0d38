package mirror

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// KeepPolicy says which generations a mirror keeps: the Last newest,
// and every one published Within the given time of now. The current
// generation is always kept. The zero value keeps the last 30 and those
// of the last 7 days. A plain value.
type KeepPolicy struct {
	// Last is how many of the newest generations are kept; 0 means 30,
	// and the current one is kept whatever it says.
	Last int
	// Within keeps every generation published this recently; 0 means
	// 7 days, a negative value none by age.
	Within time.Duration
}

// Default keep policy.
const (
	DefaultKeepLast   = 30
	DefaultKeepWithin = 7 * 24 * time.Hour
)

func (p KeepPolicy) normalized() KeepPolicy {
	if p.Last <= 0 {
		p.Last = DefaultKeepLast
	}
	if p.Within == 0 {
		p.Within = DefaultKeepWithin
	}
	return p
}

// String renders the policy for a person: "the last 30 generations and
// those of the last 7 days".
func (p KeepPolicy) String() string {
	p = p.normalized()
	last := "the last generation"
	if p.Last > 1 {
		last = fmt.Sprintf("the last %d generations", p.Last)
	}
	if p.Within < 0 {
		return last
	}
	return last + " and those of the last " + spanText(p.Within)
}

// spanText renders d in days or hours when it is a whole number of them.
func spanText(d time.Duration) string {
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d%(24*time.Hour) == 0:
		return plural(int64(d/(24*time.Hour)), "day")
	case d%time.Hour == 0:
		return plural(int64(d/time.Hour), "hour")
	}
	return d.String()
}

// keeper returns whether the policy, applied now to n generations,
// keeps the i-th of them (oldest first), published at t.
func (p KeepPolicy) keeper(n int, now time.Time) func(i int, t time.Time) bool {
	p = p.normalized()
	last, cutoff := n-p.Last, now.Add(-p.Within) // published at cutoff or later: recent
	if p.Within == math.MaxInt64 {
		cutoff = time.Time{} // the longest window: every publish time, none too
	}
	return func(i int, t time.Time) bool {
		return i >= last || (p.Within > 0 && !t.Before(cutoff))
	}
}

// keep returns the generations of mf, and add after them (nil: none),
// that the policy keeps now: the spans (shared when the policy keeps all
// their generations) and the held records, oldest first, in new slices
// the caller owns (mf is not changed). A damaged entry fails: the policy
// cannot read its publish times.
func (p KeepPolicy) keep(mf *manifest, add *genRecord, now time.Time) (spans []*span, gens []*genRecord, err error) {
	held := mf.gens
	if mf.version < 3 { // a format-2 manifest's entries have no publish time
		recs, err := mf.records()
		if err != nil {
			return nil, nil, err
		}
		held = recs[mf.narch:]
	}
	n := mf.count()
	if add != nil {
		n++
	}
	keeps := p.keeper(n, now)
	for s, sp := range mf.spans {
		if sp.damaged {
			return nil, nil, damagedManifest(mf.path, "generation entry %d", sp.id)
		}
		// Its first generation kept by count, or its oldest publish time
		// by age: every one is.
		if keeps(mf.starts[s], fromUnix(sp.oldest)) {
			spans = append(spans, sp)
			continue
		}
		var kept []stamp // nil: every one so far
		for k, st := range sp.gens {
			ok := keeps(mf.starts[s]+k, st.published())
			switch {
			case ok && kept != nil:
				kept = append(kept, st)
			case !ok && kept == nil:
				kept = append(make([]stamp, 0, len(sp.gens)), sp.gens[:k]...)
			}
		}
		switch {
		case kept == nil:
			spans = append(spans, sp)
		case len(kept) > 0:
			spans = append(spans, newSpan(sp.id, kept))
		}
	}
	for i, g := range held {
		if g.damaged {
			return nil, nil, damagedManifest(mf.path, "generation entry %d", g.Generation)
		}
		if keeps(mf.narch+i, g.Published) {
			gens = append(gens, g)
		}
	}
	if add != nil && keeps(n-1, add.Published) {
		gens = append(gens, add)
	}
	return spans, gens, nil
}

// GCResult says what GC reclaimed. A plain value.
type GCResult struct {
	// Dropped lists the generations the policy no longer keeps.
	Dropped []uint64
	// Files and Bytes count the data files removed.
	Files int
	Bytes int64
	// Kept is the number of generations kept, Oldest the oldest of them.
	Kept   int
	Oldest uint64
}

// GC applies policy (nil: Options.Keep) now: generations it does not keep
// leave the manifest, and every data file no kept generation reads is
// removed, with leftovers of interrupted publishes. Publish does the
// same after every generation. GC takes the writer lock (ErrBusy while a
// sync runs). Readers that hold a collected generation keep reading it.
func (m *Mirror) GC(ctx context.Context, policy *KeepPolicy) (GCResult, error) {
	if err := ctx.Err(); err != nil {
		return GCResult{}, err
	}
	lock, stale, err := lockFile(m.lockPath())
	if err != nil {
		return GCResult{}, err
	}
	if stale {
		m.removeTemps() // PATH.gens's are swept below
	}
	defer func() {
		_ = lock.Truncate(0)
		_ = lock.Close() // closing the descriptor releases the flock
	}()
	if _, err := m.Reload(); err != nil {
		return GCResult{}, err
	}
	cur, err := m.acquire()
	if err != nil {
		return GCResult{}, err
	}
	defer cur.release()
	if cur.mf == nil {
		return GCResult{Kept: 1, Oldest: cur.meta.Generation}, nil // format 1 keeps no history
	}
	p := m.opts.Keep
	if policy != nil {
		p = *policy
	}
	// The entries have the publish times the policy reads: a generation
	// whose archive file is lost can be dropped.
	spans, gens, err := p.keep(cur.mf, nil, time.Now())
	if err != nil {
		return GCResult{}, err
	}
	mf := &manifest{current: cur.mf.current, state: cur.mf.state, version: cur.mf.version, gens: gens, path: m.path, opts: m.opts}
	mf.setSpans(spans)
	var res GCResult
	res.Dropped, _ = dropped(cur.mf, mf)
	if len(res.Dropped) > 0 {
		if _, err := m.writeManifestFile(mf); err != nil {
			return GCResult{}, err
		}
		// This Mirror's readers see the shorter history at once.
		if _, err := m.Reload(); err != nil {
			return GCResult{}, err
		}
	}
	swept, err := m.sweep(mf)
	res.Files, res.Bytes = swept.Files, swept.Bytes
	res.Kept, res.Oldest = mf.count(), mf.oldest()
	return res, err
}

// sweep removes every file of PATH.gens that no generation of mf reads:
// files of collected generations, and what interrupted publishes left.
// Only the holder of the writer lock calls it.
func (m *Mirror) sweep(mf *manifest) (GCResult, error) {
	dir := gensDir(m.path)
	recs, err := mf.records()
	if err != nil {
		return GCResult{}, err
	}
	keep := map[string]bool{}
	for _, g := range recs {
		for _, f := range g.gensFiles() {
			keep[f] = true
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return GCResult{}, err
	}
	var gone []string
	for _, e := range ents {
		name := e.Name()
		ours := strings.HasPrefix(name, "g") && (strings.Contains(name, ".tmp-") ||
			strings.HasSuffix(name, ".base") || strings.HasSuffix(name, ".delta") || strings.HasSuffix(name, ".archive"))
		if ours && !keep[name] && !e.IsDir() {
			gone = append(gone, name)
		}
	}
	res, err := removeFiles(dir, gone)
	if res.Files > 0 {
		_ = syncDir(dir)
	}
	return res, err
}

// removeFiles removes the files names of dir and counts them (one
// already gone is not an error, nor counted).
func removeFiles(dir string, names []string) (GCResult, error) {
	var res GCResult
	var errs []error
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err == nil {
			err = os.Remove(filepath.Join(dir, name))
		}
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			errs = append(errs, err)
		default:
			res.Files++
			res.Bytes += fi.Size()
		}
	}
	return res, errors.Join(errs...)
}

// sweepDropped removes the files that only the generations prev keeps
// and mf drops read, after a publish: without listing PATH.gens, or
// decoding more than those records and mf's oldest. A data file is read
// by a run of consecutive generations (a base from its compaction to the
// next one, a delta from its publish until a merge replaces it), so when
// mf drops prev's oldest generations, a file one of them reads that mf
// still needs is one mf's oldest reads. When it drops others (the keep
// policy changed, the clock went back), it sweeps as GC does. Only the
// holder of the writer lock calls it.
//
// It does not fsync PATH.gens after its removals: the next publish does,
// before its manifest. Until then a power loss can bring removed files
// back, which no manifest names; GC's full sweep removes them.
func (m *Mirror) sweepDropped(prev, mf *manifest) (GCResult, error) {
	gone, prefix := dropped(prev, mf)
	if !prefix {
		return m.sweep(mf)
	}
	if len(gone) == 0 {
		return GCResult{}, nil
	}
	archives := m.archives.seed(m.path)
	need := map[string]bool{}
	first := *mf.at(0)
	if err := mf.decode(&first, archives); err != nil {
		return GCResult{}, err
	}
	if first.archived {
		m.archives.remember(m.path, first.archive, archives)
	}
	for _, f := range first.files() {
		need[f] = true
	}
	for _, sp := range mf.spans {
		need[archiveName(sp.id)] = true
	}
	var files []string
	var errs []error
	for i := range gone { // prev's oldest
		g := *prev.at(i) // a held record is shared: decode a copy
		if err := prev.decode(&g, archives); err != nil {
			errs = append(errs, err) // its files stay, for GC
			continue
		}
		for _, f := range g.gensFiles() {
			if !need[f] {
				need[f] = true // once
				files = append(files, f)
			}
		}
	}
	res, err := removeFiles(gensDir(m.path), files)
	return res, errors.Join(append(errs, err)...)
}

// dropped returns the generations of prev that mf does not keep, and
// whether they are prev's oldest (mf keeps every other generation of
// prev). Both list their generations in increasing order: one walk of
// each, past the spans they share.
func dropped(prev, mf *manifest) (gone []uint64, prefix bool) {
	p, q := cursor{mf: prev}, cursor{mf: mf}
	prefix = true
	kept := false // one of prev's generations so far
	for {
		g, ok := p.peek()
		if !ok {
			return gone, prefix
		}
		h, ok := q.peek()
		for ok && h < g {
			q.next()
			h, ok = q.peek()
		}
		if ok && h == g {
			kept = true
			if !skipShared(&p, &q) {
				p.next()
				q.next()
			}
			continue
		}
		prefix = prefix && !kept
		gone = append(gone, g)
		p.next()
	}
}

// Generations describes every generation the mirror keeps, oldest first
// (the current one last). A format-1 mirror has one.
func (m *Mirror) Generations(ctx context.Context) ([]Meta, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := m.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	if s.mf == nil {
		return []Meta{s.metaWithSidecar(m.path)}, nil
	}
	recs, err := s.mf.records()
	if err != nil {
		return nil, err
	}
	out := make([]Meta, 0, len(recs))
	for i := range recs {
		g := recs[i]
		meta := g.meta(m.path)
		meta.FormatVersion = s.mf.version
		if g.Generation == s.meta.Generation {
			meta = s.metaWithSidecar(m.path)
		}
		out = append(out, meta)
	}
	return out, nil
}

// KeptRange returns the oldest and the newest generation the mirror
// keeps, as Generations would list them, without describing each (no
// file is read): what a server answers on every request that needs it.
func (m *Mirror) KeptRange(ctx context.Context) (oldest, newest uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	s, err := m.acquire()
	if err != nil {
		return 0, 0, err
	}
	defer s.release()
	if s.mf == nil {
		return s.meta.Generation, s.meta.Generation, nil
	}
	return s.mf.oldest(), s.mf.newest(), nil
}

// Resolve returns the number of the kept generation ref names: a
// generation number, or a prefix of at least 4 hex digits of one
// generation's digest. A collected generation is ErrGenerationGone
// (naming the oldest kept), anything else unknown ErrNoGeneration.
func (m *Mirror) Resolve(ctx context.Context, ref string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	s, err := m.acquire()
	if err != nil {
		return 0, err
	}
	defer s.release()
	return s.resolve(m.path, ref)
}

func (s *snap) resolve(path, ref string) (uint64, error) {
	if s.mf != nil {
		return s.mf.resolve(path, ref)
	}
	// A format-1 mirror: its one generation, by number or digest.
	ref = strings.ToLower(strings.TrimSpace(ref))
	if ref == fmt.Sprint(s.meta.Generation) || (len(ref) >= 4 && strings.HasPrefix(s.meta.Digest, ref)) {
		return s.meta.Generation, nil
	}
	return 0, fmt.Errorf("%w: %s is a format-1 mirror, which keeps only generation %d; the first sync upgrades it and keeps history from then on", ErrNoGeneration, path, s.meta.Generation)
}

// SnapshotAt pins the kept generation ref names (see Resolve): every
// read through it sees that generation, whatever is published or
// collected meanwhile. Close it when done.
func (m *Mirror) SnapshotAt(ctx context.Context, ref string) (*Snapshot, error) {
	s, err := m.acquire()
	if err != nil {
		return nil, err
	}
	defer s.release()
	g, err := s.resolve(m.path, ref)
	if err != nil {
		return nil, err
	}
	if g == s.meta.Generation {
		s.refs.Add(1)
		return &Snapshot{s: s, path: m.path}, nil
	}
	at, err := openGen(m.path, s.mf, g, m.opts, s)
	if errors.Is(err, errDataFileGone) || errors.Is(err, errArchiveGone) {
		// A file collected since this Mirror read its manifest (by
		// another process): read the new one, so that what follows sees
		// it too, and open g there if it still keeps it.
		return m.snapshotAgain(g, err)
	}
	if err != nil {
		return nil, err
	}
	at.fi = s.fi
	return &Snapshot{s: at, path: m.path}, nil
}

// snapshotAgain pins generation g after the manifest it was read from
// named a file collected meanwhile (err): from the manifest published
// now, which says whether g is still kept.
func (m *Mirror) snapshotAgain(g uint64, err error) (*Snapshot, error) {
	collected := fmt.Errorf("%w: generation %d of %s was collected meanwhile: %v", ErrGenerationGone, g, m.path, err)
	if _, rerr := m.Reload(); rerr != nil {
		return nil, collected
	}
	now, aerr := m.acquire()
	if aerr != nil {
		return nil, aerr
	}
	defer now.release()
	switch {
	case now.mf == nil:
		return nil, collected
	case !now.mf.has(g):
		return nil, now.mf.gone(m.path, strconv.FormatUint(g, 10))
	case g == now.meta.Generation:
		now.refs.Add(1)
		return &Snapshot{s: now, path: m.path}, nil
	}
	at, err := openGen(m.path, now.mf, g, m.opts, now)
	if err != nil {
		return nil, err
	}
	at.fi = now.fi
	return &Snapshot{s: at, path: m.path}, nil
}

// Generation returns the pinned generation's number.
func (sn *Snapshot) Generation() uint64 { return sn.s.meta.Generation }

// Current reports whether the pinned generation was the mirror's
// current one when it was opened from the manifest.
func (sn *Snapshot) Current() bool {
	return sn.s.mf == nil || sn.s.mf.current == sn.s.meta.Generation
}
