package sync_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

const apiKey = "test-key-123"

func remoteOpts(path string) msync.RemoteOptions {
	return msync.RemoteOptions{MirrorPath: path, Registry: fastOpts(), Sync: msync.Options{PageSize: 20}}
}

// deadURL is a loopback URL nothing listens on any more.
func deadURL(t *testing.T) string {
	t.Helper()
	srv, err := registrytest.NewServer(registrytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := srv.URL()
	srv.Close()
	return u
}

func connect(t *testing.T, srv *registrytest.Server) (*msync.RemoteStageStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	r, err := msync.Connect(context.Background(), srv.URL()+"/", apiKey, remoteOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, path
}

func TestConnectSyncsAndRefreshCounts(t *testing.T) {
	stages := genStages(t, 50, 20)
	srv := newServer(t, registrytest.Options{Stages: stages, APIKey: apiKey})
	r, _ := connect(t, srv)
	if r.BaseURL() != srv.URL() {
		t.Errorf("BaseURL %q, want %q (no trailing slash)", r.BaseURL(), srv.URL())
	}
	st := r.Status()
	if !st.Online || st.SyncErr != nil || st.Report == nil || st.Report.Total != 50 || st.LastSync.IsZero() {
		t.Errorf("status %+v", st)
	}
	ctx := context.Background()
	for _, raw := range stages {
		id := idOf(t, raw)
		s, err := r.Get(ctx, id)
		if err != nil || string(s.Raw) != string(raw) {
			t.Fatalf("Get(%s): %v", id, err)
		}
	}
	srv.AddRaw(build(t, "remote_more", "more", store.Active).Raw)
	n, err := r.Refresh(ctx)
	if err != nil || n != 51 {
		t.Errorf("Refresh = %d, %v, want 51", n, err)
	}
	all, err := r.List(ctx, store.Filter{})
	if err != nil || len(all) != 51 {
		t.Errorf("List: %d stages, %v", len(all), err)
	}
}

func TestConnectOffline(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 30, 21)})
	path := filepath.Join(t.TempDir(), "m.db")
	ctx := context.Background()
	r, err := msync.Connect(ctx, srv.URL(), "", remoteOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	dead := deadURL(t)

	t.Run("falls back to the last snapshot", func(t *testing.T) {
		r, err := msync.Connect(ctx, dead, "", remoteOpts(path))
		if err != nil {
			t.Fatalf("Connect offline with a snapshot: %v", err)
		}
		defer r.Close()
		st := r.Status()
		if st.Online || !errors.Is(st.SyncErr, registry.ErrUnreachable) || st.LastSync.IsZero() || st.Age <= 0 || st.Report != nil {
			t.Errorf("status %+v", st)
		}
		if n, err := r.Mirror().Stats(ctx); err != nil || n.Total != 30 {
			t.Errorf("stats %+v %v", n, err)
		}
		if _, err := r.Refresh(ctx); !errors.Is(err, registry.ErrUnreachable) {
			t.Errorf("Refresh offline: %v", err)
		}
	})
	t.Run("RequireFresh fails", func(t *testing.T) {
		o := remoteOpts(path)
		o.RequireFresh = true
		if _, err := msync.Connect(ctx, dead, "", o); !errors.Is(err, registry.ErrUnreachable) {
			t.Errorf("Connect: %v, want ErrUnreachable", err)
		}
	})
	t.Run("no snapshot fails clearly", func(t *testing.T) {
		_, err := msync.Connect(ctx, dead, "", remoteOpts(filepath.Join(t.TempDir(), "new.db")))
		if !errors.Is(err, registry.ErrUnreachable) || !strings.Contains(err.Error(), "no snapshot") {
			t.Errorf("Connect: %v", err)
		}
	})
	t.Run("bad URL", func(t *testing.T) {
		if _, err := msync.Connect(ctx, "ftp://x", "", remoteOpts(filepath.Join(t.TempDir(), "x.db"))); err == nil {
			t.Error("Connect accepted an ftp URL")
		}
	})
}

func TestFromEnv(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 20, 22), APIKey: apiKey, ReadAuth: true})
	path := filepath.Join(t.TempDir(), "env.db")
	t.Setenv(msync.EnvRegistry, srv.URL())
	t.Setenv(msync.EnvAPIKey, apiKey)
	t.Setenv(msync.EnvMirrorDB, path)
	o := remoteOpts("")
	r, err := msync.FromEnv(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Mirror().Path() != path || r.BaseURL() != srv.URL() || r.Status().Report.Total != 20 {
		t.Errorf("path %s base %s status %+v", r.Mirror().Path(), r.BaseURL(), r.Status())
	}
	if got := srv.LastHeaders().Get("X-API-Key"); got != apiKey {
		t.Errorf("X-API-Key %q", got)
	}

	t.Setenv(msync.EnvAPIKey, "wrong")
	t.Setenv(msync.EnvMirrorDB, filepath.Join(t.TempDir(), "other.db"))
	if _, err := msync.FromEnv(context.Background(), o); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("wrong key: %v", err)
	}
	t.Setenv(msync.EnvRegistry, "")
	if _, err := msync.FromEnv(context.Background(), o); err == nil || !strings.Contains(err.Error(), msync.EnvRegistry) {
		t.Errorf("unset %s: %v", msync.EnvRegistry, err)
	}
}

func TestGetLive(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 10, 23), APIKey: apiKey})
	r, _ := connect(t, srv)
	ctx := context.Background()
	late := build(t, "live_late", "added after connect", store.Active)
	srv.AddRaw(late.Raw)
	if _, err := r.Get(ctx, late.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get before GetLive: %v", err)
	}
	s, err := r.GetLive(ctx, late.ID)
	if err != nil || s == nil || string(s.Raw) != string(late.Raw) {
		t.Fatalf("GetLive: %v", err)
	}
	if got, err := r.Get(ctx, late.ID); err != nil || string(got.Raw) != string(late.Raw) {
		t.Errorf("GetLive did not store the stage: %v", err)
	}
	// Bypasses the cache: a lifecycle changed upstream is seen.
	if err := srv.SetLifecycle(late.ID, store.Tombstone); err != nil {
		t.Fatal(err)
	}
	if s, err := r.GetLive(ctx, late.ID); err != nil || s.Lifecycle.Kind != store.LifecycleTombstone {
		t.Errorf("GetLive after a change: %v %v", s, err)
	}
	missing := build(t, "live_missing", "never uploaded", store.Active)
	if s, err := r.GetLive(ctx, missing.ID); s != nil || err != nil {
		t.Errorf("GetLive(missing) = %v, %v, want nil, nil", s, err)
	}
	bad := build(t, "live_bad", "tampered", store.Active)
	srv.AddRaw(badSig(t, bad))
	if s, err := r.GetLive(ctx, bad.ID); s != nil || !errors.Is(err, store.ErrVerification) {
		t.Errorf("GetLive(bad) = %v, %v, want ErrVerification", s, err)
	}
	if _, err := r.Get(ctx, bad.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a stage that failed verification was stored: %v", err)
	}
}

func TestRemoteWrites(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 10, 24), APIKey: apiKey})
	r, _ := connect(t, srv)
	ctx := context.Background()
	s := build(t, "write_one", "written through", store.Draft)

	id, err := r.Put(ctx, s)
	if err != nil || id != s.ID {
		t.Fatalf("Put: %s %v", id, err)
	}
	if raw, ok := srv.Stage(s.ID); !ok || string(raw) != string(s.Raw) {
		t.Error("Put did not reach the registry")
	}
	if got, err := r.Get(ctx, s.ID); err != nil || string(got.Raw) != string(s.Raw) {
		t.Errorf("Put did not reach the mirror: %v", err)
	}
	if _, err := r.Put(ctx, s); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("second Put: %v, want ErrAlreadyExists", err)
	}
	if _, err := r.Upsert(ctx, s); err != nil {
		t.Errorf("Upsert of an existing stage: %v", err)
	}
	if _, err := r.Put(ctx, &store.Stage{}); err == nil {
		t.Error("Put of an empty stage succeeded")
	}

	if err := r.UpdateLifecycle(ctx, s.ID, store.Active); err != nil {
		t.Fatalf("UpdateLifecycle: %v", err)
	}
	up, _ := srv.Stage(s.ID)
	got, err := r.Get(ctx, s.ID)
	if err != nil || got.Lifecycle.Kind != store.LifecycleActive || string(got.Raw) != string(up) {
		t.Errorf("after UpdateLifecycle: mirror %v %v; registry %s", got, err, up)
	}
	if err := r.UpdateLifecycle(ctx, s.ID, store.Draft); !errors.Is(err, store.ErrInvalidTransition) {
		t.Errorf("Active → Draft: %v, want ErrInvalidTransition", err)
	}

	if err := r.Remove(ctx, s.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, ok := srv.Stage(s.ID); ok {
		t.Error("Remove did not reach the registry")
	}
	if _, err := r.Get(ctx, s.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Remove did not reach the mirror: %v", err)
	}
	if err := r.Remove(ctx, s.ID); err != nil {
		t.Errorf("Remove of a stage the registry does not have: %v, want nil", err)
	}
}

func TestRemoteWritesNeedTheKey(t *testing.T) {
	srv := newServer(t, registrytest.Options{APIKey: apiKey})
	path := filepath.Join(t.TempDir(), "m.db")
	r, err := msync.Connect(context.Background(), srv.URL(), "", remoteOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Put(context.Background(), build(t, "nokey", "d", store.Active)); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("Put without the key: %v", err)
	}
}

func TestRemoteWritesOffline(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 10, 25), APIKey: apiKey})
	r, _ := connect(t, srv)
	ctx := context.Background()
	kept := idOf(t, genStages(t, 10, 25)[0])
	srv.Close()
	before := capture(t, r.Mirror())

	s := build(t, "offline_put", "d", store.Active)
	if _, err := r.Put(ctx, s); !errors.Is(err, msync.ErrOffline) || !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("Put offline: %v, want ErrOffline", err)
	}
	if err := r.UpdateLifecycle(ctx, kept, store.Tombstone); !errors.Is(err, msync.ErrOffline) {
		t.Errorf("UpdateLifecycle offline: %v", err)
	}
	if err := r.Remove(ctx, kept); !errors.Is(err, msync.ErrOffline) {
		t.Errorf("Remove offline: %v", err)
	}
	if s, err := r.GetLive(ctx, kept); s != nil || !errors.Is(err, registry.ErrUnreachable) {
		t.Errorf("GetLive offline: %v %v", s, err)
	}
	before.check(t, r.Mirror().Path())
	if _, err := r.Get(ctx, kept); err != nil {
		t.Errorf("reads offline: %v", err)
	}
}

func TestRemoteStats(t *testing.T) {
	stages := genStages(t, 50, 26)
	srv := newServer(t, registrytest.Options{Stages: stages, APIKey: apiKey})
	r, _ := connect(t, srv)
	ctx := context.Background()
	want := store.Stats{ByLifecycle: map[string]int{}, ByEffect: map[string]int{}}
	for _, raw := range stages {
		s, _ := store.DecodeStage(raw)
		want.Add(s)
	}
	check := func(from string) {
		t.Helper()
		got, err := r.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats (%s): %v", from, err)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			t.Errorf("Stats from %s\n got %s\nwant %s", from, g, w)
		}
		if len(got.ByLifecycle) != 4 {
			t.Errorf("Stats from %s count %d lifecycles, want all 4", from, len(got.ByLifecycle))
		}
	}
	before := srv.Requests()
	check("/health")
	if srv.Requests() == before {
		t.Error("Stats did not ask /health")
	}
	srv.Close()
	check("the mirror")
}

var _ store.StageStore = (*msync.RemoteStageStore)(nil)

// TestPutExistingKeepsTheRegistrysCopy: re-submitting a stage the
// registry already holds under another lifecycle must not overwrite the
// mirror with the client's stale copy.
func TestPutExistingKeepsTheRegistrysCopy(t *testing.T) {
	srv := newServer(t, registrytest.Options{APIKey: apiKey})
	r, _ := connect(t, srv)
	ctx := context.Background()
	draft := build(t, "resubmit", "d", store.Draft)
	if _, err := r.Put(ctx, draft); err != nil {
		t.Fatal(err)
	}
	if err := r.UpdateLifecycle(ctx, draft.ID, store.Active); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Put(ctx, draft); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Put: %v", err)
	}
	up, _ := srv.Stage(draft.ID)
	got, err := r.Get(ctx, draft.ID)
	if err != nil || string(got.Raw) != string(up) {
		t.Errorf("mirror holds %v (%v), want the registry's Active copy", got, err)
	}
}

// TestUpdateLifecycleOfAStageTheMirrorLacks: the registry holds a draft
// the mirror never listed (drafts behind auth); activating it succeeds and
// caches the registry's copy instead of failing with NotFound.
func TestUpdateLifecycleOfAStageTheMirrorLacks(t *testing.T) {
	d := build(t, "hidden_draft", "d", store.Draft)
	srv := newServer(t, registrytest.Options{Stages: []json.RawMessage{d.Raw}, APIKey: apiKey, DraftsNeedAuth: true})
	path := filepath.Join(t.TempDir(), "m.db")
	o := remoteOpts(path)
	o.Sync.Lifecycles = []string{"active", "deprecated", "tombstone"}
	r, err := msync.Connect(context.Background(), srv.URL(), apiKey, o)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if _, err := r.Get(ctx, d.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("setup: the draft is cached: %v", err)
	}
	if err := r.UpdateLifecycle(ctx, d.ID, store.Active); err != nil {
		t.Fatalf("UpdateLifecycle: %v", err)
	}
	up, _ := srv.Stage(d.ID)
	if got, err := r.Get(ctx, d.ID); err != nil || string(got.Raw) != string(up) {
		t.Errorf("mirror: %v %v, want the registry's Active copy", got, err)
	}
}
