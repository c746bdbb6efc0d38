package sync_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// TestSyncDrift changes the registry once while it is being paged, at a
// chosen page, and checks that the sync detects the drift (when a listing
// can show it), repairs it, reports it, and ends with the mirror equal to
// the registry's final state.
func TestSyncDrift(t *testing.T) {
	type env struct {
		t   testing.TB
		srv *registrytest.Server
	}
	ids := func(e env, k store.LifecycleKind) []store.StageID { return lifecycleIDs(e.t, e.srv, k) }
	cases := []struct {
		name     string
		lc       string
		offset   int
		change   func(e env)
		detected bool
		check    func(t *testing.T, d msync.Drift)
	}{
		{name: "listed stage deleted: later ones shift down a page", lc: "active", offset: 9, detected: true,
			change: func(e env) { e.srv.Remove(ids(e, store.LifecycleActive)[0]) },
			check: func(t *testing.T, d msync.Drift) {
				if d.Deleted != 1 || d.Relists == 0 {
					t.Errorf("drift %+v, want one relist and one deleted", d)
				}
			}},
		{name: "stage inserted", lc: "active", offset: 3, detected: true,
			change: func(e env) { e.srv.AddRaw(build(e.t, "drift_new", "inserted", store.Active).Raw) }},
		{name: "listed stage deprecated", lc: "active", offset: 6, detected: true,
			change: func(e env) {
				a := ids(e, store.LifecycleActive)
				if err := e.srv.SetLifecycle(a[0], store.Deprecated(a[1])); err != nil {
					e.t.Fatal(err)
				}
			}},
		{name: "listed deprecated stage reactivated", lc: "deprecated", offset: 3, detected: true,
			change: func(e env) {
				if err := e.srv.SetLifecycle(ids(e, store.LifecycleDeprecated)[0], store.Active); err != nil {
					e.t.Fatal(err)
				}
			}},
		// Tombstone's first page is requested while deprecated is listed,
		// after active's listing ended: only the confirmation sees active grow.
		{name: "unlisted stage moves to a lifecycle already listed", lc: "tombstone", offset: 0, detected: true,
			change: func(e env) {
				if err := e.srv.SetLifecycle(ids(e, store.LifecycleTombstone)[0], store.Active); err != nil {
					e.t.Fatal(err)
				}
			},
			check: func(t *testing.T, d msync.Drift) {
				if !strings.Contains(strings.Join(d.Reasons, "\n"), "after it was listed") {
					t.Errorf("reasons %q, want the confirmation to find it", d.Reasons)
				}
			}},
		{name: "stage added during the last page", lc: "tombstone", offset: 0, detected: true,
			change: func(e env) { e.srv.AddRaw(build(e.t, "drift_late", "late", store.Tombstone).Raw) }},
		{name: "stage removed during the last page", lc: "tombstone", offset: 0, detected: true,
			change: func(e env) { e.srv.Remove(ids(e, store.LifecycleDraft)[0]) }},
		{name: "description of an unlisted stage changed", lc: "draft", offset: 0, detected: false,
			change: func(e env) {
				// Same id, new bytes: invisible to totals, seen because
				// the stage had not been listed yet.
				s := build(e.t, "drift_desc", "first", store.Active)
				e.srv.AddRaw(s.Raw) // registered before the sync by setup
				e.srv.AddRaw(build(e.t, "drift_desc", "second", store.Active).Raw)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 13)})
			if tc.name == "description of an unlisted stage changed" {
				srv.AddRaw(build(t, "drift_desc", "first", store.Active).Raw)
			}
			e := env{t, srv}
			var fired atomic.Bool
			srv.OnPage(func(lc string, offset int) {
				if lc == tc.lc && offset == tc.offset && fired.CompareAndSwap(false, true) {
					tc.change(e)
				}
			})
			m := newMirror(t)
			rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 3})
			if !fired.Load() {
				t.Fatal("the change never happened")
			}
			if rep.Drift.Detected != tc.detected || rep.Drift.Unresolved {
				t.Errorf("drift %+v, want detected=%v and resolved", rep.Drift, tc.detected)
			}
			if rep.Outcome != msync.OutcomeOK {
				t.Errorf("outcome %s", rep.Outcome)
			}
			if tc.check != nil {
				tc.check(t, rep.Drift)
			}
			assertMirrors(t, m, srv)
		})
	}
}

// TestSyncDriftUnresolved keeps changing the registry on every page: the
// relists are bounded and the sync ends partial, saying so.
func TestSyncDriftUnresolved(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 30, 14)})
	var n atomic.Int64
	srv.OnPage(func(lc string, _ int) {
		if lc == "active" {
			srv.AddRaw(build(t, "churn_"+itoa(int(n.Add(1))), "churn", store.Active).Raw)
		}
	})
	m := newMirror(t)
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 10, MaxRelists: 2})
	if !rep.Drift.Detected || !rep.Drift.Unresolved || rep.Drift.Relists != 2 || rep.Outcome != msync.OutcomePartial {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Warnings) == 0 {
		t.Error("no warning about unresolved drift")
	}
	// What was published verifies, and every stage in it is upstream.
	srv.OnPage(nil)
	for rec, err := range m.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		if raw, ok := srv.Stage(rec.ID); !ok || string(raw) != string(rec.Raw) {
			t.Errorf("published %s, which the registry does not hold with these bytes", rec.ID)
		}
	}
}

// TestSyncDriftMovedOutOfSight moves a listed stage to a lifecycle the
// registry refuses to list (drafts behind auth): no listing holds it any
// more, so the sync asks for it by id and finds it moved, not deleted.
func TestSyncDriftMovedOutOfSight(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 15), DraftsNeedAuth: true})
	moved := lifecycleIDs(t, srv, store.LifecycleActive)[0]
	var fired atomic.Bool
	srv.OnPage(func(lc string, offset int) {
		if lc == "active" && offset == 6 && fired.CompareAndSwap(false, true) {
			if err := srv.SetLifecycle(moved, store.Draft); err != nil {
				t.Error(err)
			}
		}
	})
	m := newMirror(t)
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 3})
	if d := rep.Drift; !d.Detected || d.Refetched != 1 || d.Moved != 1 || d.Deleted != 0 {
		t.Errorf("drift %+v, want one stage refetched and found moved", d)
	}
	want, _ := srv.Stage(moved)
	if got, err := m.GetRaw(context.Background(), moved); err != nil || string(got) != string(want) {
		t.Errorf("moved stage: %v, bytes %.80s, want its draft bytes", err, got)
	}
}
