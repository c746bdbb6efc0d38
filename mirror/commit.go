package mirror

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/noether-mirror/mirror/mirror/internal/lthash"
)

// Compaction defaults (Options.MaxOverlay, Options.MaxMerged,
// Options.MaxLayers).
const (
	defaultMaxOverlay = 4096
	defaultMaxLayers  = 8
	// defaultMaxMerged bounds the default MaxMerged (1/8 of the stages):
	// a reader that needs the sorted lists (a page, a scan) folds the
	// merged delta into memory, a few hundred bytes a key.
	defaultMaxMerged = 1 << 16
)

// maxOverlay is how many keys the deltas a reader folds at open (every
// delta but a merged first one) may touch together, for a mirror of
// total stages, before a publish merges the chain: Options.MaxOverlay
// when set; otherwise 4096 or 1/64 of the stages, whichever is more, but
// never more than half the stages.
func (o Options) maxOverlay(total int) int {
	if o.MaxOverlay > 0 {
		return o.MaxOverlay
	}
	return min(max(defaultMaxOverlay, total/64), total/2)
}

// maxMerged is how many keys all the deltas over a base may touch
// together before a publish compacts them into a new base:
// Options.MaxMerged when set (at least maxOverlay); else MaxOverlay when
// that is set; else 1/8 of the stages up to 65,536, and at least
// maxOverlay. A compaction writes the whole mirror, so the larger this
// is, the rarer; 1/8 makes a sync that changes 1/1,000 of the mirror
// write about 1.5% of it on average, compactions included.
func (o Options) maxMerged(total int) int {
	switch {
	case o.MaxMerged > 0:
		return max(o.MaxMerged, o.maxOverlay(total))
	case o.MaxOverlay > 0:
		return o.MaxOverlay
	}
	return max(o.maxOverlay(total), min(total/8, defaultMaxMerged))
}

func (o Options) maxLayers() int {
	if o.MaxLayers > 0 {
		return o.MaxLayers
	}
	return defaultMaxLayers
}

// Publish makes what the writer staged the mirror's next generation. It
// writes only what changed: a delta file holding the changed stages (see
// Writer.delta for when it merges the chain; when the deltas over the
// current base would touch more keys than Options.MaxMerged allows, or
// more quarantine keys than MaxOverlay, a new compacted base), then a
// new manifest listing the generation, fsynced and renamed over PATH:
// the one step that changes what readers see. Generations the keep policy no longer
// keeps are dropped from the manifest and their files removed.
//
// When nothing changed, nothing is written but the sidecar's last-sync
// time (Unchanged). On success the staging file is removed and the lock
// released; on error the writer stays open: call Abort.
func (w *Writer) Publish(ctx context.Context, info PublishInfo) (PublishResult, error) {
	if err := w.check(); err != nil {
		return PublishResult{}, err
	}
	m := w.m
	defer w.releaseWritten()
	cur, prev, err := w.current()
	if err != nil {
		return PublishResult{}, err
	}
	defer cur.release()
	if cur.mf == nil {
		return PublishResult{}, fmt.Errorf("mirror: %s changed to format 1 while the writer ran; run it again", m.path)
	}
	meta := nextMeta(prev, info)
	limit := max(m.opts.maxMerged(cur.meta.Total)-cur.ov.size(), 0)
	cs, err := w.collectChanges(ctx, cur, limit)
	var rec genRecord
	var state lthash.State
	switch {
	case errors.Is(err, errTooBig):
		rec, state, err = w.rebase(ctx, cur, meta)
	case err == nil && cs.size() == 0:
		if err := info.checkDigest(m.path, cur.meta.Digest); err != nil {
			return PublishResult{}, err
		}
		sc := nextSidecar(prev, meta)
		sc.Generation = cur.meta.Generation
		if info.SyncTime.IsZero() {
			sc = sidecar{} // a local edit that changed nothing records nothing
		}
		out := PublishResult{Path: m.path, Total: cur.meta.Total, Digest: cur.meta.Digest, Generation: cur.meta.Generation, Unchanged: true}
		return out, w.finish(cur, sc)
	case err == nil:
		rec, state, err = w.delta(cur, cs, meta.Generation)
		if errors.Is(err, errTooBig) {
			rec, state, err = w.rebase(ctx, cur, meta)
		}
	}
	if err != nil {
		return PublishResult{}, fmt.Errorf("building generation %d of %s: %w", meta.Generation, m.path, err)
	}
	sc := nextSidecar(prev, meta)
	rec.Generation, rec.Published, rec.syncState = meta.Generation, meta.Published, sc.syncState
	rec.Digest = digestHex(&state)
	if err := info.checkDigest(m.path, rec.Digest); err != nil {
		m.removeUnlisted(cur.gen, rec)
		return PublishResult{}, err
	}
	mf, published, err := m.commit(cur.mf, rec, state)
	if err != nil {
		if !published { // the files written for it would stay for nothing
			m.removeUnlisted(cur.gen, rec)
		}
		return PublishResult{}, err
	}
	m.handOver(mf, w.written) // to the reload in finish
	w.written = nil
	out := PublishResult{Path: m.path, Total: rec.Total, Digest: rec.Digest, Generation: rec.Generation}
	// The manifest holds what the sidecar would say of the new
	// generation: no sidecar to write. An older one no longer applies but
	// for a refused sync it records, which a sync publishing ends.
	if !info.SyncTime.IsZero() {
		_ = os.Remove(sidecarPath(m.path))
	}
	return out, w.finish(cur, sidecar{})
}

// removeUnlisted removes the data files rec reads that cur does not: a
// generation built but not published.
func (m *Mirror) removeUnlisted(cur *genRecord, rec genRecord) {
	have := map[string]bool{}
	if cur != nil {
		for _, f := range cur.files() {
			have[f] = true
		}
	}
	for _, f := range rec.files() {
		if !have[f] {
			_ = os.Remove(filepath.Join(gensDir(m.path), f))
		}
	}
}

// digestHex is a generation's digest: the hex SHA-256 of its content hash.
func digestHex(s *lthash.State) string {
	sum := s.Sum()
	return fmt.Sprintf("%x", sum[:])
}

// delta writes generation gen as cur plus the delta cs. A chain whose
// folded deltas would touch more stage ids than Options.MaxOverlay
// becomes one merged delta. A chain that would pass Options.MaxLayers
// merges its newest deltas into the new one (see mergeTail). When the
// deltas would touch more quarantine keys than MaxOverlay (readers fold
// them all at open), it returns errTooBig, having written nothing: the
// publish compacts.
func (w *Writer) delta(cur *snap, cs *changeSet, gen uint64) (genRecord, lthash.State, error) {
	d, err := deltaOf(cur, cs)
	if err != nil {
		return genRecord{}, lthash.State{}, err
	}
	limit := w.m.opts.maxOverlay(cur.meta.Total)
	keep := len(cur.gen.Deltas)
	_, stages, quar := d.overlayKeys(cur, keep)
	switch {
	case quar > limit: // readers fold every quarantine key at open
		return genRecord{}, lthash.State{}, errTooBig
	case stages > limit || (keep+1 > w.m.opts.maxLayers() && !cur.deep()):
		// The chain's first merge makes a merged delta, which readers
		// look up on disk; later merges leave it beneath their tail.
		err = d.mergeChain(cur)
	case cur.ov != nil:
		keep, err = d.mergeTail(cur, w.m.opts.maxLayers())
	}
	if err != nil {
		return genRecord{}, lthash.State{}, err
	}
	t := newTally(cur)
	if err := t.apply(cur, cs); err != nil {
		return genRecord{}, lthash.State{}, err
	}
	f, size, err := d.write(gensDir(w.m.path), gen, w.m.opts)
	if err != nil {
		return genRecord{}, lthash.State{}, err
	}
	w.written = append(w.written, f)
	rec := t.rec
	rec.Base, rec.Bytes = cur.gen.Base, size
	total, stages, quar := d.overlayKeys(cur, keep)
	rec.Overlay, rec.Folded = total, stages+quar
	if d.merged {
		keep = 0
	}
	rec.Deltas = append(slices.Clone(cur.gen.Deltas[:keep]), deltaName(gen))
	return rec, t.state, nil
}

// rebase compiles the next generation into a new base file: the whole
// content, as the staging file holds it once every retained stage of cur
// is staged too.
func (w *Writer) rebase(ctx context.Context, cur *snap, meta Meta) (genRecord, lthash.State, error) {
	if err := w.stageRetained(ctx, cur); err != nil {
		return genRecord{}, lthash.State{}, err
	}
	src, err := w.db.Begin(false)
	if err != nil {
		return genRecord{}, lthash.State{}, fmt.Errorf("reading the staging file: %w", err)
	}
	final := filepath.Join(gensDir(w.m.path), baseName(meta.Generation))
	tmp, res, err := compile(ctx, final, source{tx: src, log: w.log}, meta, w.m.opts, w.baseSize())
	_ = src.Rollback()
	if err != nil {
		return genRecord{}, lthash.State{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return genRecord{}, lthash.State{}, fmt.Errorf("placing the new base %s: %w", final, err)
	}
	changes, size, err := w.baseChanges(ctx, cur, final, res)
	if err != nil {
		os.Remove(final) // no manifest will name it
		return genRecord{}, lthash.State{}, err
	}
	rec := genRecord{
		Counts: res.meta.Counts, ByEffect: res.meta.ByEffect, Total: res.meta.Total,
		Quarantined: res.meta.Quarantined, Base: baseName(meta.Generation), Bytes: size,
		Changes: changes,
	}
	return rec, res.lt, nil
}

// baseChanges opens the new base final, compiled as res says, and counts
// what it changed against cur; it returns the base's size too.
func (w *Writer) baseChanges(ctx context.Context, cur *snap, final string, res compileResult) (Changes, int64, error) {
	next, err := openFile(final, w.m.opts)
	if err != nil {
		return Changes{}, 0, err
	}
	defer next.release()
	changes := Changes{Added: res.meta.Total, QuarantineIn: res.meta.Quarantined}
	if cur.meta.Total > 0 || cur.meta.Quarantined > 0 { // else everything is new
		if changes, err = countChanges(ctx, cur, next); err != nil {
			return Changes{}, 0, err
		}
	}
	return changes, next.base.SizeBytes, nil
}

// commit publishes generation rec (content hash state) after the
// generations of prev: data files durable first, then the new manifest
// renamed over PATH, then the files of generations the keep policy drops
// are removed. It returns the manifest published; published says whether
// the rename happened (an error after it is the directory's fsync).
func (m *Mirror) commit(prev *manifest, rec genRecord, state lthash.State) (mf *manifest, published bool, err error) {
	spans, gens, err := m.opts.Keep.keep(prev, &rec, time.Now())
	if err != nil {
		return nil, false, err
	}
	mf = &manifest{current: rec.Generation, state: state, gens: gens, path: m.path, opts: m.opts}
	mf.setSpans(spans)
	if published, err := m.writeManifestFile(mf); err != nil {
		return nil, published, err
	}
	if _, err := m.sweepDropped(prev, mf); err != nil {
		m.log.Warn("mirror: could not remove the files of collected generations", "dir", gensDir(m.path), "err", err)
	}
	return mf, true, nil
}

// writeManifestFile makes mf the manifest at PATH, durably, first
// archiving the oldest records it holds when it holds too many (see
// archiveOldest). published says whether it renamed the manifest over
// PATH (an error after that is the directory's fsync); before, it
// removes the archive file it wrote.
func (m *Mirror) writeManifestFile(mf *manifest) (published bool, err error) {
	dir := gensDir(m.path)
	archive, err := archiveOldest(dir, mf, m.opts)
	if err != nil {
		return false, err
	}
	defer func() {
		if !published && archive != "" {
			os.Remove(archive)
		}
	}()
	if err := syncDir(dir); err != nil {
		return false, err
	}
	tmp, err := writeManifest(m.path, mf, m.opts)
	if err != nil {
		return false, err
	}
	if err := os.Rename(tmp, m.path); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("publishing %s: %w", m.path, err)
	}
	return true, syncDir(filepath.Dir(m.path))
}
