package sync_test

import (
	"context"
	"fmt"
	"strings"
	gosync "sync"
	"sync/atomic"
	"testing"

	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// hookErrors collects the failures of code that runs in a fake registry's
// OnPage hook, on one of its handler goroutines, where t.Fatal must not be
// called; the test goroutine reports them with check.
type hookErrors struct {
	mu   gosync.Mutex
	errs []error
}

// add records err, if any.
func (h *hookErrors) add(err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	h.errs = append(h.errs, err)
	h.mu.Unlock()
}

// check reports every recorded failure as a test error.
func (h *hookErrors) check(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.errs {
		t.Errorf("in the OnPage hook: %v", err)
	}
}

// nthID returns the id of the registry's i-th stage of kind k, failing the
// test (it runs on the test goroutine) when there are not that many.
func nthID(t testing.TB, srv *registrytest.Server, k store.LifecycleKind, i int) store.StageID {
	t.Helper()
	ids := lifecycleIDs(t, srv, k)
	if i >= len(ids) {
		t.Fatalf("the registry has %d %s stages, the test needs %d", len(ids), k.Name(), i+1)
	}
	return ids[i]
}

// removes returns a change that removes id, failing if it is not there.
func removes(srv *registrytest.Server, id store.StageID) func() error {
	return func() error {
		if !srv.Remove(id) {
			return fmt.Errorf("stage %s was not there to remove", id)
		}
		return nil
	}
}

// adds returns a change that adds s.
func adds(srv *registrytest.Server, s *store.Stage) func() error {
	return func() error { srv.AddRaw(s.Raw); return nil }
}

// moves returns a change that rewrites id's lifecycle to l.
func moves(srv *registrytest.Server, id store.StageID, l store.Lifecycle) func() error {
	return func() error { return srv.SetLifecycle(id, l) }
}

// TestSyncDrift changes the registry once while it is being paged, at a
// chosen page, and checks that the sync detects the drift (when a listing
// can show it), repairs it, reports it, and ends with the mirror equal to
// the registry's final state. Each case's prepare runs on the test
// goroutine (it may fail the test) and returns the change, which runs in
// the registry's hook and only returns an error.
func TestSyncDrift(t *testing.T) {
	type prepare func(t testing.TB, srv *registrytest.Server) func() error
	cases := []struct {
		name     string
		lc       string
		offset   int
		prepare  prepare
		detected bool
		check    func(t *testing.T, d msync.Drift)
	}{
		{name: "listed stage deleted: later ones shift down a page", lc: "active", offset: 9, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return removes(srv, nthID(t, srv, store.LifecycleActive, 0))
			},
			check: func(t *testing.T, d msync.Drift) {
				if d.Deleted != 1 || d.Relists == 0 {
					t.Errorf("drift %+v, want one relist and one deleted", d)
				}
			}},
		{name: "stage inserted", lc: "active", offset: 3, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return adds(srv, build(t, "drift_new", "inserted", store.Active))
			}},
		{name: "listed stage deprecated", lc: "active", offset: 6, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				a0, a1 := nthID(t, srv, store.LifecycleActive, 0), nthID(t, srv, store.LifecycleActive, 1)
				return moves(srv, a0, store.Deprecated(a1))
			}},
		{name: "listed deprecated stage reactivated", lc: "deprecated", offset: 3, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return moves(srv, nthID(t, srv, store.LifecycleDeprecated, 0), store.Active)
			}},
		// Tombstone's first page is requested while deprecated is listed,
		// after active's listing ended: only the confirmation sees active grow.
		{name: "unlisted stage moves to a lifecycle already listed", lc: "tombstone", offset: 0, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return moves(srv, nthID(t, srv, store.LifecycleTombstone, 0), store.Active)
			},
			check: func(t *testing.T, d msync.Drift) {
				if !strings.Contains(strings.Join(d.Reasons, "\n"), "after it was listed") {
					t.Errorf("reasons %q, want the confirmation to find it", d.Reasons)
				}
			}},
		{name: "stage added during the last page", lc: "tombstone", offset: 0, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return adds(srv, build(t, "drift_late", "late", store.Tombstone))
			}},
		{name: "stage removed during the last page", lc: "tombstone", offset: 0, detected: true,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				return removes(srv, nthID(t, srv, store.LifecycleDraft, 0))
			}},
		{name: "description of an unlisted stage changed", lc: "draft", offset: 0, detected: false,
			prepare: func(t testing.TB, srv *registrytest.Server) func() error {
				// Same id, new bytes: invisible to totals, seen because
				// the stage had not been listed yet.
				srv.AddRaw(build(t, "drift_desc", "first", store.Active).Raw)
				return adds(srv, build(t, "drift_desc", "second", store.Active))
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 13)})
			change := tc.prepare(t, srv)
			var fired atomic.Bool
			var errs hookErrors
			srv.OnPage(func(lc string, offset int) {
				if lc == tc.lc && offset == tc.offset && fired.CompareAndSwap(false, true) {
					errs.add(change())
				}
			})
			m := newMirror(t)
			rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 3})
			errs.check(t)
			if err != nil {
				t.Fatalf("sync: %v (report %+v)", err, rep)
			}
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
	// The stages the hook adds, one an active page, built here: building
	// can fail the test, which the hook must not do.
	churn := make([]*store.Stage, 64)
	for i := range churn {
		churn[i] = build(t, "churn_"+itoa(i+1), "churn", store.Active)
	}
	var n atomic.Int64
	var errs hookErrors
	srv.OnPage(func(lc string, _ int) {
		if lc != "active" {
			return
		}
		i := int(n.Add(1))
		if i > len(churn) {
			errs.add(fmt.Errorf("more than %d active pages: the relists are not bounded", len(churn)))
			return
		}
		srv.AddRaw(churn[i-1].Raw)
	})
	m := newMirror(t)
	rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 10, MaxRelists: 2})
	errs.check(t)
	if err != nil {
		t.Fatalf("sync: %v (report %+v)", err, rep)
	}
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
	var errs hookErrors
	srv.OnPage(func(lc string, offset int) {
		if lc == "active" && offset == 6 && fired.CompareAndSwap(false, true) {
			errs.add(moves(srv, moved, store.Draft)())
		}
	})
	m := newMirror(t)
	rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 3})
	errs.check(t)
	if err != nil {
		t.Fatalf("sync: %v (report %+v)", err, rep)
	}
	if !fired.Load() {
		t.Fatal("the stage was never moved")
	}
	if d := rep.Drift; !d.Detected || d.Refetched != 1 || d.Moved != 1 || d.Deleted != 0 {
		t.Errorf("drift %+v, want one stage refetched and found moved", d)
	}
	want, _ := srv.Stage(moved)
	if got, err := m.GetRaw(context.Background(), moved); err != nil || string(got) != string(want) {
		t.Errorf("moved stage: %v, bytes %.80s, want its draft bytes", err, got)
	}
}
