package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// FromMirror serves m: every Acquire pins m's current snapshot, so a
// snapshot published by `mirror sync` (in this or another process) is
// served from the next request on, at most m's reload interval later.
// The Source is a History: /at/G/ serves every generation m keeps. The
// caller keeps ownership of m and closes it after the server has stopped
// (Serve has returned, or ReleasePinned was called).
func FromMirror(m *mirror.Mirror) Source { return mirrorSource{m} }

type mirrorSource struct{ m *mirror.Mirror }

var _ History = mirrorSource{}

func (s mirrorSource) Acquire() (Snapshot, error) {
	sn, err := s.m.Snapshot()
	if err != nil {
		return nil, err
	}
	return adaptSnapshot(sn), nil
}

func (s mirrorSource) Resolve(ctx context.Context, ref string) (uint64, error) {
	return s.m.Resolve(ctx, ref)
}

// AcquireAt pins generation gen. mirror.SnapshotAt reads a number of 4
// digits or more that is not kept as a digest prefix, so the generation
// it pinned is checked.
func (s mirrorSource) AcquireAt(ctx context.Context, gen uint64) (Snapshot, error) {
	ref := strconv.FormatUint(gen, 10)
	sn, err := s.m.SnapshotAt(ctx, ref)
	if errors.Is(err, mirror.ErrNoMirror) {
		return nil, s.collectedElsewhere(ctx, gen, err)
	}
	if err != nil {
		return nil, err
	}
	if got := sn.Generation(); got != gen {
		_ = sn.Close()
		return nil, fmt.Errorf("%w: generation %d is no longer kept (%s now reads as a digest prefix of generation %d)",
			mirror.ErrGenerationGone, gen, ref, got)
	}
	return adaptSnapshot(sn), nil
}

// collectedElsewhere tells apart, after SnapshotAt failed with err
// (ErrNoMirror: a file of gen is missing), a generation another process
// collected since m last read its manifest, which SnapshotAt reports as
// ErrNoMirror rather than ErrGenerationGone (a library bug, see
// mirror/history_bug_test.go): it reads the manifest again and returns
// an error wrapping ErrGenerationGone if gen is no longer kept, else err.
func (s mirrorSource) collectedElsewhere(ctx context.Context, gen uint64, err error) error {
	if _, rerr := s.m.Reload(); rerr != nil {
		return err
	}
	got, rerr := s.m.Resolve(ctx, strconv.FormatUint(gen, 10))
	switch {
	case errors.Is(rerr, mirror.ErrGenerationGone):
		return rerr
	case isNotKept(rerr) || (rerr == nil && got != gen):
		return fmt.Errorf("%w: generation %d was collected since this server last read the mirror's manifest", mirror.ErrGenerationGone, gen)
	}
	return err
}

func (s mirrorSource) Kept(ctx context.Context) (oldest, newest uint64, err error) {
	return s.m.KeptRange(ctx)
}

// adaptSnapshot wraps sn, reading its Meta once.
func adaptSnapshot(sn *mirror.Snapshot) *mirrorSnapshot {
	meta := sn.Meta()
	return &mirrorSnapshot{sn: sn, info: Info{
		Generation:  meta.Generation,
		Upstream:    meta.Upstream,
		LastSync:    meta.LastSync,
		Digest:      meta.Digest,
		Quarantined: meta.Quarantined,
		Published:   meta.Published,
	}}
}

// mirrorSnapshot adapts a pinned *mirror.Snapshot; its Info is read once
// at Acquire.
type mirrorSnapshot struct {
	sn   *mirror.Snapshot
	info Info
}

func (s *mirrorSnapshot) Info() Info { return s.info }

func (s *mirrorSnapshot) Page(ctx context.Context, kind store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	return s.sn.Page(ctx, kind, offset, limit)
}

func (s *mirrorSnapshot) GetRaw(ctx context.Context, id store.StageID) ([]byte, error) {
	return s.sn.GetRaw(ctx, id)
}

func (s *mirrorSnapshot) Stats(ctx context.Context) (store.Stats, error) { return s.sn.Stats(ctx) }

func (s *mirrorSnapshot) Close() error { return s.sn.Close() }
