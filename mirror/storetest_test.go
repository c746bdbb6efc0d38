package mirror

import (
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

// semanticsOnly is a mirror whose admission gate lets every stage in: the
// storetest suites generate stages with random ids, to test the
// StageStore semantics alone. TestAdmission* test the gate itself.
func semanticsOnly(t *testing.T) store.StageStore {
	m := newTemp(t, Options{})
	m.rule = func(*store.Stage, store.Report, *store.TrustPolicy) error { return nil }
	return m
}

func TestConformance(t *testing.T) {
	storetest.Run(t, semanticsOnly)
}

func TestDifferential(t *testing.T) {
	ops := 200
	if testing.Short() {
		ops = 60
	}
	for _, seed := range []int64{1, 2, 3, 42} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			storetest.Differential(t, semanticsOnly, seed, ops)
		})
	}
}
