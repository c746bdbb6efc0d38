package sync_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// sameFile reports whether path is still the file fi was, unmodified.
func sameFile(t *testing.T, path string, fi os.FileInfo) bool {
	t.Helper()
	now, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(fi, now) && now.ModTime().Equal(fi.ModTime()) && now.Size() == fi.Size()
}

// TestUnchangedSyncWritesNothing: a sync that finds every stage (and
// every quarantine entry) as the snapshot holds it stages and commits
// nothing and leaves the snapshot file alone; only PATH.state records it.
// Then one change publishes a complete, correct snapshot again.
func TestUnchangedSyncWritesNothing(t *testing.T) {
	raws := genStages(t, 60, 9)
	bad := tamper(t, build(t, "bad_one", "b", store.Active).Raw, `"name":"bad_one"`, `"name":"bad_two"`)
	srv := newServer(t, registrytest.Options{Stages: append(append([]json.RawMessage{}, raws...), bad)})
	m := newMirror(t)
	opts := msync.Options{PageSize: 20}
	first := mustSync(t, m, newClient(t, srv.URL()), opts)
	if first.Quarantined != 1 {
		t.Fatalf("first sync: %+v", first)
	}
	before := m.Meta()
	fi, err := os.Stat(m.Path())
	if err != nil {
		t.Fatal(err)
	}

	rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), opts)
	if err != nil && rep.Outcome != msync.OutcomePartial {
		t.Fatal(err)
	}
	if rep.Commits != 0 || rep.Published || rep.Unchanged != 60 || rep.Quarantined != 1 {
		t.Errorf("unchanged sync: commits %d, published %v, unchanged %d, quarantined %d", rep.Commits, rep.Published, rep.Unchanged, rep.Quarantined)
	}
	if !sameFile(t, m.Path(), fi) || m.Meta().Generation != before.Generation {
		t.Error("an unchanged sync rewrote the snapshot")
	}
	if !m.Meta().LastSync.After(before.LastSync) {
		t.Error("the unchanged sync was not recorded")
	}
	if _, err := os.Stat(m.Path() + ".next"); !os.IsNotExist(err) {
		t.Errorf("a staging file was left: %v", err)
	}
	assertMirrors(t, m, srv)

	// One stage changes lifecycle upstream: everything else comes from
	// the snapshot, and the result is the registry exactly.
	s, err := store.DecodeStage(raws[5])
	if err != nil {
		t.Fatal(err)
	}
	if s.Lifecycle.Kind == store.LifecycleActive {
		if err := srv.SetLifecycle(s.ID, store.Tombstone); err != nil {
			t.Fatal(err)
		}
	} else {
		srv.Remove(s.ID)
	}
	rep = mustSyncPartial(t, m, srv, opts)
	if !rep.Published || rep.Commits == 0 {
		t.Errorf("changed sync: %+v", rep)
	}
	assertMirrors(t, m, srv)
	if q := m.Meta().Quarantined; q != 1 {
		t.Errorf("the quarantined stage was dropped: %d", q)
	}
	res, err := m.Verify(context.Background())
	if err != nil || !res.OK() {
		t.Errorf("verify after a filled publish: %+v %v", res, err)
	}
}

// mustSyncPartial syncs m from srv allowing a partial outcome.
func mustSyncPartial(t *testing.T, m *mirror.Mirror, srv *registrytest.Server, opts msync.Options) msync.Report {
	t.Helper()
	rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), opts)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}
