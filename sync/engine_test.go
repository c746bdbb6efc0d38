package sync_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	gosync "sync"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

func TestSyncStdlibAndEveryLifecycle(t *testing.T) {
	stdlib, err := registrytest.StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	stages := append(slices.Clone(stdlib), genStages(t, 120, 1)...)
	srv := newServer(t, registrytest.Options{Stages: stages})
	m := newMirror(t)
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 25})
	if rep.Outcome != msync.OutcomeOK || !rep.Published || rep.Generation != 1 {
		t.Fatalf("outcome %s published %v generation %d, want ok, true, 1", rep.Outcome, rep.Published, rep.Generation)
	}
	if rep.Total != len(stages) || rep.Added != len(stages) || rep.Removed+rep.Changed+rep.Unchanged+rep.Quarantined != 0 {
		t.Fatalf("report %+v, want %d added and nothing else", rep, len(stages))
	}
	want := map[string]int{}
	for _, raw := range stages {
		s, _ := store.DecodeStage(raw)
		want[s.Lifecycle.Kind.Name()]++
	}
	for _, lc := range []string{"draft", "active", "deprecated", "tombstone"} {
		if want[lc] == 0 {
			t.Fatalf("fixture has no %s stage", lc)
		}
		if rep.ByLifecycle[lc] != want[lc] {
			t.Errorf("ByLifecycle[%s] = %d, want %d", lc, rep.ByLifecycle[lc], want[lc])
		}
	}
	if rep.Commits != rep.Pages || rep.Pages == 0 || rep.Drift.Detected {
		t.Errorf("commits %d pages %d drift %+v", rep.Commits, rep.Pages, rep.Drift)
	}
	assertMirrors(t, m, srv)
	if meta := m.Meta(); meta.Upstream != srv.URL() || meta.LastSync.IsZero() || meta.UpstreamTotals["active"] != want["active"] {
		t.Errorf("meta %+v", meta)
	}
	vr, err := m.Verify(context.Background())
	if err != nil || !vr.OK() {
		t.Fatalf("mirror.Verify after sync: %v %+v", err, vr.Problems)
	}
}

// TestSyncRequests checks the requests a sync makes: pages of 200 of every
// lifecycle, offsets advancing by the page length, a listing stopping when
// offset reaches total (no request for an empty page after an exact
// multiple of 200), and one confirmation per lifecycle once every listing
// has ended. A lifecycle's first page is requested while the lifecycle
// before it is listed, so only the order within a lifecycle is fixed.
func TestSyncRequests(t *testing.T) {
	stages := genStages(t, 476, 2) // 400 active (a multiple of 200), 76 others
	srv := newServer(t, registrytest.Options{Stages: stages})
	rec := &recorder{Registry: newClient(t, srv.URL())}
	mustSync(t, newMirror(t), rec, msync.Options{})
	active := len(lifecycleIDs(t, srv, store.LifecycleActive))
	if active != 400 {
		t.Fatalf("fixture has %d active stages, want 400", active)
	}
	want := []string{
		"draft/200/0",
		"active/200/0", "active/200/200",
		"deprecated/200/0",
		"tombstone/200/0",
		"draft/1/0", "active/1/0", "deprecated/1/0", "tombstone/1/0",
	}
	got := rec.Calls()
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("requests\n got %q\nwant %q (in any order across lifecycles)", got, want)
	}
	// Within a lifecycle, pages come in offset order.
	if a, b := slices.Index(got, "active/200/0"), slices.Index(got, "active/200/200"); a > b {
		t.Errorf("requests %q: active's second page before its first", got)
	}
	// Confirmations come last.
	for i, c := range got {
		if strings.Contains(c, "/1/") != (i >= len(got)-4) {
			t.Errorf("requests %q: a confirmation overlaps the listing", got)
			break
		}
	}
}

// fakeRegistry serves fixed pages with a chosen total, to test stop rules
// the fake server cannot produce.
type fakeRegistry struct {
	stages   []json.RawMessage
	total    int
	hasTotal bool
	// maxLimit, when set, caps the page size like a server whose maximum
	// is below what the client asks for.
	maxLimit int

	mu    gosync.Mutex
	calls []string
}

func (f *fakeRegistry) BaseURL() string { return "http://fake.invalid" }
func (f *fakeRegistry) ListPage(_ context.Context, lc string, limit, offset int) (registry.Page, error) {
	f.mu.Lock()
	f.calls = append(f.calls, lc+"/"+itoa(offset)+"/"+itoa(limit))
	f.mu.Unlock()
	if f.maxLimit > 0 {
		limit = min(limit, f.maxLimit)
	}
	p := registry.Page{Total: f.total, HasTotal: f.hasTotal}
	if lc == "active" && offset < len(f.stages) {
		p.Stages = f.stages[offset:min(offset+limit, len(f.stages))]
	}
	if lc != "active" {
		p.Total = 0
	}
	return p, nil
}
func (f *fakeRegistry) GetStage(context.Context, store.StageID) (json.RawMessage, error) {
	return nil, store.ErrNotFound
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestSyncStopRules(t *testing.T) {
	var active []json.RawMessage
	for i := range 5 {
		active = append(active, build(t, "stop_"+itoa(i), "d", store.Active).Raw)
	}
	t.Run("empty page ends a listing whose total lies", func(t *testing.T) {
		f := &fakeRegistry{stages: active, total: 9, hasTotal: true}
		// Prefetch 1: one request at a time, so the order is exact.
		rep, err := msync.Sync(context.Background(), newMirror(t), f, msync.Options{PageSize: 2, Prefetch: 1, Lifecycles: []string{"active"}, MaxRelists: 1})
		if err != nil {
			t.Fatal(err)
		}
		// offsets 0,2,4 then 5 is empty: stop; relisted once (drift), then
		// confirmed never (still inconsistent: unresolved).
		want := []string{"active/0/2", "active/2/2", "active/4/2", "active/5/2"}
		if got := f.calls[:4]; !slices.Equal(got, want) {
			t.Errorf("calls %q, want %q first", f.calls, want)
		}
		if len(f.calls) != 8 {
			t.Errorf("calls %q: want one relist of 4 pages", f.calls)
		}
		if rep.Total != 5 || !rep.Drift.Detected || !rep.Drift.Unresolved || rep.Outcome != msync.OutcomePartial {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("missing total reads the first page only", func(t *testing.T) {
		f := &fakeRegistry{stages: active, hasTotal: false}
		rep, err := msync.Sync(context.Background(), newMirror(t), f, msync.Options{PageSize: 2, Lifecycles: []string{"active"}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(f.calls, []string{"active/0/2"}) || rep.Total != 2 || len(rep.Warnings) != 1 {
			t.Errorf("calls %q report %+v", f.calls, rep)
		}
	})
}

// TestSyncPrefetch: pages are requested ahead once the first page is full,
// and a registry that returns fewer stages than asked (its own maximum is
// lower) still gets every stage exactly once, paged from where it really
// is.
func TestSyncPrefetch(t *testing.T) {
	var active []json.RawMessage
	for i := range 23 {
		active = append(active, build(t, "prefetch_"+itoa(i), "d", store.Active).Raw)
	}
	for _, tc := range []struct {
		name     string
		maxLimit int
	}{
		{"full pages", 0},
		{"registry caps the page size", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRegistry{stages: active, total: len(active), hasTotal: true, maxLimit: tc.maxLimit}
			m := newMirror(t)
			rep, err := msync.Sync(context.Background(), m, f, msync.Options{PageSize: 5, Prefetch: 3, Lifecycles: []string{"active"}})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Total != len(active) || rep.Drift.Detected || rep.Outcome != msync.OutcomeOK {
				t.Fatalf("report %+v", rep)
			}
			for _, raw := range active {
				s, err := store.DecodeStage(raw)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := m.Contains(context.Background(), s.ID); err != nil || !ok {
					t.Fatalf("stage %s missing after a prefetching sync (%v)", s.ID, err)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if tc.maxLimit == 0 && len(f.calls) != 5+1 { // 5 pages + 1 total confirmation
				t.Errorf("calls %q, want each of the 5 pages once and one confirmation", f.calls)
			}
		})
	}
}

func TestSyncUnchangedPublishesNothing(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 60, 3)})
	m := newMirror(t)
	c := newClient(t, srv.URL())
	first := mustSync(t, m, c, msync.Options{PageSize: 20})
	before := m.Meta()
	rep := mustSync(t, m, c, msync.Options{PageSize: 20})
	if rep.Outcome != msync.OutcomeUnchanged || rep.Published || rep.Generation != first.Generation {
		t.Fatalf("second sync: outcome %s published %v generation %d, want unchanged at %d", rep.Outcome, rep.Published, rep.Generation, first.Generation)
	}
	if rep.Unchanged != 60 || rep.Added+rep.Changed+rep.Removed+rep.LifecycleChanged+rep.Quarantined != 0 {
		t.Errorf("report %+v", rep)
	}
	// Every stage's bytes match the snapshot's verified copy: no signature
	// is checked again. The first sync had nothing to reuse.
	if first.VerifiedBefore != 0 || rep.VerifiedBefore != 60 {
		t.Errorf("verified_before: first sync %d, second %d; want 0 and 60", first.VerifiedBefore, rep.VerifiedBefore)
	}
	after := m.Meta()
	if after.Generation != before.Generation || after.Digest != before.Digest {
		t.Errorf("meta changed: %+v → %+v", before, after)
	}
	if !after.LastSync.After(before.LastSync) && !after.LastSync.Equal(before.LastSync) {
		t.Errorf("last sync went back: %v → %v", before.LastSync, after.LastSync)
	}
}

func TestSyncReportsEveryChange(t *testing.T) {
	var stages []json.RawMessage
	var specs []*store.Stage
	for i := range 8 {
		s := build(t, "change_"+itoa(i), "stage "+itoa(i), store.Active)
		specs = append(specs, s)
		stages = append(stages, s.Raw)
	}
	srv := newServer(t, registrytest.Options{Stages: stages})
	m := newMirror(t)
	c := newClient(t, srv.URL())
	mustSync(t, m, c, msync.Options{PageSize: 3})

	added := build(t, "change_new", "new", store.Draft)
	srv.AddRaw(added.Raw)
	srv.Remove(specs[0].ID)
	if err := srv.SetLifecycle(specs[1].ID, store.Tombstone); err != nil {
		t.Fatal(err)
	}
	redesc := build(t, "change_2", "a better description", store.Active)
	if redesc.ID != specs[2].ID {
		t.Fatal("a description change changed the id")
	}
	srv.AddRaw(redesc.Raw)
	srv.AddRaw(badSig(t, specs[3]))

	rep := mustSync(t, m, c, msync.Options{PageSize: 3, MaxRemove: msync.MaxRemovePercent(100)})
	got := [6]int{rep.Added, rep.Changed, rep.Removed, rep.LifecycleChanged, rep.Quarantined, rep.Unchanged}
	if want := [6]int{1, 1, 1, 1, 1, 4}; got != want {
		t.Errorf("added/changed/removed/lifecycle/quarantined/unchanged = %v, want %v", got, want)
	}
	// Only byte-identical stages reuse the snapshot's verification; the
	// changed, moved and tampered ones are checked again.
	if rep.VerifiedBefore != rep.Unchanged {
		t.Errorf("verified_before %d, want %d (the unchanged stages)", rep.VerifiedBefore, rep.Unchanged)
	}
	if !slices.Equal(rep.RemovedIDs, []string{string(specs[0].ID)}) || !slices.Equal(rep.QuarantinedIDs, []string{string(specs[3].ID)}) {
		t.Errorf("removed %q quarantined %q", rep.RemovedIDs, rep.QuarantinedIDs)
	}
	if rep.Outcome != msync.OutcomePartial || rep.Generation != 2 {
		t.Errorf("outcome %s generation %d, want partial 2", rep.Outcome, rep.Generation)
	}
	assertMirrors(t, m, srv)
}

func TestSyncQuarantine(t *testing.T) {
	good := build(t, "q_good", "fine", store.Active)
	unknown := build(t, "q_unknown", "has a field from the future", store.Active,
		store.ExtraField{Key: "provenance", Value: json.RawMessage(`{"built_by":"ci","n":[1,2]}`)})
	hash := build(t, "q_hash", "code edited after signing", store.Active)
	sig := build(t, "q_sig", "signature flipped", store.Deprecated(good.ID))
	idWrong := build(t, "q_id", "renamed after signing", store.Active)
	stages := []json.RawMessage{good.Raw, unknown.Raw, badHash(t, hash), badSig(t, sig),
		tamper(t, idWrong.Raw, `"name":"q_id"`, `"name":"q_id2"`)}
	srv := newServer(t, registrytest.Options{Stages: stages})
	m := newMirror(t)
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 2})
	if rep.Outcome != msync.OutcomePartial || rep.Quarantined != 3 || rep.Total != 2 || !rep.Published {
		t.Fatalf("report %+v, want partial with 3 quarantined and 2 served", rep)
	}
	assertMirrors(t, m, srv)
	ctx := context.Background()
	raw, err := m.GetRaw(ctx, unknown.ID)
	if err != nil || string(raw) != string(unknown.Raw) {
		t.Errorf("stage with unknown fields: %v, bytes %s", err, raw)
	}
	reasons := map[string]string{}
	for q, err := range m.Quarantined(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		reasons[q.ID] = strings.Join(q.Reasons, "; ")
	}
	for id, want := range map[store.StageID]string{hash.ID: store.CheckImplementationHash, sig.ID: store.CheckEd25519, idWrong.ID: store.CheckID} {
		if !strings.Contains(reasons[string(id)], want) {
			t.Errorf("quarantine reasons of %s = %q, want the %s check", id, reasons[string(id)], want)
		}
		if _, err := m.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s) = %v, want ErrNotFound", id, err)
		}
	}
	if m.Meta().Quarantined != 3 {
		t.Errorf("Meta().Quarantined = %d", m.Meta().Quarantined)
	}

	// Fixed upstream: the next sync serves it and the outcome is ok.
	srv.AddRaw(hash.Raw)
	srv.Remove(sig.ID)
	srv.Remove(idWrong.ID)
	rep = mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 2})
	if rep.Outcome != msync.OutcomeOK || rep.Quarantined != 0 || rep.Added != 1 {
		t.Errorf("after the fix: %+v", rep)
	}
	assertMirrors(t, m, srv)
}

func TestSyncTrustPolicyQuarantines(t *testing.T) {
	a := build(t, "trust_a", "a", store.Active)
	b, err := store.BuildStage(store.StageSpec{ // unsigned
		Name: "trust_b", Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Text"}`),
		ImplementationCode: "b", Lifecycle: store.Active,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, registrytest.Options{Stages: []json.RawMessage{a.Raw, b.Raw}})
	policy, err := store.ParseTrustPolicy(strings.NewReader("a " + a.SignerPublicKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := newMirrorWith(t, mirror.Options{Trust: policy})
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{})
	if rep.Quarantined != 1 || rep.Total != 1 || rep.Outcome != msync.OutcomePartial {
		t.Fatalf("report %+v", rep)
	}
	if _, err := m.Get(context.Background(), b.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("untrusted stage served: %v", err)
	}
}

func TestSyncDraftsRefusedIsAWarning(t *testing.T) {
	stages := genStages(t, 80, 4)
	srv := newServer(t, registrytest.Options{Stages: stages, DraftsNeedAuth: true})
	m := newMirror(t)
	rep := mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 30})
	if rep.Outcome != msync.OutcomeOK || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "draft") {
		t.Fatalf("outcome %s warnings %q", rep.Outcome, rep.Warnings)
	}
	drafts := lifecycleIDs(t, srv, store.LifecycleDraft)
	if len(drafts) == 0 || rep.ByLifecycle["draft"] != 0 || rep.Total != len(stages)-len(drafts) {
		t.Errorf("drafts %d, report %+v", len(drafts), rep)
	}
	if _, ok := m.Meta().UpstreamTotals["draft"]; ok {
		t.Errorf("UpstreamTotals has a total for the refused lifecycle: %v", m.Meta().UpstreamTotals)
	}

	_, err := msync.Sync(context.Background(), newMirror(t), newClient(t, srv.URL()), msync.Options{Lifecycles: []string{"draft"}})
	if !errors.Is(err, msync.ErrNoLifecycle) || !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("every lifecycle refused: %v, want ErrNoLifecycle wrapping ErrUnauthorized", err)
	}
}

func TestSyncOneAtATime(t *testing.T) {
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 5)})
	m := newMirror(t)
	c := newClient(t, srv.URL())
	other, err := mirror.Open(m.Path(), mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var second error
	done := false
	srv.OnPage(func(string, int) {
		if done {
			return
		}
		done = true
		// A second sync, through another handle on the same file, while
		// the first holds the writer lock.
		_, second = msync.Sync(context.Background(), other, c, msync.Options{})
	})
	rep := mustSync(t, m, c, msync.Options{PageSize: 10})
	if !errors.Is(second, mirror.ErrBusy) {
		t.Fatalf("concurrent sync: %v, want ErrBusy", second)
	}
	if rep.Outcome != msync.OutcomeOK {
		t.Errorf("first sync: %+v", rep)
	}
	assertMirrors(t, m, srv)
}
