package mirror

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

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
