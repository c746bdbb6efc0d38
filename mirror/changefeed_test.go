package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// content is a generation as a map: stage id → raw, and "q:"+quarantine
// key → raw.
func content(t *testing.T, m *Mirror, ref string) map[string]string {
	t.Helper()
	sn, err := m.SnapshotAt(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	out := map[string]string{}
	err = sn.ScanRaw(t.Context(), store.LifecycleUnknown, func(id store.StageID, raw []byte) error {
		out[string(id)] = string(raw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for q, err := range sn.Quarantined(t.Context()) {
		if err != nil {
			t.Fatal(err)
		}
		out["q:"+q.Key] = string(q.Raw)
	}
	return out
}

// apply applies the feed from..to to have, as a downstream would.
func apply(t *testing.T, m *Mirror, from, to string, have map[string]string) (map[string]string, *ChangeFeed) {
	t.Helper()
	cf, err := m.OpenChangeFeed(t.Context(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Close()
	out := map[string]string{}
	if !cf.Full {
		for k, v := range have {
			out[k] = v
		}
	}
	n := 0
	err = cf.Walk(t.Context(), func(c Change) error {
		n++
		switch c.Kind {
		case ChangeAdded, ChangeChanged, ChangeLifecycle:
			out[c.Key] = string(bytes.Clone(c.Raw))
		case ChangeRemoved:
			delete(out, c.Key)
		case ChangeQuarantined:
			out["q:"+c.Key] = string(c.Raw)
		case ChangeReleased:
			delete(out, "q:"+c.Key)
		default:
			return fmt.Errorf("kind %v", c.Kind)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != cf.Items() {
		t.Errorf("walk yielded %d items, Items says %d", n, cf.Items())
	}
	return out, cf
}

// TestChangeFeedApplies: for every pair of kept generations (deltas,
// merged chains and compactions between them), the feed turns the older
// one's content into the newer one's, and the feed from 0 is the whole
// content.
func TestChangeFeedApplies(t *testing.T) {
	for _, opts := range []Options{{MaxOverlay: 1000}, {MaxOverlay: 6, MaxLayers: 2}} {
		t.Run(fmt.Sprintf("max-overlay=%d", opts.MaxOverlay), func(t *testing.T) {
			m := layeredMirror(t, opts)
			g, bad := storetest.NewVerifiableGen(7), storetest.NewGen(8)
			var live []*store.Stage
			for round := 0; round < 6; round++ {
				w, err := m.BeginSync(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				var es []Entry
				for i := 0; i < 3; i++ {
					s := g.Stage()
					live = append(live, s)
					es = append(es, forced(s, store.Verify(s)))
				}
				es = append(es, w.AdmitStage(bad.Stage(storetest.WithID(store.StageID(fmt.Sprintf("bad-%d", round))))))
				if err := w.PutBatch(es, nil); err != nil {
					t.Fatal(err)
				}
				if round%2 == 1 {
					live = live[1:]
				}
				keep := map[store.StageID]bool{}
				for _, s := range live {
					keep[s.ID] = true
				}
				// Every other round keeps last round's refusal.
				keepQ := func(Key) bool { return round%2 == 0 }
				if _, err := w.Fill(t.Context(), func(k Key) bool { return keep[k.ID()] }, keepQ); err != nil {
					t.Fatal(err)
				}
				if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
					t.Fatal(err)
				}
			}
			gens, err := m.Generations(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range gens {
				to := fmt.Sprint(b.Generation)
				want := content(t, m, to)
				if got, cf := apply(t, m, "0", to, nil); !maps.Equal(got, want) || cf.To.Digest != b.Digest {
					t.Errorf("feed 0..%s: %d entries, want %d", to, len(got), len(want))
				}
				for _, a := range gens {
					if a.Generation > b.Generation {
						continue
					}
					from := fmt.Sprint(a.Generation)
					if got, _ := apply(t, m, from, to, content(t, m, from)); !maps.Equal(got, want) {
						t.Errorf("feed %s..%s: %d entries, want %d", from, to, len(got), len(want))
					}
				}
			}
			if _, err := m.OpenChangeFeed(t.Context(), fmt.Sprint(gens[len(gens)-1].Generation), fmt.Sprint(gens[0].Generation)); !errors.Is(err, ErrNoGeneration) {
				t.Errorf("backwards feed: err = %v", err)
			}
		})
	}
}

// TestExpectDigest: a publish expecting another digest publishes
// nothing and leaves no file behind; the right digest publishes.
func TestExpectDigest(t *testing.T) {
	m := layeredMirror(t, Options{})
	g := storetest.NewVerifiableGen(9)
	first := syncAll(t, m, []*store.Stage{g.Stage(), g.Stage()}, PublishInfo{Upstream: "http://a"})
	files := func() int {
		des, err := os.ReadDir(gensDir(m.Path()))
		if err != nil {
			t.Fatal(err)
		}
		return len(des)
	}
	before := files()
	s := g.Stage()
	// addS begins a sync that keeps every stage and adds s.
	addS := func() *Writer {
		w, err := m.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.PutBatch(entries([]*store.Stage{s}), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Fill(t.Context(), func(Key) bool { return true }, nil); err != nil {
			t.Fatal(err)
		}
		return w
	}
	for _, expect := range []string{"00", first.Digest} {
		w := addS()
		_, err := w.Publish(t.Context(), PublishInfo{Upstream: "http://a", ExpectDigest: expect})
		if !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("expect %q: err = %v", expect, err)
		}
		w.Abort(false)
		if m.Meta().Generation != first.Generation || files() != before {
			t.Fatalf("a refused publish changed the mirror: generation %d, %d files (was %d)", m.Meta().Generation, files(), before)
		}
	}
	// The right digest: what a mirror holding the same stages has.
	res, err := addS().Publish(t.Context(), PublishInfo{Upstream: "http://a", UpstreamGeneration: 7, UpstreamDigest: "ab", ExpectDigest: digestWith(t, m, s)})
	if err != nil {
		t.Fatal(err)
	}
	meta := m.Meta()
	if res.Generation != first.Generation+1 || meta.UpstreamGeneration != 7 || meta.UpstreamDigest != "ab" {
		t.Fatalf("published %+v, meta upstream position %d %q", res, meta.UpstreamGeneration, meta.UpstreamDigest)
	}
}

// digestWith is the digest m's current content would have with s added,
// computed by a second mirror built from scratch.
func digestWith(t *testing.T, m *Mirror, s *store.Stage) string {
	t.Helper()
	ref := layeredMirror(t, Options{})
	var ss []*store.Stage
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for st, err := range sn.Stages(t.Context(), store.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, st)
	}
	sn.Close()
	return syncAll(t, ref, append(ss, s), PublishInfo{}).Digest
}

// TestDropMatchesFill: Drop, told exactly what leaves, publishes what
// Fill does after scanning; keys not held, or staged, are ignored.
func TestDropMatchesFill(t *testing.T) {
	g, bad := storetest.NewVerifiableGen(21), storetest.NewGen(22)
	ss := []*store.Stage{g.Stage(), g.Stage(), g.Stage(), g.Stage()}
	build := func(drop bool) *Mirror {
		m := layeredMirror(t, Options{})
		w, err := m.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		q := w.AdmitStage(bad.Stage(storetest.WithID("refused")))
		if err := w.PutBatch(append(entries(ss), q), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
			t.Fatal(err)
		}
		qk := q.Key()
		w, err = m.BeginSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		changed, _ := ss[1].WithLifecycle(store.Lifecycle{Kind: store.LifecycleDeprecated})
		if err := w.PutBatch(entries([]*store.Stage{changed}), nil); err != nil {
			t.Fatal(err)
		}
		k0, _ := KeyOfID(ss[0].ID)
		k1, _ := KeyOfID(ss[1].ID)
		if held, err := w.Holds(k0); err != nil || !held {
			t.Fatalf("Holds(%s) = %v, %v", k0, held, err)
		}
		if drop {
			unknown, _ := KeyOfID(g.ID())
			gone, n, err := w.Drop(t.Context(), []Key{k0, k1, unknown}, []Key{qk})
			if err != nil || len(gone) != 1 || gone[0] != ss[0].ID || n != 1 {
				t.Fatalf("Drop: %v, %d, %v", gone, n, err)
			}
		} else {
			keep := func(k Key) bool { return k != k0 }
			if _, err := w.Fill(t.Context(), keep, func(Key) bool { return false }); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := build(true), build(false)
	if da, db := a.Meta(), b.Meta(); da.Digest != db.Digest || da.Total != 3 || da.Quarantined != 0 {
		t.Errorf("Drop: digest %.12s total %d quarantined %d; Fill: %.12s %d %d", da.Digest, da.Total, da.Quarantined, db.Digest, db.Total, db.Quarantined)
	}
}

// TestRefusalKeepsUpstreamPosition: a refused sync records itself in the
// sidecar without losing what the generation records of its upstream
// (the position a change feed resumes from, the last change of
// upstream).
func TestRefusalKeepsUpstreamPosition(t *testing.T) {
	m := layeredMirror(t, Options{})
	g := storetest.NewVerifiableGen(41)
	syncAll(t, m, []*store.Stage{g.Stage()}, PublishInfo{Upstream: "http://a"})
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries([]*store.Stage{g.Stage()}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Fill(t.Context(), func(Key) bool { return true }, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), PublishInfo{Upstream: "http://b", UpstreamGeneration: 9, UpstreamDigest: "d9"}); err != nil {
		t.Fatal(err)
	}
	before := m.Meta()
	w, err = m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Refuse(SyncRefusal{At: time.Now(), Upstream: "http://b", Reason: "test", WouldRemove: 1, Total: 2}); err != nil {
		t.Fatal(err)
	}
	after := m.Meta()
	if after.Refused == nil || after.UpstreamGeneration != 9 || after.UpstreamDigest != "d9" ||
		after.PreviousUpstream != before.PreviousUpstream || before.PreviousUpstream != "http://a" {
		t.Errorf("after a refusal: refused %v, position %d %q, previous upstream %q (was %q)",
			after.Refused, after.UpstreamGeneration, after.UpstreamDigest, after.PreviousUpstream, before.PreviousUpstream)
	}
}
