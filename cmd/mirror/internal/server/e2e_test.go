package server

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	syncengine "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// mirrorContents returns every stage's exact bytes in m's current
// snapshot, by id.
func mirrorContents(t *testing.T, m *mirror.Mirror) map[store.StageID][]byte {
	t.Helper()
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	out := map[store.StageID][]byte{}
	for r, err := range sn.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		out[r.ID] = bytes.Clone(r.Raw)
	}
	return out
}

// TestEndToEndMirrorOfMirror: fake registry → sync into mirror A → serve A
// → sync mirror B from A's server → A and B hold identical stage bytes.
func TestEndToEndMirrorOfMirror(t *testing.T) {
	ctx := context.Background()
	upstream := mixedRaws(t)
	// One stage whose signature_id does not match its content: A
	// quarantines it and never serves it.
	bad := bytes.Replace(upstream[5], []byte(`"signature_id": "`), []byte(`"signature_id": "0`), 1)
	if bytes.Equal(bad, upstream[5]) {
		t.Fatal("could not tamper with a fixture stage")
	}
	upstream[5] = bad
	stages := make([]json.RawMessage, len(upstream))
	for i, r := range upstream {
		stages[i] = r
	}
	reg, err := registrytest.NewServer(registrytest.Options{Stages: stages, Generate: 450, StageSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()

	dir := t.TempDir()
	mA, err := mirror.Create(filepath.Join(dir, "a.db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer mA.Close()
	clientA, err := registry.New(reg.URL(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repA, err := syncengine.Sync(ctx, mA, clientA, syncengine.Options{})
	if err != nil {
		t.Fatalf("sync A: %v", err)
	}
	if repA.Quarantined != 1 {
		t.Errorf("A quarantined %d stages, want the tampered one", repA.Quarantined)
	}

	srv := httptest.NewServer(newTestServer(t, FromMirror(mA), Options{}).Handler())
	defer srv.Close()
	mB, err := mirror.Create(filepath.Join(dir, "b.db"), mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mB.Close()
	clientB, err := registry.New(srv.URL, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	repB, err := syncengine.Sync(ctx, mB, clientB, syncengine.Options{})
	if err != nil {
		t.Fatalf("sync B from A's server: %v", err)
	}
	// B read A's change feed: A's whole content, its refusal included
	// (B's gate refused it too), proven equal by digest.
	if !repB.Feed.Used || repB.Feed.From != 0 || repB.Quarantined != 1 || len(repB.Warnings) != 0 {
		t.Errorf("B: feed %+v, %d quarantined, warnings %v", repB.Feed, repB.Quarantined, repB.Warnings)
	}
	if da, db := mA.Meta().Digest, mB.Meta().Digest; da != db {
		t.Errorf("digests differ: A %s, B %s", da, db)
	}
	// Listing every page instead (NoFeed): what A serves, so no
	// quarantine.
	mL, err := mirror.Create(filepath.Join(dir, "l.db"), mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mL.Close()
	repL, err := syncengine.Sync(ctx, mL, clientB, syncengine.Options{NoFeed: true})
	if err != nil {
		t.Fatalf("sync L from A's server: %v", err)
	}
	if repL.Feed.Used || repL.Quarantined != 0 || len(repL.Warnings) != 0 || repL.Pages == 0 {
		t.Errorf("L: feed %+v, %d quarantined, %d pages, warnings %v", repL.Feed, repL.Quarantined, repL.Pages, repL.Warnings)
	}
	if !maps.EqualFunc(mirrorContents(t, mL), mirrorContents(t, mB), bytes.Equal) {
		t.Error("a listing and the feed give other stages")
	}

	a, b := mirrorContents(t, mA), mirrorContents(t, mB)
	if want := len(upstream) + 450 - 1; len(a) != want {
		t.Errorf("A holds %d stages, want %d", len(a), want)
	}
	if len(a) != len(b) {
		t.Fatalf("A holds %d stages, B %d", len(a), len(b))
	}
	for id, raw := range a {
		if !bytes.Equal(raw, b[id]) {
			t.Fatalf("stage %s differs between A and B", id)
		}
	}
	// And both hold exactly the upstream bytes.
	for id, raw := range a {
		got, ok := reg.Stage(id)
		if !ok || !bytes.Equal(raw, got) {
			t.Fatalf("stage %s differs from upstream", id)
		}
	}
	if ma, mb := mA.Meta(), mB.Meta(); ma.Total != mb.Total || ma.Quarantined != 1 || mb.Quarantined != 1 ||
		!maps.Equal(ma.Counts, mb.Counts) || !maps.Equal(ma.ByEffect, mb.ByEffect) {
		t.Errorf("meta differs: A %+v\nB %+v", ma, mb)
	}
}
