package mirror

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/noether-mirror/mirror/mirror/internal/boltfile"
	"github.com/noether-mirror/mirror/store"
)

// mirrorImage returns the bytes of a healthy stdlib mirror file and the
// ids of its first n stages.
func mirrorImage(tb testing.TB, n int) ([]byte, []store.StageID) {
	tb.Helper()
	b, err := os.ReadFile(stdlibMirror(tb))
	if err != nil {
		tb.Fatal(err)
	}
	var ids []store.StageID
	for _, s := range stdlibStages(tb)[:n] {
		ids = append(ids, s.ID)
	}
	return b, ids
}

// exercise reads everything a corrupted mirror lets it read, collecting
// garbage in between so that a bad heap pointer is found while it is live.
func exercise(t *testing.T, m *Mirror, ids []store.StageID) {
	for range 2 {
		for _, err := range m.Records(t.Context(), store.LifecycleUnknown) {
			if err != nil {
				break
			}
		}
		runtime.GC()
		for _, id := range ids {
			_, _ = m.GetRaw(t.Context(), id)
		}
		_, _, _ = m.Page(t.Context(), store.LifecycleActive, 5, 5)
		runtime.GC()
		_, _ = m.Verify(t.Context())
		runtime.GC()
	}
}

// TestRootPageCorruptionNeverCrashes damages the bytes of a snapshot's
// root bucket page: Open refuses it with ErrCorrupt or every read fails
// or succeeds, never crashes. Before the root-page check
// (boltfile.CheckRoots), every one of twelve seeds crashed the process
// within 300 rounds with "found bad pointer in Go heap", which recover
// cannot catch.
func TestRootPageCorruptionNeverCrashes(t *testing.T) {
	orig, ids := mirrorImage(t, 20)
	root, _, err := boltfile.RootPage(orig)
	if err != nil {
		t.Fatal(err)
	}
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	r := rand.New(rand.NewPCG(7, 9))
	p := filepath.Join(t.TempDir(), "c.db")
	opened, refused := 0, 0
	for i := range rounds {
		b := bytes.Clone(orig)
		for range 1 + r.IntN(3) {
			b[root+r.IntN(1024)] ^= byte(1 + r.IntN(255))
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Open(p, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFormatVersion) {
				t.Errorf("round %d: open error %v is not ErrCorrupt", i, err)
			}
			refused++
			continue
		}
		opened++
		exercise(t, m, ids)
		m.Close()
	}
	// Both outcomes must occur, or the corruption missed the structures
	// that matter (or the check refuses healthy files).
	if opened == 0 || refused == 0 {
		t.Fatalf("%d damaged files opened, %d refused: want some of each", opened, refused)
	}
}
