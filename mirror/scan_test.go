package mirror

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
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
	m := newTemp(t, Options{MaxOverlay: 50, MaxLayers: 3}) // the sync compacts
	key := testKey()
	syncGenerated(t, m, 0, 300)
	var added []store.StageID
	for i := range 5 { // a merged delta and another, over the base
		id, err := m.Put(t.Context(), genStage(t, 1000+i, 100, key))
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, id)
	}
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
