package mirror

import (
	"fmt"
	"testing"
)

// TestGenerationsSizeBytes: Meta.SizeBytes is "the size of the files the
// generation reads", and Generations describes every kept generation, so
// it must give each one the size SnapshotAt gives it. It reports 0 for
// every generation but the current one: genRecord.meta sets no size, and
// only openGen adds it up.
func TestGenerationsSizeBytes(t *testing.T) {
	m := newTemp(t, Options{})
	ss := stdlibStages(t)
	syncAll(t, m, ss[:40], PublishInfo{Upstream: "u"})
	syncAll(t, m, ss[:41], PublishInfo{Upstream: "u"})
	gens, err := m.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) != 3 {
		t.Fatalf("%d generations, want 3 (0, 1 and 2)", len(gens))
	}
	for _, g := range gens {
		sn, err := m.SnapshotAt(t.Context(), fmt.Sprint(g.Generation))
		if err != nil {
			t.Fatal(err)
		}
		want := sn.Meta().SizeBytes
		sn.Close()
		if want == 0 || g.SizeBytes != want {
			t.Errorf("generation %d: Generations says SizeBytes %d, SnapshotAt %d", g.Generation, g.SizeBytes, want)
		}
	}
}
