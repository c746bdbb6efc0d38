package mirror

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

func TestSyncPublishStdlib(t *testing.T) {
	m := newTemp(t, Options{})
	if g := m.Meta().Generation; g != 0 {
		t.Fatalf("new mirror generation %d, want 0", g)
	}
	ss := stdlibStages(t)
	when := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	totals := map[string]int{"active": len(ss)}
	res := syncAll(t, m, ss, PublishInfo{Upstream: "http://registry.test", SyncTime: when, UpstreamTotals: totals})
	if res.Unchanged || res.Generation != 1 || res.Total != len(ss) {
		t.Fatalf("publish result %+v", res)
	}
	ctx := t.Context()
	for _, s := range ss {
		raw, err := m.GetRaw(ctx, s.ID)
		if err != nil || !bytes.Equal(raw, s.Raw) {
			t.Fatalf("GetRaw %s: %v (bytes equal: %v)", s.ID, err, bytes.Equal(raw, s.Raw))
		}
		rec, err := m.GetRecord(ctx, s.ID)
		if err != nil || rec.Name != s.Name || rec.SignatureID != s.SignatureID || rec.Lifecycle != s.Lifecycle || !rec.Report.OK() {
			t.Fatalf("GetRecord %s: %+v, %v", s.ID, rec.Report, err)
		}
	}
	meta := m.Meta()
	if meta.Upstream != "http://registry.test" || !meta.LastSync.Equal(when) || meta.Total != len(ss) ||
		meta.UpstreamTotals["active"] != len(ss) || meta.FormatVersion != FormatVersion || meta.SizeBytes == 0 {
		t.Errorf("meta %+v", meta)
	}
	// Pages walk the id-ordered listing exactly once, for every kind.
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = string(s.ID)
	}
	slices.Sort(ids)
	var paged []string
	for off := 0; ; off += 10 {
		raws, total, err := m.Page(ctx, store.LifecycleUnknown, off, 10)
		if err != nil || total != len(ss) {
			t.Fatalf("page at %d: total %d, %v", off, total, err)
		}
		if len(raws) == 0 {
			break
		}
		for _, raw := range raws {
			st, err := store.DecodeStage(raw)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, string(st.ID))
		}
	}
	if !slices.Equal(paged, ids) {
		t.Errorf("paging gave %d ids, not the sorted listing of %d", len(paged), len(ids))
	}
	var n int
	for r, err := range m.Records(ctx, store.LifecycleActive) {
		if err != nil || r.Lifecycle.Kind != store.LifecycleActive {
			t.Fatalf("Records(active): %v %v", r.Lifecycle, err)
		}
		n++
	}
	if n != meta.Counts["active"] {
		t.Errorf("Records(active) gave %d, meta counts %d", n, meta.Counts["active"])
	}
	if raws, _ := m.FindRawByName(ctx, ss[0].Name); len(raws) != 1 || !bytes.Equal(raws[0], ss[0].Raw) {
		t.Errorf("FindRawByName(%q) gave %d stages", ss[0].Name, len(raws))
	}
	if ss[0].Lifecycle.Kind == store.LifecycleActive {
		if raw, err := m.GetRawBySignature(ctx, ss[0].SignatureID); err != nil || !bytes.Equal(raw, ss[0].Raw) {
			t.Errorf("GetRawBySignature: %v", err)
		}
	}
	st, err := m.Stats(ctx)
	ref := store.NewMemoryStore()
	for _, s := range ss {
		ref.Upsert(ctx, s)
	}
	want, _ := ref.Stats(ctx)
	if err != nil || st.Total != want.Total || !mapsEq(st.ByLifecycle, want.ByLifecycle) || !mapsEq(st.ByEffect, want.ByEffect) {
		t.Errorf("stats %+v, want %+v (%v)", st, want, err)
	}
	res2 := mustVerify(t, m)
	if res2.Checked != len(ss) {
		t.Errorf("verify checked %d, want %d", res2.Checked, len(ss))
	}
}

func mapsEq(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPublishUnchangedRefreshesSidecar(t *testing.T) {
	m := newTemp(t, Options{})
	ss := stdlibStages(t)[:20]
	t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	first := syncAll(t, m, ss, PublishInfo{Upstream: "u", SyncTime: t1})
	fi1, err := os.Stat(m.Path())
	if err != nil {
		t.Fatal(err)
	}
	// Meta caches the sidecar; the publish below must refresh it.
	if got := m.Meta().LastSync; !got.Equal(t1) {
		t.Fatalf("last sync %v, want %v", got, t1)
	}
	t2 := t1.Add(time.Hour)
	again := syncAll(t, m, ss, PublishInfo{Upstream: "u", SyncTime: t2, UpstreamTotals: map[string]int{"active": 20}})
	if !again.Unchanged || again.Generation != first.Generation || again.Digest != first.Digest {
		t.Fatalf("identical sync: %+v, first %+v", again, first)
	}
	fi2, _ := os.Stat(m.Path())
	if !os.SameFile(fi1, fi2) {
		t.Error("an unchanged sync replaced the snapshot file")
	}
	meta := m.Meta()
	if !meta.LastSync.Equal(t2) || meta.Generation != first.Generation || meta.UpstreamTotals["active"] != 20 {
		t.Errorf("meta after unchanged sync: last sync %v generation %d totals %v", meta.LastSync, meta.Generation, meta.UpstreamTotals)
	}
	// Same content in a different batch order is still unchanged.
	rev := slices.Clone(ss)
	slices.Reverse(rev)
	if r := syncAll(t, m, rev, PublishInfo{SyncTime: t2.Add(time.Hour)}); !r.Unchanged {
		t.Error("reordered identical content was published as new")
	}
	// One changed stage publishes generation 2.
	if r := syncAll(t, m, ss[:19], PublishInfo{SyncTime: t2.Add(2 * time.Hour)}); r.Unchanged || r.Generation != 2 || r.Total != 19 {
		t.Errorf("changed sync: %+v", r)
	}
	for _, pat := range []string{".next", ".tmp-*", ".state.tmp-*"} {
		if names, _ := filepath.Glob(m.Path() + pat); len(names) > 0 {
			t.Errorf("left behind: %v", names)
		}
	}
}

func TestQuarantine(t *testing.T) {
	m := newTemp(t, Options{})
	ctx := t.Context()
	good := stdlibStages(t)[:3]
	bad := genStage(t, 1, 200, testKey())
	tampered, err := store.DecodeStage(bytes.Replace(bad.Raw, []byte("Generated"), []byte("generated"), 1))
	if err != nil {
		t.Fatal(err)
	}
	malformed := []byte(`{"id": 12}`)
	es := append(entries(good),
		forcedQuarantine(tampered, nil, "signature mismatch"),
		forcedQuarantine(nil, malformed, "malformed"))
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(es, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{SyncTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.GetRaw(ctx, tampered.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a quarantined stage was served: %v", err)
	}
	if ok, _ := m.Contains(ctx, tampered.ID); ok {
		t.Error("Contains reports a quarantined stage")
	}
	var qs []QuarantineEntry
	for q, err := range m.Quarantined(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	if len(qs) != 2 || m.Meta().Quarantined != 2 || m.Meta().Total != 3 {
		t.Fatalf("quarantined %d entries (meta %d, total %d)", len(qs), m.Meta().Quarantined, m.Meta().Total)
	}
	byID := map[string]QuarantineEntry{}
	for _, q := range qs {
		byID[q.ID] = q
		if q.FirstSeen.IsZero() {
			t.Errorf("entry %s has no first-seen time", q.ID)
		}
	}
	if q, ok := byID[string(tampered.ID)]; !ok || !bytes.Equal(q.Raw, tampered.Raw) || q.Reasons[0] != "signature mismatch" {
		t.Errorf("tampered entry: %+v", q)
	}
	synthetic := (&Entry{raw: malformed}).QuarantineKey()
	if q, ok := byID[synthetic]; !ok || !bytes.Equal(q.Raw, malformed) || !strings.HasPrefix(synthetic, "x") {
		t.Errorf("malformed entry under %s: %+v", synthetic, q)
	}
	mustVerify(t, m)
	// The same upstream later: FirstSeen is kept, so nothing changes.
	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(es, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Publish(ctx, PublishInfo{SyncTime: time.Now()}); err != nil || !r.Unchanged {
		t.Errorf("re-sync of the same quarantined bytes: %+v %v", r, err)
	}
	// Upstream fixes the stage: it is served and leaves quarantine.
	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(append(entries(good), forced(bad, store.Verify(bad))), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{SyncTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if raw, err := m.GetRaw(ctx, bad.ID); err != nil || !bytes.Equal(raw, bad.Raw) || m.Meta().Quarantined != 0 {
		t.Errorf("fixed stage: %v, quarantined %d", err, m.Meta().Quarantined)
	}
}

func TestPutBatchRejectsEmptyEntries(t *testing.T) {
	m := newTemp(t, Options{})
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	for _, e := range []Entry{{}, {err: store.ErrVerification}, {stage: stdlibStages(t)[0]}, {gated: true}} {
		if err := w.PutBatch([]Entry{e}, nil); err == nil {
			t.Errorf("PutBatch(%+v) succeeded", e)
		}
	}
}

func TestVerifyReportsStaleStoredChecks(t *testing.T) {
	m := newTemp(t, Options{})
	s := stdlibStages(t)[0]
	rep := store.Verify(s)
	rep.Checks = slices.Clone(rep.Checks)
	rep.Checks[0].Status = store.CheckFail
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch([]Entry{forced(s, rep)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	res, err := m.Verify(t.Context())
	if err != nil || res.Failed != 1 || len(res.Problems) != 1 || !strings.Contains(res.Problems[0].What, "stored as fail but is now pass") {
		t.Errorf("verify: %+v %v", res, err)
	}
}

// TestIndexNamesWithNUL: index keys are value 0x00 id, so a name that
// itself contains 0x00 must not leak into another name's look-up.
func TestIndexNamesWithNUL(t *testing.T) {
	m := newTemp(t, Options{})
	ctx := t.Context()
	g := storetest.NewGen(9)
	sig := g.SigID()
	plain := g.Stage(storetest.WithName("a"), storetest.WithSig(sig))
	nul := g.Stage(storetest.WithName("a\x00b"), storetest.WithSig(store.SignatureID(string(sig)+"\x00x")))
	// An id containing 0x00 under the plain name takes the confirm path.
	odd := g.Stage(storetest.WithName("a"), storetest.WithID("z\x00z"), storetest.WithLifecycle(store.Draft))
	// Such ids never pass the gate: stage them as a file of an older
	// version might hold them.
	w, err := m.BeginLocal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for _, s := range []*store.Stage{plain, nul, odd} {
		es = append(es, forced(s, store.Verify(s)))
	}
	if err := w.PutBatch(es, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	got, err := m.FindByName(ctx, "a")
	if err != nil || len(got) != 2 || got[0].ID != plain.ID && got[1].ID != plain.ID {
		t.Fatalf("FindByName(a): %d stages, %v", len(got), err)
	}
	for _, s := range got {
		if s.Name != "a" {
			t.Errorf("FindByName(a) returned %q", s.Name)
		}
	}
	if got, _ := m.FindByName(ctx, "a\x00b"); len(got) != 1 || got[0].ID != nul.ID {
		t.Errorf("FindByName(a NUL b) gave %d stages", len(got))
	}
	act, err := m.ActiveStagesWithSignature(ctx, sig)
	if err != nil || len(act) != 1 || act[0].ID != plain.ID {
		t.Errorf("ActiveStagesWithSignature: %d, %v", len(act), err)
	}
}

// TestStagingPageSize: a sync stages into the snapshot's 64 KiB pages, a
// local edit into a delta's 4 KiB ones (see stagingPageSize).
func TestStagingPageSize(t *testing.T) {
	m := newTemp(t, Options{})
	for _, c := range []struct {
		begin func(context.Context) (*Writer, error)
		want  int
	}{{m.BeginSync, pageSize}, {m.BeginLocal, smallPageSize}} {
		w, err := c.begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		got := w.db.Info().PageSize
		if err := w.Abort(false); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("a %s writer's staging file has %d-byte pages, want %d", w.mode, got, c.want)
		}
	}
}
