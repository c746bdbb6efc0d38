package sync_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// unsignedStage is a valid stage nobody signed.
func unsignedStage(t *testing.T, name string) *store.Stage {
	t.Helper()
	s, err := store.BuildStage(store.StageSpec{
		Name: name, Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Text"}`),
		ImplementationCode: name, Lifecycle: store.Active,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRemoteAdmission: the trust policy of RemoteOptions.Mirror applies to
// GetLive and Put as it does to a refresh; nothing refused is stored or
// sent.
func TestRemoteAdmission(t *testing.T) {
	trusted := build(t, "trusted_one", "t", store.Active)
	stranger := unsignedStage(t, "stranger_one")
	srv := newServer(t, registrytest.Options{Stages: []json.RawMessage{trusted.Raw}})
	policy, err := store.ParseTrustPolicy(strings.NewReader("test " + trusted.SignerPublicKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := remoteOpts(filepath.Join(t.TempDir(), "m.db"))
	opts.Mirror = mirror.Options{Trust: policy}
	ctx := context.Background()
	r, err := msync.Connect(ctx, srv.URL(), "", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// Upstream gains a stage the policy refuses.
	srv.AddRaw(stranger.Raw)
	if s, err := r.GetLive(ctx, stranger.ID); !errors.Is(err, store.ErrUntrusted) || s != nil {
		t.Fatalf("GetLive of an untrusted stage: %v, %v", s, err)
	}
	if _, err := r.Get(ctx, stranger.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused stage is served: %v", err)
	}
	if s, err := r.GetLive(ctx, trusted.ID); err != nil || s == nil {
		t.Errorf("GetLive of a trusted stage: %v, %v", s, err)
	}

	other := unsignedStage(t, "stranger_two")
	before := srv.Requests()
	if _, err := r.Put(ctx, other); !errors.Is(err, store.ErrUntrusted) {
		t.Errorf("Put of an untrusted stage: %v", err)
	}
	if srv.Requests() != before {
		t.Errorf("Put sent a stage the mirror refuses (%d requests)", srv.Requests()-before)
	}
}

// TestConnectIgnoresMirrorDB: an explicit MirrorPath is used as given;
// only FromEnv reads MIRROR_DB.
func TestConnectIgnoresMirrorDB(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: []json.RawMessage{build(t, "env_one", "e", store.Active).Raw}})
	elsewhere := filepath.Join(t.TempDir(), "env.db")
	t.Setenv(msync.EnvMirrorDB, elsewhere)
	path := filepath.Join(t.TempDir(), "explicit.db")
	r, err := msync.Connect(context.Background(), srv.URL(), "", remoteOpts(path))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Mirror().Path() != path {
		t.Errorf("mirror at %s, want %s", r.Mirror().Path(), path)
	}
	t.Setenv(msync.EnvRegistry, srv.URL())
	opts := remoteOpts("")
	fe, err := msync.FromEnv(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	if fe.Mirror().Path() != elsewhere {
		t.Errorf("FromEnv: mirror at %s, want MIRROR_DB %s", fe.Mirror().Path(), elsewhere)
	}
}
