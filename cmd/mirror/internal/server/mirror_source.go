package server

import (
	"context"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// FromMirror serves m: every Acquire pins m's current snapshot, so a
// snapshot published by `mirror sync` (in this or another process) is
// served from the next request on, at most m's reload interval later. The
// caller keeps ownership of m and closes it after the server has stopped.
func FromMirror(m *mirror.Mirror) Source { return mirrorSource{m} }

type mirrorSource struct{ m *mirror.Mirror }

func (s mirrorSource) Acquire() (Snapshot, error) {
	sn, err := s.m.Snapshot()
	if err != nil {
		return nil, err
	}
	meta := sn.Meta()
	return &mirrorSnapshot{sn: sn, info: Info{
		Generation:  meta.Generation,
		Upstream:    meta.Upstream,
		LastSync:    meta.LastSync,
		Digest:      meta.Digest,
		Quarantined: meta.Quarantined,
	}}, nil
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
