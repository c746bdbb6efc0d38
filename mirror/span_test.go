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
	all := nums
	for _, c := range []struct {
		spans []int
		trim  bool // the first span's oldest generation dropped: its id is older than its first generation
	}{{nil, false}, {[]int{1}, false}, {[]int{3}, false}, {[]int{3, 1, 2}, false}, {[]int{9}, false}, {[]int{2, 2, 2, 2, 1}, false},
		{[]int{3}, true}, {[]int{2, 2, 2}, true}, {[]int{9}, true}} {
		l, mf, nums := c.spans, layout(gens, c.spans...), all
		if c.trim {
			sp := mf.spans[0]
			mf.setSpans(append([]*span{newSpan(sp.id, sp.gens[1:])}, mf.spans[1:]...))
			nums = all[1:]
		}
		if mf.count() != len(nums) || mf.oldest() != nums[0] || mf.newest() != nums[len(nums)-1] {
			t.Fatalf("spans %v: count %d, oldest %d, newest %d", l, mf.count(), mf.oldest(), mf.newest())
		}
		for i, n := range nums {
			if got, ok := mf.index(n); !ok || got != i {
				t.Errorf("spans %v: index(%d) = %d, %v; want %d", l, n, got, ok, i)
			}
			want := gens[i+len(all)-len(nums)]
			g := mf.at(i)
			if g.Generation != n || !g.Published.Equal(want.Published) || g.archived != (i < mf.narch) {
				t.Errorf("spans %v: at(%d) = generation %d published %s (archived %v), want %d, %s", l, i, g.Generation, g.Published, g.archived, n, want.Published)
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
// the oldest records), is refused as damaged; one with an entry that
// cannot be parsed, wherever it is, reads, but its history fails.
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
	damagedRecord := []byte{entryArchived, 1, 2, 3} // a record entry whose kind byte flipped
	for _, c := range []struct {
		name    string
		spans   []*span
		held    []uint64
		damage  map[uint64][]byte // entries replaced
		want    string            // "": the manifest reads
		damaged bool              // its history fails
	}{
		{"in order", []*span{st(1, 2), st(4, 5)}, []uint64{6, 7}, nil, "", false},
		{"spans overlap", []*span{st(1, 5), st(4, 6)}, []uint64{7}, nil, "listed after", false},
		{"a span overlaps the records", []*span{st(1, 2, 8)}, []uint64{7, 9}, nil, "listed after", false},
		{"a generation listed twice", []*span{st(1, 2)}, []uint64{2, 3}, nil, "listed after", false},
		{"an archive entry after a record", []*span{st(8, 9)}, []uint64{7, 10}, nil, "follows the record", false},
		{"the first archive entry damaged", []*span{st(1, 2), st(4, 5)}, []uint64{6, 7}, map[uint64][]byte{1: {0}}, "", true},
		{"archive entries damaged", []*span{st(1, 2), st(4, 5), st(8)}, []uint64{9}, map[uint64][]byte{1: {0}, 4: {}}, "", true},
		{"a record entry damaged", []*span{st(1, 2)}, []uint64{5, 6, 7}, map[uint64][]byte{6: damagedRecord}, "", true},
		{"a record entry damaged, no archive entry", nil, []uint64{5, 6, 7}, map[uint64][]byte{5: damagedRecord}, "", true},
	} {
		mf := &manifest{current: c.held[len(c.held)-1], path: "m"}
		mf.setSpans(c.spans)
		for _, n := range c.held {
			mf.gens = append(mf.gens, rec(n))
		}
		path := filepath.Join(t.TempDir(), "manifest")
		writeRawManifest(t, path, mf, c.damage)
		got, err := readManifestAfter(path, nil)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want ErrCorrupt saying %q", c.name, err, c.want)
		case c.want == "":
			if r, ok, err := got.get(got.current); err != nil || !ok || r.lazy {
				t.Errorf("%s: the current generation reads %v, %v", c.name, ok, err)
			}
			for k := range c.damage { // listed, and failing when read
				if _, _, err := got.get(k); !got.has(k) || !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s: the damaged entry %d is listed %v, reads %v", c.name, k, got.has(k), err)
				}
			}
			if _, _, err := (KeepPolicy{}).keep(got, nil, time.Now()); c.damaged != (err != nil) {
				t.Errorf("%s: the keep policy reads %v; want a failure: %v", c.name, err, c.damaged)
			}
		}
	}
}

// writeRawManifest writes mf's entries as a manifest at path through
// bbolt, in whatever order they come, replacing those damage has.
func writeRawManifest(t *testing.T, path string, mf *manifest, damage map[uint64][]byte) {
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
			v := g.val
			if v == nil {
				if g.raw, err = json.Marshal(g); err != nil {
					return err
				}
				v = g.entry()
			}
			if err := gb.Put(beUint64(g.Generation), v); err != nil {
				return err
			}
		}
		for k, v := range damage {
			if err := gb.Put(beUint64(k), v); err != nil {
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
	// An entry with other bytes of the same length is read anew.
	changed := slices.Clone(first.spans[1].gens)
	changed[3].t++
	other := &manifest{current: first.current, state: first.state, gens: first.gens}
	other.setSpans(append([]*span{first.spans[0], newSpan(first.spans[1].id, changed)}, first.spans[2:]...))
	path := filepath.Join(t.TempDir(), "other")
	writeRawManifest(t, path, other, nil)
	read := readManifestFile(t, path, first)
	if read.spans[1] == first.spans[1] || !slices.Equal(read.spans[1].gens, changed) || read.spans[0] != first.spans[0] {
		t.Errorf("an archive entry changed in place is taken from the manifest read before, or the others are not")
	}
}

// TestArchivedTimeChecked: an archived generation's record must have the
// publish time its archive entry lists, whatever the format the manifest
// decoding it says (the records decoded are kept in the span, which
// other manifests share).
func TestArchivedTimeChecked(t *testing.T) {
	m, _ := archivedMirror(t, Options{}, 2*archiveLen+1)
	first := readManifestFile(t, m.Path(), nil)
	sp := first.spans[0]
	off := slices.Clone(sp.gens)
	off[0].t++
	for _, version := range []uint32{0, 3, FormatVersion} {
		mf := &manifest{current: first.current, version: version, gens: first.gens, path: m.Path()}
		mf.setSpans([]*span{newSpan(sp.id, off)})
		if _, err := mf.records(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("format %d: an archived record published at another time than its entry says reads %v, want ErrCorrupt", version, err)
		}
	}
	if _, err := first.records(); err != nil {
		t.Fatal(err)
	}
}
