package sync_test

import (
	"context"
	"errors"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// cleanContent is what a clean sync of srv into a new mirror publishes.
func cleanContent(t *testing.T, srv *registrytest.Server) string {
	t.Helper()
	m := newMirror(t)
	mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
	return contentOf(t, m)
}

// TestSyncResumes interrupts a sync after k pages, in two ways (the
// registry failing for good, the context cancelled) and at several
// points, then runs the sync again: the interrupted run leaves the last
// published snapshot intact, and the next run resumes, reuses what was
// staged and ends identical to a clean sync.
func TestSyncResumes(t *testing.T) {
	for _, how := range []string{"5xx", "cancel"} {
		for _, k := range []int{1, 4} { // pages of 10; 60 stages
			t.Run(how+"/after "+itoa(k)+" pages", func(t *testing.T) {
				t.Parallel()
				srv := newServer(t, registrytest.Options{Stages: genStages(t, 100, 8)[:60]})
				m := newMirror(t)
				c := newClient(t, srv.URL())
				// A first generation to protect: half of the stages.
				for _, raw := range genStages(t, 100, 8)[30:60] {
					srv.Remove(idOf(t, raw))
				}
				mustSync(t, m, c, msync.Options{PageSize: 10})
				good := capture(t, m)
				for _, raw := range genStages(t, 100, 8)[30:60] {
					srv.AddRaw(raw)
				}

				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				pages := 0
				srv.OnPage(func(string, int) {
					pages++
					if pages == k {
						if how == "5xx" {
							srv.FailNext(1000, 503)
						} else {
							cancel()
						}
					}
				})
				rep, err := msync.Sync(ctx, m, c, msync.Options{PageSize: 10})
				switch how {
				case "5xx":
					if !errors.Is(err, registry.ErrServer) {
						t.Fatalf("interrupted sync: %v, want ErrServer", err)
					}
				case "cancel":
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("cancelled sync: %v, want context.Canceled", err)
					}
				}
				if rep.Published {
					t.Error("interrupted sync reports Published")
				}
				good.check(t, m.Path())
				staged := rep.Commits
				srv.OnPage(nil)
				srv.FailNext(0, 0)

				// The next run, through a new handle (as a new process would).
				m.Close()
				m2, err := mirror.Open(m.Path(), mirror.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer m2.Close()
				rep2 := mustSync(t, m2, c, msync.Options{PageSize: 10})
				if staged > 0 && (!rep2.Resumed || rep2.Reused == 0) {
					t.Errorf("second run: resumed %v, reused %d, although %d pages were staged", rep2.Resumed, rep2.Reused, staged)
				}
				if k >= 4 && staged == 0 {
					t.Errorf("nothing was staged before the interruption after %d pages", k)
				}
				if rep2.Added != 30 || rep2.Unchanged != 30 || rep2.Generation != good.gen+1 {
					t.Errorf("second run: %+v", rep2)
				}
				assertMirrors(t, m2, srv)
				if got, want := contentOf(t, m2), cleanContent(t, srv); got != want {
					t.Errorf("resumed sync differs from a clean sync")
				}
			})
		}
	}
}

// TestSyncResumeDropsWhatVanished resumes after the registry deleted a
// stage the interrupted run had staged: it must not come back.
func TestSyncResumeDropsWhatVanished(t *testing.T) {
	stages := genStages(t, 60, 9)
	srv := newServer(t, registrytest.Options{Stages: stages})
	m := newMirror(t)
	c := newClient(t, srv.URL())
	pages := 0
	srv.OnPage(func(string, int) {
		if pages++; pages == 3 {
			srv.FailNext(1000, 500)
		}
	})
	if _, err := msync.Sync(context.Background(), m, c, msync.Options{PageSize: 10}); err == nil {
		t.Fatal("sync did not fail")
	}
	if m.Meta().Generation != 0 {
		t.Fatal("an interrupted first sync published")
	}
	srv.OnPage(nil)
	srv.FailNext(0, 0)
	gone := lifecycleIDs(t, srv, store.LifecycleActive)[0]
	srv.Remove(gone)
	rep := mustSync(t, m, c, msync.Options{PageSize: 10})
	if !rep.Resumed || rep.Reused == 0 {
		t.Errorf("report %+v", rep)
	}
	if _, err := m.Get(context.Background(), gone); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted stage came back: %v", err)
	}
	assertMirrors(t, m, srv)
}

// TestSyncResumeFromAnotherRegistry does not reuse stages staged from
// another upstream.
func TestSyncResumeFromAnotherRegistry(t *testing.T) {
	a := newServer(t, registrytest.Options{Stages: genStages(t, 40, 10)})
	b := newServer(t, registrytest.Options{Stages: genStages(t, 30, 11)})
	m := newMirror(t)
	pages := 0
	a.OnPage(func(string, int) {
		if pages++; pages == 3 {
			a.FailNext(1000, 500)
		}
	})
	if _, err := msync.Sync(context.Background(), m, newClient(t, a.URL()), msync.Options{PageSize: 10}); err == nil {
		t.Fatal("sync did not fail")
	}
	rep := mustSync(t, m, newClient(t, b.URL()), msync.Options{PageSize: 10})
	if rep.Resumed || rep.Reused != 0 {
		t.Errorf("resumed a sync of another registry: %+v", rep)
	}
	assertMirrors(t, m, b)
}

func TestSyncCancelledBeforeStart(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 20, 12)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := newMirror(t)
	_, err := msync.Sync(ctx, m, newClient(t, srv.URL()), msync.Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if srv.Requests() != 0 || m.Meta().Generation != 0 {
		t.Errorf("a cancelled sync made %d requests", srv.Requests())
	}
}
