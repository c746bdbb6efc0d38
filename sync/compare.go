package sync

import (
	"bytes"
	"context"
	"fmt"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// dropUnlisted removes staged stages the registry no longer lists (left
// from an interrupted run, or deleted upstream).
func (e *engine) dropUnlisted(ctx context.Context, fs *finalSet) error {
	_, err := e.w.Prune(ctx, func(k mirror.Key) bool {
		_, listed := fs.ids.get(k)
		return listed || e.rep.isQuarantined(k)
	})
	return err
}

// countChanges compares the staged set with the published snapshot.
func (e *engine) countChanges(ctx context.Context, fs *finalSet) error {
	snap, err := e.m.Snapshot()
	if err != nil {
		return err
	}
	defer snap.Close()
	old := 0
	for rec, err := range snap.Records(ctx, store.LifecycleUnknown) {
		if err != nil {
			return fmt.Errorf("read the current snapshot: %w", err)
		}
		k, _ := mirror.KeyOfID(rec.ID)
		if _, ok := fs.ids.get(k); !ok {
			if e.rep.isQuarantined(k) {
				e.lostToQuarantine++
			} else {
				e.rep.removed(rec.ID)
			}
			continue
		}
		old++
		raw, ok, err := e.w.Staged(rec.ID)
		if err != nil {
			return err
		}
		switch {
		case !ok || bytes.Equal(raw, rec.Raw):
			// Not staged: listed with exactly the snapshot's bytes.
			e.rep.unchanged()
		default:
			s, err := store.DecodeStage(raw)
			e.rep.changed(err == nil && s.Lifecycle != rec.Lifecycle)
		}
	}
	byLifecycle := map[string]int{}
	for _, kk := range fs.ids.s {
		byLifecycle[kk.kind.Name()]++
	}
	e.rep.listed(fs.ids.len()-old, byLifecycle)
	return nil
}
