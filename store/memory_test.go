package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// stdlibStages returns the fixture's stages with their exact bytes.
func stdlibStages(t testing.TB) []*store.Stage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "noether-stdlib-stages.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		t.Fatal(err)
	}
	out := make([]*store.Stage, 0, len(raws))
	for i, r := range raws {
		s, err := store.DecodeStage(r)
		if err != nil {
			t.Fatalf("fixture stage %d: %v", i, err)
		}
		out = append(out, s)
	}
	return out
}

func TestMemoryStoreStdlib(t *testing.T) {
	ctx := t.Context()
	stages := stdlibStages(t)
	if len(stages) != 85 {
		t.Fatalf("fixture has %d stages, want 85", len(stages))
	}
	m := store.NewMemoryStore()
	var want store.Stats
	for _, s := range stages {
		if _, err := m.Put(ctx, s); err != nil {
			t.Fatalf("Put %s: %v", s, err)
		}
		want.Add(s)
	}
	for _, s := range stages {
		got, err := m.Get(ctx, s.ID)
		if err != nil {
			t.Fatalf("Get %s: %v", s, err)
		}
		if !bytes.Equal(got.Raw, s.Raw) {
			t.Errorf("Get %s: Raw differs from the fixture bytes", s)
		}
		byName, err := m.FindByName(ctx, s.Name)
		if err != nil || len(byName) != 1 || byName[0].ID != s.ID {
			t.Errorf("FindByName(%q) = %v, %v; want just %s", s.Name, byName, err, s.ID)
		}
		if s.SignatureID != "" && s.Lifecycle.Kind == store.LifecycleActive {
			got, err := m.GetBySignature(ctx, s.SignatureID)
			if err != nil || got.ID != s.ID {
				t.Errorf("GetBySignature(%s) = %v, %v; want %s", s.SignatureID, got, err, s.ID)
			}
		}
	}
	st, err := m.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 85 || len(st.ByLifecycle) != len(want.ByLifecycle) || len(st.ByEffect) != len(want.ByEffect) {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	for k, v := range want.ByEffect {
		if st.ByEffect[k] != v {
			t.Errorf("ByEffect[%q] = %d, want %d", k, st.ByEffect[k], v)
		}
	}
	// Deprecating a real (pretty-printed) stage rewrites only its lifecycle.
	a, b := stages[0], stages[1]
	if err := m.UpdateLifecycle(ctx, a.ID, store.Deprecated(b.ID)); err != nil {
		t.Fatal(err)
	}
	got, err := m.Get(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantRaw := bytes.Replace(a.Raw, []byte(`"lifecycle": "Active"`),
		[]byte(`"lifecycle": {"Deprecated":{"successor_id":"`+string(b.ID)+`"}}`), 1)
	if !bytes.Equal(got.Raw, wantRaw) {
		t.Errorf("deprecated Raw:\n%s\nwant:\n%s", got.Raw, wantRaw)
	}
	if a.Lifecycle != store.Active {
		t.Error("UpdateLifecycle modified the caller's stage in place")
	}
}

func TestMemoryStoreUpsertReindexes(t *testing.T) {
	ctx := t.Context()
	g := storetest.NewGen(1)
	sigA, sigB := g.SigID(), g.SigID()
	m := store.NewMemoryStore()
	s := g.Stage(storetest.WithName("old"), storetest.WithSig(sigA))
	if _, err := m.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Same id, new name and signature id: the old index entries must go.
	s2 := g.Stage(storetest.WithID(s.ID), storetest.WithName("new"), storetest.WithSig(sigB))
	if _, err := m.Upsert(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.FindByName(ctx, "old"); len(got) != 0 {
		t.Errorf("FindByName(old) after rename = %v, want none", got)
	}
	if got, _ := m.FindByName(ctx, "new"); len(got) != 1 {
		t.Errorf("FindByName(new) = %v, want one", got)
	}
	if _, err := m.GetBySignature(ctx, sigA); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetBySignature(old sig) err = %v, want ErrNotFound", err)
	}
	if got, err := m.GetBySignature(ctx, sigB); err != nil || got.ID != s.ID {
		t.Errorf("GetBySignature(new sig) = %v, %v", got, err)
	}
	if err := m.Remove(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.FindByName(ctx, "new"); len(got) != 0 {
		t.Errorf("FindByName after Remove = %v, want none", got)
	}
	if got, _ := m.ActiveStagesWithSignature(ctx, sigB); len(got) != 0 {
		t.Errorf("ActiveStagesWithSignature after Remove = %v, want none", got)
	}
}

func TestMemoryStoreLogsAutoDeprecation(t *testing.T) {
	ctx := t.Context()
	var buf bytes.Buffer
	m := store.NewMemoryStore(store.WithMemoryLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	g := storetest.NewGen(2)
	sig := g.SigID()
	a, b := g.Stage(storetest.WithSig(sig)), g.Stage(storetest.WithSig(sig))
	for _, s := range []*store.Stage{a, b} {
		if _, err := m.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.String()
	if strings.Count(out, "auto-deprecated") != 1 || !strings.Contains(out, "deprecated="+string(a.ID)) ||
		!strings.Contains(out, "successor="+string(b.ID)) {
		t.Errorf("log = %q, want one auto-deprecation of %s in favour of %s", out, a.ID, b.ID)
	}
}

func TestMemoryStoreNilStage(t *testing.T) {
	m := store.NewMemoryStore()
	if _, err := m.Put(t.Context(), nil); err == nil {
		t.Error("Put(nil) succeeded")
	}
	if _, err := m.Upsert(t.Context(), nil); err == nil {
		t.Error("Upsert(nil) succeeded")
	}
}

func TestMemoryStoreStagesWithPrefix(t *testing.T) {
	ctx := t.Context()
	g := storetest.NewGen(3)
	m := store.NewMemoryStore()
	want := map[store.StageID]bool{}
	for i := range 10 {
		p := "ab"
		if i%2 == 1 {
			p = "cd"
		}
		s := g.Stage(storetest.WithID(g.IDWithPrefix(p)))
		if _, err := m.Put(ctx, s); err != nil {
			t.Fatal(err)
		}
		if p == "ab" {
			want[s.ID] = true
		}
	}
	var prev store.StageID
	n := 0
	for s, err := range m.StagesWithPrefix(ctx, "ab") {
		if err != nil {
			t.Fatal(err)
		}
		if !want[s.ID] || s.ID <= prev {
			t.Errorf("StagesWithPrefix(ab) yielded %s (after %s)", s.ID, prev)
		}
		prev = s.ID
		n++
	}
	if n != len(want) {
		t.Errorf("StagesWithPrefix(ab) yielded %d stages, want %d", n, len(want))
	}
}

func BenchmarkMemoryStorePut(b *testing.B) {
	g := storetest.NewGen(4)
	sigs := make([]store.SignatureID, 64)
	for i := range sigs {
		sigs[i] = g.SigID()
	}
	stages := make([]*store.Stage, b.N)
	for i := range stages {
		stages[i] = g.Stage(storetest.WithSig(sigs[i%len(sigs)]))
	}
	m := store.NewMemoryStore()
	ctx := b.Context()
	b.ResetTimer()
	for i := range b.N {
		if _, err := m.Put(ctx, stages[i]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryStoreGetBySignature(b *testing.B) {
	g := storetest.NewGen(5)
	m := store.NewMemoryStore()
	ctx := b.Context()
	var sigs []store.SignatureID
	for range 10000 {
		sig := g.SigID()
		sigs = append(sigs, sig)
		if _, err := m.Put(ctx, g.Stage(storetest.WithSig(sig))); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := m.GetBySignature(ctx, sigs[i%len(sigs)]); err != nil {
			b.Fatal(err)
		}
	}
}
