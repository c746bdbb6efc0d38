package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

// genTemplate is a small mirror whose current generation is a base, a
// merged delta and a delta (stages added, changed, removed,
// quarantined), for fuzzing the manifest and the delta files.
type genTemplate struct {
	dir      string // holds mirror.db and mirror.db.gens
	manifest []byte
	deltas   []string // the delta files' names: the merged one, the newest
	deltaRaw [][]byte
	ids      []store.StageID
}

func newGenTemplate(f *testing.F) *genTemplate {
	f.Helper()
	dir := f.TempDir()
	m, err := Create(filepath.Join(dir, "mirror.db"), Options{MaxOverlay: 64, MaxLayers: 2})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	ss := stdlibStages(f)[:20]
	syncAll(f, m, ss, PublishInfo{Upstream: "u"})
	ctx := f.Context()
	if _, err := m.Put(ctx, genStage(f, 1, 100, testKey())); err != nil {
		f.Fatal(err)
	}
	if err := m.Remove(ctx, ss[3].ID); err != nil {
		f.Fatal(err)
	}
	// The third delta merges the chain (MaxLayers), the fourth follows it.
	if _, err := m.Put(ctx, genStage(f, 2, 100, testKey())); err != nil {
		f.Fatal(err)
	}
	g := &genTemplate{dir: dir}
	if g.manifest, err = os.ReadFile(m.Path()); err != nil {
		f.Fatal(err)
	}
	s, err := m.acquire()
	if err != nil {
		f.Fatal(err)
	}
	g.deltas = slices.Clone(s.gen.Deltas)
	merged := s.ov.deep != nil
	s.release()
	if len(g.deltas) != 2 || !merged {
		f.Fatalf("the template reads deltas %v (the first merged: %v), want a merged one and another", g.deltas, merged)
	}
	for _, d := range g.deltas {
		raw, err := os.ReadFile(filepath.Join(gensDir(m.Path()), d))
		if err != nil {
			f.Fatal(err)
		}
		g.deltaRaw = append(g.deltaRaw, raw)
	}
	for _, s := range ss {
		g.ids = append(g.ids, s.ID)
	}
	return g
}

// materialize lays the template out in a fresh directory with file
// (0: the manifest, 1: the newest delta, 2: the merged one) replaced by
// data.
func (g *genTemplate) materialize(t *testing.T, which int, data []byte) string {
	dst := t.TempDir()
	path := filepath.Join(dst, "mirror.db")
	if err := os.Mkdir(gensDir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(gensDir(filepath.Join(g.dir, "mirror.db")))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.Link(filepath.Join(g.dir, "mirror.db.gens", e.Name()), filepath.Join(gensDir(path), e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	manifest := g.manifest
	if which == 0 {
		manifest = data
	}
	if err := os.WriteFile(path, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if which == 0 {
		return path
	}
	i := 2 - which // deltas[0] is the merged one
	d := filepath.Join(gensDir(path), g.deltas[i])
	if err := os.Remove(d); err != nil { // a link to the template's
		t.Fatal(err)
	}
	if err := os.WriteFile(d, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// FuzzGenerationFiles damages a generation's manifest, newest delta or
// merged delta: opening the mirror, every read (those that read a merged
// delta on disk first, then those that fold it) and Verify give errors
// (ErrCorrupt and the like) or problems, never a crash.
func FuzzGenerationFiles(f *testing.F) {
	g := newGenTemplate(f)
	f.Add(0, g.manifest)
	f.Add(1, g.deltaRaw[1])
	f.Add(2, g.deltaRaw[0])
	f.Add(0, g.manifest[:len(g.manifest)/2])
	f.Add(1, []byte("not a delta"))
	f.Add(2, g.deltaRaw[0][:len(g.deltaRaw[0])/2])
	f.Fuzz(func(t *testing.T, which int, data []byte) {
		path := g.materialize(t, int(uint(which)%3), data)
		m, err := Open(path, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFormatVersion) && !errors.Is(err, ErrNoMirror) {
				t.Fatalf("open: %v is none of the mirror's errors", err)
			}
			return
		}
		defer m.Close()
		ctx := t.Context()
		for _, id := range g.ids {
			_, _ = m.GetRaw(ctx, id)
		}
		_, _ = m.FindRawByName(ctx, "list_length")
		for _, kind := range []store.LifecycleKind{store.LifecycleUnknown, store.LifecycleActive} {
			_, _, _ = m.Page(ctx, kind, 2, 5)
			for _, err := range m.Records(ctx, kind) {
				if err != nil {
					break
				}
			}
		}
		_, _ = m.FindRawByName(ctx, "list_length")
		_, _ = m.Generations(ctx)
		_, _ = m.Verify(ctx)
	})
}
