package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// TestScanRaw: for every lifecycle filter, ScanRaw visits exactly what
// Records yields, in the same order, with the same bytes.
func TestScanRaw(t *testing.T) {
	m, err := Open(stdlibMirror(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := t.Context()
	for _, kind := range append([]store.LifecycleKind{store.LifecycleUnknown}, store.AllLifecycleKinds()...) {
		var want, got []string
		for r, err := range m.Records(ctx, kind) {
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, string(r.ID)+"\n"+string(r.Raw))
		}
		err := m.ScanRaw(ctx, kind, func(id store.StageID, raw []byte) error {
			got = append(got, string(id)+"\n"+string(raw))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: ScanRaw visited %d stages, Records %d", kind.Name(), len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: stage %d differs between ScanRaw and Records", kind.Name(), i)
			}
		}
	}
	stop := errors.New("stop")
	n := 0
	err = m.ScanRaw(ctx, store.LifecycleUnknown, func(store.StageID, []byte) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Fatalf("fn's error: got %v after %d calls, want it returned as is after 1", err, n)
	}
}

func TestScanRawCorruptRecord(t *testing.T) {
	p := filepath.Join(t.TempDir(), "flipped.db")
	b := copyFile(t, stdlibMirror(t), p)
	victim := stdlibStages(t)[3]
	i := bytes.Index(b, []byte(victim.Description))
	if i < 0 {
		t.Fatal("victim's description not found in the file")
	}
	b[i+2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var seen []store.StageID
	err = m.ScanRaw(t.Context(), store.LifecycleUnknown, func(id store.StageID, _ []byte) error {
		seen = append(seen, id)
		return nil
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ScanRaw over a flipped record: %v, want ErrCorrupt", err)
	}
	// The scan stops at the damaged record, having passed on every one
	// before it in id order (the checks run in parallel batches) and none
	// after.
	before := 0
	for _, s := range stdlibStages(t) {
		if s.ID < victim.ID {
			before++
		}
	}
	if len(seen) != before || !slices.IsSorted(seen) || (len(seen) > 0 && seen[len(seen)-1] >= victim.ID) {
		t.Fatalf("ScanRaw passed on %d stages before the damaged one, want the %d before it in id order", len(seen), before)
	}
	if before == 0 {
		t.Fatal("the damaged stage is the first: the test tests nothing")
	}
}

// TestScanRawCorruptDeltaRecord damages a record in a delta of a layered
// generation: a full scan (base and deltas merged, checked in batches)
// stops at it with ErrCorrupt naming the delta, having passed on every
// stage before it in id order.
func TestScanRawCorruptDeltaRecord(t *testing.T) {
	m, _, added := mergedOverBase(t)
	want := scanAll(t, m, store.LifecycleUnknown)
	// A scan stopped in its second batch, while the third is checked.
	stop, n := errors.New("stop"), 0
	err := m.ScanRaw(t.Context(), store.LifecycleUnknown, func(store.StageID, []byte) error {
		if n++; n == scanBatch+14 {
			return stop
		}
		return nil
	})
	if err != stop || n != scanBatch+14 {
		t.Fatalf("a scan stopped at stage %d: %v after %d stages", scanBatch+14, err, n)
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	victim := added[2]
	e, _, err := s.ov.touched([]byte(victim))
	if err != nil || e == nil || e.src == nil {
		t.Fatalf("stage %s is in no delta: %v", victim, err)
	}
	path := e.src.path
	if s.gen.Base == "" || len(s.gen.Deltas) != 2 || s.ov.deep == nil {
		t.Fatalf("want a base, a merged delta and another, have %s %v", s.gen.Base, s.gen.Deltas)
	}
	s.release()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	damageFile(t, path, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStages)
		v := bytes.Clone(b.Get([]byte(victim)))
		v[len(v)-3] ^= 0x01
		return b.Put([]byte(victim), v)
	})
	m2, err := Open(m.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	var seen [][]byte
	err = m2.ScanRaw(t.Context(), store.LifecycleUnknown, func(_ store.StageID, raw []byte) error {
		seen = append(seen, bytes.Clone(raw))
		return nil
	})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Base(path)) {
		t.Fatalf("ScanRaw over a damaged delta record: %v, want ErrCorrupt naming %s", err, filepath.Base(path))
	}
	before := 0
	for _, raw := range want {
		var st struct {
			ID store.StageID `json:"id"`
		}
		if json.Unmarshal(raw, &st) == nil && st.ID < victim {
			before++
		}
	}
	if before == 0 || !slices.EqualFunc(seen, want[:before], bytes.Equal) {
		t.Fatalf("ScanRaw passed on %d stages, want the %d before the damaged one, in order", len(seen), before)
	}
}

// TestScanRawBatches checks full and per-kind scans of generations whose
// overlay puts more than a batch of its records between two base records
// and after the last, replaces and removes base records across many
// batches, in a delta folded at open and in a merged delta, against the
// same content compacted. The ids a scan passes must be its records' ids.
func TestScanRawBatches(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		merged bool
	}{
		{"folded-delta", Options{MaxOverlay: 1 << 20}, false},
		{"merged-delta", Options{MaxOverlay: 100, MaxMerged: 1 << 20}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := layeredMirror(t, tc.opts)
			g := storetest.NewGen(31)
			ids := make([]store.StageID, 2000)
			for i := range ids {
				ids[i] = g.ID()
			}
			slices.Sort(ids)
			lifecycles := []store.Lifecycle{store.Draft, store.Active, store.Deprecated(ids[0]), store.Tombstone}
			stage := func(id store.StageID, i int) *store.Stage {
				return g.Stage(storetest.WithID(id), storetest.WithLifecycle(lifecycles[i%len(lifecycles)]))
			}
			publish := func(stages map[store.StageID]*store.Stage) {
				t.Helper()
				w, err := m.BeginSync(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				var batch []Entry
				for _, s := range stages {
					batch = append(batch, w.AdmitStage(s))
				}
				if err := w.PutBatch(batch, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
					t.Fatal(err)
				}
			}
			cur := map[store.StageID]*store.Stage{}
			for i, id := range append(slices.Clone(ids[:200]), ids[700:1100]...) {
				cur[id] = stage(id, i)
			}
			opts := m.opts
			m.opts.MaxOverlay = 1 // a compacted base
			publish(cur)
			m.opts = opts
			for i, id := range append(slices.Clone(ids[300:650]), ids[1500:1900]...) {
				cur[id] = stage(id, i) // runs of new ids longer than a batch
			}
			for i := 0; i < 200; i += 3 {
				delete(cur, ids[i])
			}
			for i := 700; i < 1100; i += 5 {
				cur[ids[i]] = stage(ids[i], i+1) // a new lifecycle
			}
			publish(cur)
			s, err := m.acquire()
			if err != nil {
				t.Fatal(err)
			}
			layered, merged := len(s.gen.Deltas) == 1, s.ov != nil && s.ov.deep != nil
			s.release()
			if !layered || merged != tc.merged {
				t.Fatalf("the generation has one delta over a base: %v, a merged delta: %v; want true, %v", layered, merged, tc.merged)
			}
			want := compactedCopy(t, m)
			for _, kind := range append([]store.LifecycleKind{store.LifecycleUnknown}, store.AllLifecycleKinds()...) {
				var got [][]byte
				err := m.ScanRaw(t.Context(), kind, func(id store.StageID, raw []byte) error {
					st, err := store.DecodeStage(raw)
					if err != nil || st.ID != id {
						return fmt.Errorf("the scan passed id %.8s with the record of %.8s (%v)", id, st.ID, err)
					}
					got = append(got, bytes.Clone(raw))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if w := scanAll(t, want, kind); !slices.EqualFunc(got, w, bytes.Equal) {
					t.Fatalf("ScanRaw(%s) gives %d stages, want %d", kind.Name(), len(got), len(w))
				}
			}
		})
	}
}

// TestScanRawFileCutShort cuts the base file short under an open
// mirror's mapping, as a disk-full copy or another program might: a scan
// then faults reading records on the checking goroutines (or pages on its
// own), and must return ErrCorrupt instead of crashing the process.
func TestScanRawFileCutShort(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 600) // a few hundred KB of records
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	path := s.file.path
	s.release()
	scanAll(t, m, store.LifecycleUnknown) // mapped and read once
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/3); err != nil {
		t.Fatal(err)
	}
	err = m.ScanRaw(t.Context(), store.LifecycleUnknown, func(store.StageID, []byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a scan of a file cut short: %v, want ErrCorrupt", err)
	}
}
