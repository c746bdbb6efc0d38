package mirror

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestManifestPositions is the differential test of a manifest's lookups
// (index, at, has, oldest, newest, count) against a flat list of its
// generations, with its oldest ones in spans of various lengths and gaps
// between the numbers.
func TestManifestPositions(t *testing.T) {
	nums := []uint64{3, 4, 5, 9, 10, 12, 13, 14, 20, 21}
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	var gens []*genRecord
	for i, n := range nums {
		gens = append(gens, &genRecord{Generation: n, Published: t0.Add(time.Duration(i) * time.Hour)})
	}
	for _, l := range [][]int{nil, {1}, {3}, {3, 1, 2}, {9}, {2, 2, 2, 2, 1}} {
		mf := layout(gens, l...)
		if mf.count() != len(nums) || mf.oldest() != nums[0] || mf.newest() != nums[len(nums)-1] {
			t.Fatalf("spans %v: count %d, oldest %d, newest %d", l, mf.count(), mf.oldest(), mf.newest())
		}
		for i, n := range nums {
			if got, ok := mf.index(n); !ok || got != i {
				t.Errorf("spans %v: index(%d) = %d, %v; want %d", l, n, got, ok, i)
			}
			g := mf.at(i)
			if g.Generation != n || !g.Published.Equal(gens[i].Published) || g.archived != (i < mf.narch) {
				t.Errorf("spans %v: at(%d) = generation %d published %s (archived %v), want %d, %s", l, i, g.Generation, g.Published, g.archived, n, gens[i].Published)
			}
		}
		for n := uint64(0); n < 25; n++ {
			if mf.has(n) != slices.Contains(nums, n) {
				t.Errorf("spans %v: has(%d) = %v", l, n, mf.has(n))
			}
		}
		if err := mf.checkOrder(); err != nil {
			t.Errorf("spans %v: %v", l, err)
		}
	}
}

// TestManifestOrderRefused: a manifest whose entries list generations out
// of order, or an archive entry after a record entry (a writer archives
// the oldest records), is refused as damaged.
func TestManifestOrderRefused(t *testing.T) {
	rec := func(n uint64) *genRecord {
		return &genRecord{Generation: n, Base: baseName(1), Published: time.Unix(int64(n), 0).UTC()}
	}
	st := func(ns ...uint64) *span {
		var gens []stamp
		for _, n := range ns {
			gens = append(gens, stampOf(rec(n)))
		}
		return newSpan(ns[0], gens)
	}
	for _, c := range []struct {
		name  string
		spans []*span
		held  []uint64
		want  string
	}{
		{"in order", []*span{st(1, 2), st(4, 5)}, []uint64{6, 7}, ""},
		{"spans overlap", []*span{st(1, 5), st(4, 6)}, []uint64{7}, "listed after"},
		{"a span overlaps the records", []*span{st(1, 2, 8)}, []uint64{7, 9}, "listed after"},
		{"an archive entry after a record", []*span{st(8, 9)}, []uint64{7, 10}, "follows the record"},
	} {
		mf := &manifest{current: c.held[len(c.held)-1], path: "m"}
		mf.setSpans(c.spans)
		for _, n := range c.held {
			mf.gens = append(mf.gens, rec(n))
		}
		path := filepath.Join(t.TempDir(), "manifest")
		writeRawManifest(t, path, mf)
		_, err := readManifestAfter(path, nil)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want ErrCorrupt saying %q", c.name, err, c.want)
		}
	}
}

// writeRawManifest writes mf's entries as a manifest at path through
// bbolt, in whatever order they come.
func writeRawManifest(t *testing.T, path string, mf *manifest) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		for k, v := range map[string][]byte{metaMagic: []byte(magic), metaFormatVersion: binary.BigEndian.AppendUint32(nil, FormatVersion),
			metaCurrent: beUint64(mf.current), metaLTHash: mf.state.Marshal(), metaManifest: []byte("1")} {
			if err := meta.Put([]byte(k), v); err != nil {
				return err
			}
		}
		gb, err := tx.CreateBucket(bucketGens)
		if err != nil {
			return err
		}
		for _, sp := range mf.spans {
			if err := gb.Put(beUint64(sp.id), sp.entry); err != nil {
				return err
			}
		}
		for _, g := range mf.gens {
			if g.raw, err = json.Marshal(g); err != nil {
				return err
			}
			if err := gb.Put(beUint64(g.Generation), g.entry()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSpansShared: a manifest read after another shares the spans whose
// entries did not change, and with them the records decoded from their
// archive files; a span whose entry changed is read anew.
func TestSpansShared(t *testing.T) {
	m, key := archivedMirror(t, Options{}, 3*archiveLen+10)
	first := readManifestFile(t, m.Path(), nil)
	if len(first.spans) < 2 {
		t.Fatalf("%d archive entries, want 2 or more", len(first.spans))
	}
	recs, err := first.records()
	if err != nil {
		t.Fatal(err)
	}
	// The keep policy drops the oldest generation: its span is trimmed.
	if _, err := m.GC(t.Context(), &KeepPolicy{Last: first.count() - 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(t.Context(), genStage(t, 9999, 100, key)); err != nil {
		t.Fatal(err)
	}
	again := readManifestFile(t, m.Path(), first)
	if len(again.spans) != len(first.spans) {
		t.Fatalf("%d archive entries, then %d", len(first.spans), len(again.spans))
	}
	if again.spans[0] == first.spans[0] || again.spans[0].first() != first.spans[0].gens[1].n {
		t.Errorf("the trimmed span is shared, or lists %v", again.spans[0].gens)
	}
	for i, sp := range again.spans[1:] {
		if sp != first.spans[i+1] {
			t.Errorf("archive entry %d was read again, not shared", sp.id)
		}
	}
	got, err := again.records()
	if err != nil {
		t.Fatal(err)
	}
	for i := first.spans[1].gens[0].n; i <= first.spans[len(first.spans)-1].last(); i++ {
		a, _ := first.index(i)
		b, _ := again.index(i)
		if got[b] != recs[a] {
			t.Fatalf("generation %d was decoded again: a shared span's records pass on", i)
		}
	}
}

// readManifestFile reads the manifest at path, after prev (nil: none).
func readManifestFile(t *testing.T, path string, prev *manifest) *manifest {
	t.Helper()
	mf, err := readManifestAfter(path, prev)
	if err != nil {
		t.Fatal(err)
	}
	return mf
}

func readManifestAfter(path string, prev *manifest) (*manifest, error) {
	db, _, err := openBoltFile(path, Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var mf *manifest
	err = db.View(func(tx *bolt.Tx) (err error) { mf, err = readManifest(tx, path, prev); return err })
	return mf, err
}
