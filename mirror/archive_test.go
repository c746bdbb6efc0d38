package mirror

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// manifestEntries returns, for every generation the manifest at path
// lists, the kind of the entry that lists it (entryRecord, entryArchived;
// 0 for a format-2 entry), and the manifest's format version.
func manifestEntries(t *testing.T, path string) (kinds map[uint64]byte, version uint32) {
	t.Helper()
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	kinds = map[uint64]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		version = binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get([]byte(metaFormatVersion)))
		return tx.Bucket(bucketGens).ForEach(func(k, v []byte) error {
			n := binary.BigEndian.Uint64(k)
			switch {
			case version < 3:
				kinds[n] = 0
			case v[0] == entryArchived:
				gens, err := parseArchiveEntry(n, v)
				for _, st := range gens {
					kinds[st.n] = entryArchived
				}
				return err
			default:
				kinds[n] = v[0]
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return kinds, version
}

// gensFiles lists the files in the mirror's PATH.gens.
func gensFiles(t *testing.T, m *Mirror) []string {
	t.Helper()
	ents, err := os.ReadDir(gensDir(m.Path()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// neededFiles lists the files of PATH.gens that the generations m keeps
// read: their data files and the archive files of their records.
func neededFiles(t *testing.T, m *Mirror) []string {
	t.Helper()
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	recs, err := s.mf.records()
	if err != nil {
		t.Fatal(err)
	}
	need := map[string]bool{}
	for _, g := range recs {
		for _, f := range g.gensFiles() {
			need[f] = true
		}
	}
	return slices.Sorted(maps.Keys(need))
}

// archivedMirror is a mirror of 5 synced stages and then edits
// single-stage Puts (genStage 100 on), published with opts: past
// 2×archiveLen of them, the oldest records are archived. It returns the
// mirror and the key the stages are signed with.
func archivedMirror(t *testing.T, opts Options, edits int) (*Mirror, ed25519.PrivateKey) {
	t.Helper()
	m := newTemp(t, opts)
	syncGenerated(t, m, 0, 5)
	key := testKey()
	for i := range edits {
		if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	return m, key
}

// TestArchiveFiles publishes more generations than a manifest holds the
// records of: the oldest move into archive files, the manifest holds at
// most 2×archiveLen records, and the history still reads as published,
// in this process and a fresh one (log, --at, diff, verify).
func TestArchiveFiles(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	key := testKey()
	published := map[uint64]Meta{}
	start, err := m.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range start {
		published[g.Generation] = g
	}
	for i := range 2*archiveLen + 40 {
		if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
		meta := m.Meta()
		published[meta.Generation] = meta
	}
	kinds, version := manifestEntries(t, m.Path())
	if version != FormatVersion {
		t.Fatalf("manifest format %d, want %d", version, FormatVersion)
	}
	var held, archived []uint64
	for g, k := range kinds {
		switch k {
		case entryRecord:
			held = append(held, g)
		case entryArchived:
			archived = append(archived, g)
		default:
			t.Fatalf("generation %d: entry kind %d", g, k)
		}
	}
	if len(held) > 2*archiveLen || len(archived) == 0 || len(kinds) != len(published) {
		t.Fatalf("the manifest holds %d records and lists %d archived generations of %d: want at most %d records, some archived",
			len(held), len(archived), len(published), 2*archiveLen)
	}
	if slices.Max(archived) > slices.Min(held) {
		t.Fatalf("generation %d is archived, %d is not: the oldest records move first", slices.Max(archived), slices.Min(held))
	}
	if got, want := gensFiles(t, m), neededFiles(t, m); !slices.Equal(got, want) {
		t.Fatalf("PATH.gens holds %v, want %v", got, want)
	}
	fresh := openMirror(t, m.Path())
	for _, mm := range []*Mirror{m, fresh} {
		gens, err := mm.Generations(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(gens) != len(published) {
			t.Fatalf("%d generations listed, %d published", len(gens), len(published))
		}
		for _, g := range gens {
			want := published[g.Generation]
			if g.Digest != want.Digest || g.Total != want.Total || !g.Published.Equal(want.Published) || g.Changes != want.Changes {
				t.Fatalf("generation %d lists as %+v, was published as %+v", g.Generation, g, want)
			}
		}
	}
	slices.Sort(archived)
	old := archived[0]
	sn, err := fresh.SnapshotAt(t.Context(), fmt.Sprint(old))
	if err != nil {
		t.Fatal(err)
	}
	if sn.Meta().Digest != published[old].Digest {
		t.Fatalf("--at %d reads digest %s, want %s", old, sn.Meta().Digest, published[old].Digest)
	}
	sn.Close()
	d, err := fresh.Diff(t.Context(), fmt.Sprint(old), fmt.Sprint(old+1))
	if err != nil {
		t.Fatal(err)
	}
	if d.Changes() != published[old+1].Changes {
		t.Fatalf("diff %d %d counts %+v, the publish %+v", old, old+1, d.Changes(), published[old+1].Changes)
	}
	if _, err := fresh.Resolve(t.Context(), published[old].Digest[:12]); err != nil {
		t.Fatalf("resolving an archived generation's digest: %v", err)
	}
	mustVerify(t, fresh)
}

// TestArchivesCollected keeps a bounded history while publishing past
// it: after every publish PATH.gens holds exactly the files the kept
// generations read (the sweep after a publish lists nothing, so this is
// its differential test against the full one), archive files included,
// and an archive file goes once the policy dropped all its generations.
func TestArchivesCollected(t *testing.T) {
	const last = 2*archiveLen + 10
	m := newTemp(t, Options{Keep: KeepPolicy{Last: last, Within: -1}, MaxLayers: 4, MaxOverlay: 40, MaxMerged: 120})
	syncGenerated(t, m, 0, 30)
	key := testKey()
	sawArchive, sawDropped, memoed := false, false, 0
	var firstArchive string
	for i := range last + 2*archiveLen {
		var err error
		switch i % 3 {
		case 0, 1:
			_, err = m.Put(t.Context(), genStage(t, 100+i, 100, key))
		default:
			err = m.Remove(t.Context(), genStage(t, 100+i-1, 100, key).ID)
		}
		if err != nil {
			t.Fatal(err)
		}
		got, want := gensFiles(t, m), neededFiles(t, m)
		if !slices.Equal(got, want) {
			t.Fatalf("publish %d: PATH.gens holds %v, want %v", i, got, want)
		}
		for _, f := range got {
			if strings.HasSuffix(f, ".archive") && firstArchive == "" {
				firstArchive, sawArchive = f, true
			}
		}
		if firstArchive != "" && !slices.Contains(got, firstArchive) {
			sawDropped = true
		}
		if memoHolds(t, m) {
			memoed++
		}
	}
	if !sawArchive || !sawDropped {
		t.Fatalf("an archive file was written: %v; the first one collected: %v", sawArchive, sawDropped)
	}
	// Once the oldest kept generation is archived, each publish drops one
	// and finds the files it needs in the archive file the last read (66
	// of these publishes, when written).
	if memoed < archiveLen/2 {
		t.Fatalf("the archive memo held the oldest kept generation's archive file after %d publishes", memoed)
	}
	gens, err := m.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) != last {
		t.Fatalf("%d generations kept, want %d", len(gens), last)
	}
	mustVerify(t, m)
}

// TestArchiveMissing removes an archive file: the current generation
// still reads, a publish still works, and the history answers
// ErrGenerationGone, naming the file, instead of a partial log.
func TestArchiveMissing(t *testing.T) {
	m, key := archivedMirror(t, Options{}, 2*archiveLen+1)
	var archive string
	for _, f := range gensFiles(t, m) {
		if strings.HasSuffix(f, ".archive") {
			archive = f
		}
	}
	if archive == "" {
		t.Fatal("no archive file")
	}
	if err := os.Remove(filepath.Join(gensDir(m.Path()), archive)); err != nil {
		t.Fatal(err)
	}
	fresh := openMirror(t, m.Path())
	if _, err := fresh.GetRaw(t.Context(), genStage(t, 100, 100, key).ID); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Put(t.Context(), genStage(t, 99, 100, key)); err != nil {
		t.Fatalf("publish with an archive file missing: %v", err)
	}
	_, err := fresh.Generations(t.Context())
	if !errors.Is(err, ErrGenerationGone) || !strings.Contains(err.Error(), archive) {
		t.Fatalf("log with an archive file missing: %v, want ErrGenerationGone naming %s", err, archive)
	}
}

// TestArchiveDamaged replaces an archive file by garbage: the history
// answers ErrCorrupt.
func TestArchiveDamaged(t *testing.T) {
	m, _ := archivedMirror(t, Options{}, 2*archiveLen+1)
	for _, f := range gensFiles(t, m) {
		if strings.HasSuffix(f, ".archive") {
			if err := os.WriteFile(filepath.Join(gensDir(m.Path()), f), []byte("not an archive"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	fresh := openMirror(t, m.Path())
	if _, err := fresh.Generations(t.Context()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("log with a damaged archive file: %v, want ErrCorrupt", err)
	}
}

// TestFormat2Manifest reads a mirror whose manifest is format 2 (every
// entry the record's JSON alone, as noether-mirror before archive files
// wrote it): it reads as before, and the first publish upgrades it to
// format 3 with its history intact.
func TestFormat2Manifest(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	key := testKey()
	for i := range 4 {
		if _, err := m.Put(t.Context(), genStage(t, 100+i, 100, key)); err != nil {
			t.Fatal(err)
		}
	}
	before, err := m.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	path := editManifest(t, m, func(tx *bolt.Tx) error {
		gb := tx.Bucket(bucketGens)
		old := map[string][]byte{}
		if err := gb.ForEach(func(k, v []byte) error { old[string(k)] = v[entryHead:]; return nil }); err != nil {
			return err
		}
		for k, v := range old {
			if err := gb.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put([]byte(metaFormatVersion), binary.BigEndian.AppendUint32(nil, 2))
	})
	if _, v := manifestEntries(t, path); v != 2 {
		t.Fatalf("the test made a format-%d manifest", v)
	}
	m = openMirror(t, path)
	if v := m.Meta().FormatVersion; v != 2 {
		t.Fatalf("a format-2 mirror reports format %d", v)
	}
	sameGens := func(when string, got []Meta) {
		t.Helper()
		for i, g := range before {
			if got[i].Generation != g.Generation || got[i].Digest != g.Digest || !got[i].Published.Equal(g.Published) {
				t.Fatalf("%s: generation %d lists as %+v, want %+v", when, g.Generation, got[i], g)
			}
		}
	}
	got, err := m.Generations(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	sameGens("format 2", got)
	if _, err := m.Put(t.Context(), genStage(t, 200, 100, key)); err != nil {
		t.Fatal(err)
	}
	kinds, v := manifestEntries(t, path)
	if v != FormatVersion || len(kinds) != len(before)+1 {
		t.Fatalf("after a publish: format %d with %d entries, want %d with %d", v, len(kinds), FormatVersion, len(before)+1)
	}
	if got, err = m.Generations(t.Context()); err != nil {
		t.Fatal(err)
	}
	sameGens("upgraded", got)
	if v := m.Meta().FormatVersion; v != FormatVersion {
		t.Fatalf("after a publish the mirror reports format %d, want %d", v, FormatVersion)
	}
}

// editManifest closes m and changes its manifest with fn, in a bbolt
// read-write transaction, as damage or an older version would have left
// it; it returns the mirror's path.
func editManifest(t *testing.T, m *Mirror, fn func(tx *bolt.Tx) error) string {
	t.Helper()
	path := m.Path()
	m.Close()
	damageFile(t, path, fn)
	return path
}

// openMirror opens the mirror at path, closed when the test ends.
func openMirror(t *testing.T, path string) *Mirror {
	t.Helper()
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// FuzzManifestEntry decodes format-3 manifest entries, record entries and
// archive entries: never a panic, and an entry that decodes encodes back
// to the same bytes.
func FuzzManifestEntry(f *testing.F) {
	g := &genRecord{Generation: 7, Published: time.Date(2026, 12, 6, 12, 0, 0, 5, time.UTC), raw: []byte(`{"generation":7}`)}
	f.Add(uint64(7), g.entry())
	f.Add(uint64(3), archiveEntry([]stamp{stampOf(g)}))
	f.Add(uint64(3), archiveEntry([]stamp{{3, noTime}, stampOf(g)}))
	f.Add(uint64(8), archiveEntry([]stamp{stampOf(g)}))
	f.Add(uint64(1), []byte{entryRecord, 0, 0})
	f.Fuzz(func(t *testing.T, n uint64, v []byte) {
		if len(v) > 0 && v[0] == entryArchived {
			gens, err := parseArchiveEntry(n, v)
			if err != nil {
				return
			}
			for i, st := range gens {
				if st.n < n || (i > 0 && st.n <= gens[i-1].n) {
					t.Fatalf("archive entry %x of %d decodes to %+v", v, n, gens)
				}
			}
			if got := archiveEntry(gens); string(got) != string(v) {
				t.Fatalf("archive entry %x decodes to %+v, which encodes to %x", v, gens, got)
			}
			return
		}
		g, err := parseEntry(3, n, v)
		if err != nil {
			return
		}
		if got := g.entry(); string(got) != string(v) {
			t.Fatalf("entry %x decodes to %+v, which encodes to %x", v, g, got)
		}
	})
}

// TestStaleManifestArchiveCollected: a reader whose manifest is a publish
// old, after a writer's keep policy dropped every generation of an
// archive file and removed it, still pins a generation both manifests
// keep: it reads the new manifest and retries, instead of reporting the
// generation collected.
func TestStaleManifestArchiveCollected(t *testing.T) {
	w, key := archivedMirror(t, Options{Keep: KeepPolicy{Last: 400, Within: -1}}, 2*archiveLen+8)
	path := w.Path()
	archives, _ := filepath.Glob(filepath.Join(gensDir(path), "*.archive"))
	if len(archives) == 0 {
		t.Fatal("no archive file")
	}
	w.Close()
	r, err := Open(path, Options{ReloadInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w2, err := Open(path, Options{Keep: KeepPolicy{Last: 40, Within: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := w2.Put(t.Context(), genStage(t, 999, 100, key)); err != nil {
		t.Fatal(err)
	}
	for _, a := range archives {
		if _, err := os.Stat(a); err == nil {
			t.Fatalf("archive file %s, whose generations were all dropped, is still there", a)
		}
	}
	kept := r.Meta().Generation - 1 // kept by both manifests
	sn, err := r.SnapshotAt(t.Context(), fmt.Sprint(kept))
	if err != nil {
		t.Fatalf("pinning generation %d, which both manifests keep: %v", kept, err)
	}
	sn.Close()
}

// TestOrphanDataFileRemoved: a data file a killed publish renamed into
// place, whose manifest never followed (the killed writer's pid still in
// the lock file), is removed by the next writer, whatever its name.
func TestOrphanDataFileRemoved(t *testing.T) {
	m := newTemp(t, Options{})
	syncGenerated(t, m, 0, 5)
	orphan := filepath.Join(gensDir(m.Path()), baseName(m.Meta().Generation+1))
	if err := os.WriteFile(orphan, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.lockPath(), []byte("123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(t.Context(), genStage(t, 100, 100, testKey())); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); err == nil {
		t.Fatalf("%s, written for nothing by a killed writer, is still there", orphan)
	}
	if got, want := gensFiles(t, m), neededFiles(t, m); !slices.Equal(got, want) {
		t.Fatalf("PATH.gens holds %v, want %v", got, want)
	}
}

// TestArchiveLostDroppedByGC: generations whose archive file is lost can
// still be dropped by GC, which reads the publish times in the manifest's
// archive entries, after which the history reads again.
func TestArchiveLostDroppedByGC(t *testing.T) {
	w, _ := archivedMirror(t, Options{}, 2*archiveLen+1)
	archives, _ := filepath.Glob(filepath.Join(gensDir(w.Path()), "*.archive"))
	if len(archives) != 1 {
		t.Fatalf("archive files %v, want one", archives)
	}
	if err := os.Remove(archives[0]); err != nil {
		t.Fatal(err)
	}
	// The writer's Mirror archived the records as a reader finds them:
	// it sees the loss as a fresh process does.
	for _, mm := range []*Mirror{w, openMirror(t, w.Path())} {
		if res, err := mm.Verify(t.Context()); err != nil || res.OK() {
			t.Fatalf("verify with the archive file lost: %+v, %v: want a problem", res, err)
		}
	}
	m := w
	if _, err := m.Generations(t.Context()); !errors.Is(err, ErrGenerationGone) {
		t.Fatalf("log with the archive file lost: %v, want ErrGenerationGone", err)
	}
	res, err := m.GC(t.Context(), &KeepPolicy{Last: archiveLen, Within: -1})
	if err != nil {
		t.Fatalf("gc dropping the lost generations: %v", err)
	}
	if len(res.Dropped) == 0 {
		t.Fatal("gc dropped nothing")
	}
	if _, err := m.Generations(t.Context()); err != nil {
		t.Fatalf("log after gc: %v", err)
	}
	mustVerify(t, m)
}

// memoHolds reports whether m's archive memo holds the archive file of
// the oldest generation m keeps.
func memoHolds(t *testing.T, m *Mirror) bool {
	t.Helper()
	cur, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.release()
	oldest := cur.mf.at(0)
	m.archives.mu.Lock()
	defer m.archives.mu.Unlock()
	return oldest.archived && m.archives.f != nil && m.archives.id == oldest.archive
}

// TestArchiveMemo: the memo serves the archive file it remembers only
// while that file is the one at its name.
func TestArchiveMemo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mirror.db")
	if err := os.MkdirAll(gensDir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(gensDir(path), archiveName(7))
	if err := os.WriteFile(name, []byte("archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	var a archiveMemo
	defer a.forget()
	if got := a.seed(path); len(got) != 0 {
		t.Fatalf("an empty memo seeds %v", got)
	}
	recs := map[uint64][]byte{7: []byte("seven"), 8: []byte("eight")}
	a.remember(path, 7, archivesRead{7: recs})
	if got := a.seed(path); string(got[7][8]) != "eight" {
		t.Fatalf("seed = %v, want archive 7", got)
	}
	a.remember(path, 9, archivesRead{7: recs}) // 9 was not read: no change
	if got := a.seed(path); len(got[7]) != 2 {
		t.Fatalf("seed after remembering a file not read = %v, want archive 7", got)
	}
	// Replaced by a file of the same size and modification time: another
	// inode, since the memo holds the first open.
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte("ARCHIVE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(name, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if got := a.seed(path); len(got) != 0 {
		t.Fatalf("seed after the file was replaced = %v, want nothing", got)
	}
	a.remember(path, 7, archivesRead{7: recs})
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if got := a.seed(path); len(got) != 0 {
		t.Fatalf("seed after the file was removed = %v, want nothing", got)
	}
}
