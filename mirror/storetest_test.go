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

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.StageStore { return newTemp(t, Options{}) })
}

func TestDifferential(t *testing.T) {
	ops := 200
	if testing.Short() {
		ops = 60
	}
	for _, seed := range []int64{1, 2, 3, 42} {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			storetest.Differential(t, func(t *testing.T) store.StageStore { return newTemp(t, Options{}) }, seed, ops)
		})
	}
}
