package mirror

import (
	"fmt"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// TestQuarantineKeyIsNotTheClaimedID: a refused stage with a malformed id
// is stored under "x"+sha256 of its bytes while its entry's ID is the id
// it claims. Removals, the content hash, merged reads and diffs must all
// go by the key (found by review: Fill could not remove such an entry,
// and Verify reported the digest wrong), through a delta and through a
// compaction.
func TestQuarantineKeyIsNotTheClaimedID(t *testing.T) {
	for _, opts := range []Options{{MaxOverlay: 100}, {MaxOverlay: 1}} {
		t.Run(fmt.Sprintf("max-overlay=%d", opts.MaxOverlay), func(t *testing.T) { quarantineKeyIsNotTheClaimedID(t, opts) })
	}
}

func quarantineKeyIsNotTheClaimedID(t *testing.T, opts Options) {
	m := layeredMirror(t, opts)
	g, bad := storetest.NewVerifiableGen(3), storetest.NewGen(3)
	ctx := t.Context()
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good := g.Stage()
	e := w.AdmitStage(bad.Stage(storetest.WithID("not-a-valid-id")))
	if e.Admitted() || !strings.HasPrefix(e.QuarantineKey(), "x") {
		t.Fatalf("admitted %v key %q", e.Admitted(), e.QuarantineKey())
	}
	if err := w.PutBatch([]Entry{forced(good, store.Verify(good)), e}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if q := m.Meta().Quarantined; q != 1 {
		t.Fatalf("quarantined %d", q)
	}
	res, err := m.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() {
		t.Errorf("verify after first sync: %v", res.Problems)
	}
	// A sync that lists only the good stage: the refusal must go.
	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.Fill(ctx, func(k Key) bool { return k.ID() == good.ID }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("Fill removes %d, want the one refusal", n)
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	if q := m.Meta().Quarantined; q != 0 {
		t.Errorf("after a sync that no longer lists it, %d quarantined (want 0)", q)
	}
	if res := mustVerify(t, m); !res.OK() {
		t.Errorf("verify after the removal: %v", res.Problems)
	}
}

// TestResumedSyncForgetsFillRemovals: the removals a Fill recorded belong
// to its run's listing. A resumed sync starts without them (so a sync that
// finds nothing new can Refresh), and a second Fill replaces them (found
// by review: a stage the resumed sync kept went anyway, past the loss
// guard).
func TestResumedSyncForgetsFillRemovals(t *testing.T) {
	m := layeredMirror(t, Options{MaxOverlay: 100})
	g := storetest.NewGen(5)
	ctx := t.Context()
	a, b := g.Stage(), g.Stage()
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch([]Entry{w.AdmitStage(a), w.AdmitStage(b)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	// Sync 1: upstream lists only a; Fill records b's removal; killed
	// before Publish (what it staged kept for the next run).
	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Fill(ctx, func(k Key) bool { return k.ID() == a.ID }, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(true); err != nil {
		t.Fatal(err)
	}
	// Sync 2 resumes: upstream lists a and b again, both unchanged (InBase).
	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Resumed() {
		t.Fatal("not resumed")
	}
	if dirty, err := w.Dirty(); err != nil || dirty {
		t.Errorf("a resumed sync starts dirty (%v): the last run's removals came along", err)
	}
	if _, err := w.Fill(ctx, func(Key) bool { return true }, nil); err != nil {
		t.Fatal(err)
	}
	res, err := w.Publish(ctx, PublishInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Contains(ctx, b.ID); !ok || m.Meta().Total != 2 {
		t.Errorf("resumed sync that lists b published %+v: b served %v, total %d", res, ok, m.Meta().Total)
	}
}
