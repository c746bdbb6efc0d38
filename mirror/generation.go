package mirror

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// openGen opens generation g of the manifest mf read at path: its base
// file and its deltas, folded. prev (nil: none) is a snapshot of the
// same mirror the caller holds: the files the two generations share are
// taken from it, and when g's deltas continue prev's, only the new ones
// are folded on top of prev's fold. The snapshot's FileInfo is the
// caller's to set.
func openGen(path string, mf *manifest, g uint64, opts Options, prev *snap) (*snap, error) {
	return openGenWith(path, mf, g, opts, prev, nil)
}

// openGenWith is openGen taking the data files handed (open, a
// reference each, which stay the caller's) where the generation reads
// them, instead of opening them again.
func openGenWith(path string, mf *manifest, g uint64, opts Options, prev *snap, handed []*dataFile) (*snap, error) {
	rec, ok, err := mf.get(g)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mf.gone(path, strconv.FormatUint(g, 10))
	}
	dir := gensDir(path)
	var prevFile *dataFile
	var prevOv *overlay
	if prev != nil && prev.mf != nil {
		prevFile, prevOv = prev.file, prev.ov
	}
	name := filepath.Join(dir, rec.Base)
	f := prevFile.reuse(name)
	if f == nil {
		var err error
		if f, err = openDataFile(name, opts); err != nil {
			return nil, genError(g, err)
		}
		prevOv = nil // deltas over another base
	}
	s, err := fileSnap(f, opts)
	if err != nil {
		return nil, genError(g, err)
	}
	if len(rec.Deltas) > 0 {
		if s.ov, err = openOverlay(dir, rec.Deltas, rec.Folded, opts, prevOv, handed); err != nil {
			s.release()
			return nil, genError(g, err)
		}
	}
	s.mf, s.gen = mf, rec
	s.meta = rec.meta(path)
	s.meta.FormatVersion = mf.version
	return s, nil
}

// size is the bytes of the files generation g reads, as they are in dir
// now (a file missing is not counted).
func (g *genRecord) size(dir string) int64 {
	var n int64
	for _, f := range g.files() {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// errDataFileGone marks a data file that a manifest names but that is
// not there: collected meanwhile (see openSnap), or lost.
var errDataFileGone = errors.New("a data file of the generation is missing")

// genError names generation g in an error opening its files.
func genError(g uint64, err error) error {
	if errors.Is(err, ErrNoMirror) {
		return fmt.Errorf("%w: generation %d: %w: %v: run `mirror verify`, or `mirror sync` to rebuild", ErrCorrupt, g, errDataFileGone, err)
	}
	return fmt.Errorf("generation %d: %w", g, err)
}

// meta is the Meta of the generation g records, for the mirror at path
// (its size from the files there now).
func (g *genRecord) meta(path string) Meta {
	return Meta{SizeBytes: g.size(gensDir(path)),
		FormatVersion: FormatVersion, Generation: g.Generation, Upstream: g.Upstream,
		LastSync: g.LastSync, Published: g.Published, UpstreamTotals: g.UpstreamTotals,
		Counts: g.Counts, ByEffect: g.ByEffect, Total: g.Total, Quarantined: g.Quarantined,
		Digest: g.Digest, Path: path, Layers: len(g.Deltas), Overlay: g.Overlay, Changes: g.Changes,
		PreviousUpstream: g.PreviousUpstream, UpstreamSince: g.UpstreamSince,
		UpstreamGeneration: g.UpstreamGeneration, UpstreamDigest: g.UpstreamDigest,
	}
}

// gone is the error for a generation reference (a number or a digest
// prefix) that names no kept generation.
func (mf *manifest) gone(path, ref string) error {
	oldest, newest := mf.oldest(), mf.newest()
	if n, err := strconv.ParseUint(ref, 10, 64); err == nil && n < oldest {
		return fmt.Errorf("%w: generation %d of %s was collected; the oldest kept is %d (keep more with --keep)", ErrGenerationGone, n, path, oldest)
	}
	return fmt.Errorf("%w: %s has no generation %q; it keeps %d to %d (see `mirror log`)", ErrNoGeneration, path, ref, oldest, newest)
}

// resolve finds the kept generation ref names: a generation number, or a
// prefix (at least 4 hex digits) of one digest.
func (mf *manifest) resolve(path, ref string) (uint64, error) {
	ref = strings.TrimSpace(ref)
	if n, err := strconv.ParseUint(ref, 10, 64); err == nil {
		if mf.has(n) {
			return n, nil
		}
		if len(ref) < 4 || n < mf.oldest() {
			return 0, mf.gone(path, ref)
		}
	}
	ref = strings.ToLower(ref)
	if len(ref) < 4 {
		return 0, fmt.Errorf("%w: %q is neither a kept generation number nor a digest prefix of at least 4 hex digits", ErrNoGeneration, ref)
	}
	recs, err := mf.records()
	if err != nil {
		return 0, err
	}
	var found []uint64
	for _, g := range recs {
		if strings.HasPrefix(g.Digest, ref) {
			found = append(found, g.Generation)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		// Equal digests: the content came back; the newest stands for it.
		return found[len(found)-1], nil
	}
	return 0, mf.gone(path, ref)
}
