package sync_test

import (
	"context"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// remoteConfig is how RemoteStageStore's documented behaviour differs
// from MemoryStore's (see remote.go): Put refuses a stage that fails
// local verification, and Upsert cannot replace a stage the registry
// already holds.
var remoteConfig = storetest.Config{PutVerifies: true, UpsertKeepsExisting: true}

// newRemote connects a RemoteStageStore, with its mirror in a fresh
// temporary directory, to a fresh empty fake registry on loopback. When
// the test ends, the mirror must hold exactly what the registry holds.
func newRemote(t *testing.T) store.StageStore {
	t.Helper()
	r, _ := newRemoteServer(t)
	return r
}

func newRemoteServer(t *testing.T) (*msync.RemoteStageStore, *registrytest.Server) {
	t.Helper()
	srv := newServer(t, registrytest.Options{APIKey: apiKey})
	opts := remoteOpts(filepath.Join(t.TempDir(), "mirror.db"))
	// The suite tests store semantics, not retries: a POST that times out
	// on a loaded machine and is retried finds its own stage and reports
	// "already exists", as a real registry would.
	opts.Registry.RequestTimeout = 30 * time.Second
	r, err := msync.Connect(context.Background(), srv.URL(), apiKey, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	t.Cleanup(func() { wantCoherent(t, srv, r) })
	return r, srv
}

// wantCoherent fails unless the mirror holds exactly the registry's
// stages, byte for byte: every write went to both.
func wantCoherent(t *testing.T, srv *registrytest.Server, r *msync.RemoteStageStore) {
	t.Helper()
	want := map[store.StageID]string{}
	for _, raw := range srv.Snapshot() {
		s, err := store.DecodeStage(raw)
		if err != nil {
			t.Errorf("the registry holds a stage that does not decode: %v", err)
			continue
		}
		want[s.ID] = string(raw)
	}
	got, err := r.List(context.Background(), store.Filter{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, s := range got {
		w, ok := want[s.ID]
		switch {
		case !ok:
			t.Errorf("the mirror holds %s, the registry does not", s.ID)
		case w != string(s.Raw):
			if reg, err := store.DecodeStage([]byte(w)); err == nil && reg.Lifecycle != s.Lifecycle {
				t.Errorf("stage %s: lifecycle %s in the mirror, %s in the registry", s.ID, s.Lifecycle, reg.Lifecycle)
				break
			}
			t.Errorf("stage %s differs:\n mirror   %s\n registry %s", s.ID, s.Raw, w)
		}
		delete(want, s.ID)
	}
	for id := range want {
		t.Errorf("the registry holds %s, the mirror does not", id)
	}
}

func TestRemoteConformance(t *testing.T) {
	storetest.RunConfig(t, newRemote, remoteConfig)
}

// TestRemoteConcurrentWritesCoherent starts writes that race for the one
// Active stage of a signature id all at once: Puts of Active stages, then
// activations of Drafts. The registry and the mirror each deprecate the
// losers towards the winner; they must agree on who won, and on every
// successor, so writes must reach both in the same order.
func TestRemoteConcurrentWritesCoherent(t *testing.T) {
	ctx := context.Background()
	for round := range 3 {
		r, srv := newRemoteServer(t)
		g := storetest.NewVerifiableGen(int64(100 + round))
		sig := g.SigID()
		var active, drafts []*store.Stage
		for range 6 {
			active = append(active, g.Stage(storetest.WithSig(sig)))
			drafts = append(drafts, g.Stage(storetest.WithSig(sig), storetest.WithLifecycle(store.Draft)))
		}
		for _, s := range drafts {
			if _, err := r.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		race := func(what string, write func(*store.Stage) error, stages []*store.Stage) {
			start := make(chan struct{})
			var wg gosync.WaitGroup
			for _, s := range stages {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if err := write(s); err != nil {
						t.Errorf("round %d, %s %s: %v", round, what, s.ID, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			wantCoherent(t, srv, r)
		}
		race("Put", func(s *store.Stage) error { _, err := r.Put(ctx, s); return err }, active)
		race("activate", func(s *store.Stage) error { return r.UpdateLifecycle(ctx, s.ID, store.Active) }, drafts)
		if t.Failed() {
			return
		}
	}
}
