package mirror

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// newTemp creates an empty mirror in a fresh temporary directory.
func newTemp(t testing.TB, opts Options) *Mirror {
	t.Helper()
	m, err := Create(filepath.Join(t.TempDir(), "m", "mirror.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// forBothWriters runs test once for each way Publish writes a snapshot,
// as subtests: the page writer, and bbolt's transactions
// (Options.BoltTransactions, passed as tx).
func forBothWriters(t *testing.T, test func(t *testing.T, tx bool)) {
	for _, w := range []struct {
		name string
		tx   bool
	}{{"pages", false}, {"transactions", true}} {
		t.Run(w.name, func(t *testing.T) { test(t, w.tx) })
	}
}

// semanticsOnly returns the factory of a mirror (publishing through bbolt
// transactions when tx is set) whose admission gate lets every stage in:
// the storetest suites generate stages with random ids, to test the
// StageStore semantics alone. TestAdmission* test the gate itself.
func semanticsOnly(tx bool) func(t *testing.T) store.StageStore {
	return func(t *testing.T) store.StageStore {
		m := newTemp(t, Options{BoltTransactions: tx})
		m.rule = func(*store.Stage, store.Report, *store.TrustPolicy) error { return nil }
		return m
	}
}

func TestConformance(t *testing.T) {
	forBothWriters(t, func(t *testing.T, tx bool) { storetest.Run(t, semanticsOnly(tx)) })
}

func TestDifferential(t *testing.T) {
	ops := 200
	if testing.Short() {
		ops = 60
	}
	forBothWriters(t, func(t *testing.T, tx bool) {
		for _, seed := range []int64{1, 2, 3, 42} {
			t.Run("", func(t *testing.T) {
				t.Parallel()
				storetest.Differential(t, semanticsOnly(tx), seed, ops)
			})
		}
	})
}

// TestDifferentialLayered runs the differential test on mirrors that keep
// their edits as deltas: a long chain, and chains merged every few
// publishes, so that every StageStore read goes through the overlay.
func TestDifferentialLayered(t *testing.T) {
	ops := 200
	if testing.Short() {
		ops = 60
	}
	for _, opts := range []Options{{MaxOverlay: 1 << 20, MaxLayers: 1 << 10}, {MaxOverlay: 1 << 20, MaxLayers: 4}} {
		t.Run(fmt.Sprintf("layers=%d", opts.MaxLayers), func(t *testing.T) {
			for _, seed := range []int64{1, 2, 3} {
				t.Run("", func(t *testing.T) {
					t.Parallel()
					storetest.Differential(t, func(t *testing.T) store.StageStore {
						m := layeredMirror(t, opts)
						return m
					}, seed, ops)
				})
			}
		})
	}
}
