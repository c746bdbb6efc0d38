package mirror

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

// A library bug found while building `mirror serve`'s /at/G/, fixed by
// openGen naming a missing data file errDataFileGone.

// TestSnapshotAtCollectedElsewhere: a reader whose manifest is
// older than a GC another handle (another process) ran still resolves a
// collected generation, and SnapshotAt then finds its files gone. Its
// doc and code mean to report ErrGenerationGone ("collected meanwhile":
// history.go checks errors.Is(err, os.ErrNotExist)), but openBoltFile
// turns a missing file into ErrNoMirror ("no mirror at …g….delta: run
// `mirror sync` first (or pass --db)"), which wraps no os.ErrNotExist,
// so the check never matches: the caller gets the wrong sentinel and
// advice, and `mirror serve` a 503 instead of the 404 a collected
// generation gets. (A file removed between openBoltFile's Stat and
// bolt.Open is ErrCorrupt instead, for the same reason.)
func TestSnapshotAtCollectedElsewhere(t *testing.T) {
	ctx := t.Context()
	reader := newTemp(t, Options{ReloadInterval: time.Hour})
	writer, err := Open(reader.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	key := testKey()
	for i := range 2 {
		if _, err := writer.Put(ctx, genStage(t, i+1, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reader.Reload(); err != nil {
		t.Fatal(err)
	}
	gens, err := reader.Generations(ctx)
	if err != nil || len(gens) < 2 {
		t.Fatalf("generations: %v %v", gens, err)
	}
	old := gens[len(gens)-2].Generation
	if _, err := writer.Put(ctx, genStage(t, 3, 100, key)); err != nil {
		t.Fatal(err)
	}
	if _, err := writer.GC(ctx, &KeepPolicy{Last: 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	// reader's manifest, an hour from its next reload, still lists old.
	if g, err := reader.Resolve(ctx, strconv.FormatUint(old, 10)); err != nil || g != old {
		t.Fatalf("the stale reader resolves %d, %v; want %d", g, err, old)
	}
	sn, err := reader.SnapshotAt(ctx, strconv.FormatUint(old, 10))
	if err == nil {
		sn.Close()
		t.Fatal("SnapshotAt pinned a generation whose files were removed")
	}
	if !errors.Is(err, ErrGenerationGone) {
		t.Errorf("SnapshotAt of a generation collected by another handle: %v\n(errors.Is ErrGenerationGone false, ErrNoMirror %v, ErrCorrupt %v)",
			err, errors.Is(err, ErrNoMirror), errors.Is(err, ErrCorrupt))
	}
}
