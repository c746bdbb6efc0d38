package mirror

import (
	"errors"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// logCases returns stages that exercise the log compile: odd ids (with a
// 0x00, or not hex), names and signature ids that share prefixes or
// contain 0x00, several stages per name and signature, no name.
func logCases() []*store.Stage {
	g := storetest.NewGen(31)
	sig := g.SigID()
	var ss []*store.Stage
	for i := range 40 {
		opts := []storetest.Option{storetest.WithLifecycle(store.Draft)}
		switch i % 8 {
		case 0:
			opts = append(opts, storetest.WithName("a"), storetest.WithSig(sig))
		case 1:
			opts = append(opts, storetest.WithName("a\x00b"), storetest.WithSig(store.SignatureID(string(sig)+"\x00x")))
		case 2:
			opts = append(opts, storetest.WithName("ab"))
		case 3:
			opts = append(opts, storetest.WithoutName())
		case 4:
			opts = append(opts, storetest.WithName("a"), storetest.WithID(store.StageID("z\x00z"+string(rune('a'+i)))))
		case 5:
			opts = append(opts, storetest.WithName(""), storetest.WithID(store.StageID("NOT-HEX-"+string(rune('a'+i)))))
		}
		ss = append(ss, g.Stage(opts...))
	}
	return ss
}

// TestSyncLogMatchesLocal stages the same final content through a sync's
// log (shuffled, with replacements, deletions and quarantine in between)
// and through a local writer: the snapshots must be identical, digest
// included, or an unchanged sync after a local edit would republish.
func TestSyncLogMatchesLocal(t *testing.T) {
	ctx := t.Context()
	ss := append(logCases(), stdlibStages(t)...)

	local := newTemp(t, Options{})
	w, err := local.BeginLocal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if err := w.PutBatch([]Entry{forced(s, store.Verify(s))}, nil); err != nil {
			t.Fatal(err)
		}
	}
	want, err := w.Publish(ctx, PublishInfo{})
	if err != nil {
		t.Fatal(err)
	}

	synced := newTemp(t, Options{})
	w, err = synced.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	r := rand.New(rand.NewPCG(1, 2))
	order := r.Perm(len(ss))
	g := storetest.NewGen(77)
	for i := 0; i < len(order); i += 7 {
		var batch []Entry
		for _, j := range order[i:min(i+7, len(order))] {
			s := ss[j]
			// Stage other bytes under the id first (replaced in the same
			// batch), or quarantine it in an earlier batch.
			switch j % 5 {
			case 0:
				stale := g.Stage(storetest.WithID(s.ID), storetest.WithName("stale"))
				batch = append(batch, forced(stale, store.Verify(stale)))
			case 1:
				if !store.ValidID(string(s.ID)) {
					break // its quarantine key would not be its id
				}
				if err := w.PutBatch([]Entry{forcedQuarantine(s, nil, "test")}, nil); err != nil {
					t.Fatal(err)
				}
			}
			batch = append(batch, forced(s, store.Verify(s)))
		}
		extra := g.Stage(storetest.WithName("deleted later"))
		batch = append(batch, forced(extra, store.Verify(extra)))
		if err := w.PutBatch(batch, []byte("p")); err != nil {
			t.Fatal(err)
		}
		if err := w.Delete(extra.ID); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for id, err := range w.StagedIDs(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if raw, ok, err := w.Staged(id); !ok || err != nil || len(raw) == 0 {
			t.Fatalf("Staged(%q) = %d bytes, %v, %v", id, len(raw), ok, err)
		}
		n++
	}
	if n != len(ss) {
		t.Fatalf("StagedIDs gave %d ids, want %d", n, len(ss))
	}
	got, err := w.Publish(ctx, PublishInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.Digest || got.Total != want.Total {
		t.Fatalf("sync-staged snapshot differs from the local one: %d stages %s, want %d %s",
			got.Total, got.Digest, want.Total, want.Digest)
	}
	structureOK(t, synced, 40)
	if found, _ := synced.FindByName(ctx, "a"); len(found) != 10 {
		t.Errorf("FindByName(a) = %d stages, want 10", len(found))
	}
}

// TestSyncLogResume checks that a resumed sync rebuilds its index from the
// log, and that a damaged log is discarded rather than resumed.
func TestSyncLogResume(t *testing.T) {
	ctx := t.Context()
	ss := logCases()
	m := newTemp(t, Options{})
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries(ss[:20]), []byte("20")); err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries(ss[10:30]), []byte("30")); err != nil {
		t.Fatal(err)
	}
	w.Abort(true)

	w, err = m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Resumed() {
		t.Fatal("not resumed")
	}
	for i, s := range ss {
		raw, ok, err := w.Staged(s.ID)
		if err != nil || ok != (i < 30) || ok && string(raw) != string(s.Raw) {
			t.Fatalf("stage %d after resume: staged %v, %v", i, ok, err)
		}
	}
	if err := w.PutBatch(entries(ss[25:]), []byte("40")); err != nil {
		t.Fatal(err)
	}
	if res, err := w.Publish(ctx, PublishInfo{}); err != nil || res.Total != len(ss) {
		t.Fatalf("publish after resume: %+v, %v", res, err)
	}
	structureOK(t, m, len(ss))

	// A damaged log (as a power loss between fsyncs may leave it) is
	// discarded: the next sync starts afresh.
	for name, damage := range map[string]func(v []byte) []byte{
		"id length": func([]byte) []byte { return []byte{0xff} },
		"record bit": func(v []byte) []byte {
			v = append([]byte(nil), v...)
			v[len(v)-10] ^= 1
			return v
		},
	} {
		w, _ = m.BeginSync(ctx)
		w.PutBatch(entries(ss[:3]), []byte("3"))
		w.Abort(true)
		db, err := bolt.Open(m.Path()+".next", 0o644, &bolt.Options{Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLog)
			k, v := b.Cursor().Last()
			return b.Put(k, damage(v))
		}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		w, err = m.BeginSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if w.Resumed() {
			t.Errorf("%s: a damaged log was resumed", name)
		}
		if _, ok, _ := w.Staged(ss[0].ID); ok {
			t.Errorf("%s: a discarded log still stages stages", name)
		}
		w.Abort(false)
	}
}

func TestSyncWriterRefusesLocalEdits(t *testing.T) {
	ctx := t.Context()
	m := newTemp(t, Options{})
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	s := logCases()[0]
	if _, err := w.Put(ctx, s); !errors.Is(err, errSyncWriter) {
		t.Errorf("Put on a sync writer: %v", err)
	}
	if err := w.Remove(ctx, s.ID); !errors.Is(err, errSyncWriter) {
		t.Errorf("Remove on a sync writer: %v", err)
	}
	if _, err := os.Stat(m.Path() + ".next"); err != nil {
		t.Error(err)
	}
}

// structureOK verifies m, whose made-up stages (storetest.Gen's ids and
// signatures are random) number fake: those, and nothing else, fail.
func structureOK(t *testing.T, m *Mirror, fake int) {
	t.Helper()
	res, err := m.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != fake || len(res.Problems) != fake || res.Omitted != 0 {
		t.Fatalf("verify: %d failed, %d problems (want %d, all made-up stages): %v",
			res.Failed, len(res.Problems), fake, res.Problems)
	}
	for _, p := range res.Problems {
		if !strings.Contains(p.What, "stage failed verification") {
			t.Fatalf("verify: %v", p)
		}
	}
}

// TestCompiledMetaOwnsItsStrings: the meta compile returns must not point
// into the staging file, which is unmapped once the writer closes it. The
// effect counts were the trap: assigning to an existing string-keyed map
// entry replaces its key, so counting under a key read in place stored a
// view of the memory map.
func TestCompiledMetaOwnsItsStrings(t *testing.T) {
	m := newTemp(t, Options{})
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries(stdlibStages(t)), nil); err != nil {
		t.Fatal(err)
	}
	src, err := w.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	name, res, err := compile(t.Context(), m.Path(), source{tx: src, log: w.log}, Meta{}, m.opts, 0)
	_ = src.Rollback()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(name)
	if err := w.Abort(false); err != nil { // closes the staging file: its map is gone
		t.Fatal(err)
	}
	if len(res.meta.ByEffect) == 0 {
		t.Fatal("no effects counted")
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("an effect key points into the closed staging file: %v", p)
		}
	}()
	n := 0
	for k := range res.meta.ByEffect {
		n += len(strings.Clone(k))
	}
	if n == 0 {
		t.Error("empty effect keys")
	}
}
