package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

// genTemplate is a small mirror whose current generation is a base and
// two deltas (stages added, changed, removed, quarantined), for fuzzing
// the manifest and the delta files.
type genTemplate struct {
	dir      string // holds mirror.db and mirror.db.gens
	manifest []byte
	delta    string // the newest delta's file name
	deltaRaw []byte
	ids      []store.StageID
}

func newGenTemplate(f *testing.F) *genTemplate {
	f.Helper()
	dir := f.TempDir()
	m, err := Create(filepath.Join(dir, "mirror.db"), Options{MaxOverlay: 64})
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
	g := &genTemplate{dir: dir}
	if g.manifest, err = os.ReadFile(m.Path()); err != nil {
		f.Fatal(err)
	}
	s, err := m.acquire()
	if err != nil {
		f.Fatal(err)
	}
	g.delta = s.gen.Deltas[len(s.gen.Deltas)-1]
	s.release()
	if g.deltaRaw, err = os.ReadFile(filepath.Join(gensDir(m.Path()), g.delta)); err != nil {
		f.Fatal(err)
	}
	for _, s := range ss {
		g.ids = append(g.ids, s.ID)
	}
	return g
}

// materialize lays the template out in a fresh directory with file
// (0: the manifest, else the newest delta) replaced by data.
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
	manifest, delta := g.manifest, g.deltaRaw
	if which == 0 {
		manifest = data
	} else {
		delta = data
	}
	if err := os.WriteFile(path, manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(gensDir(path), g.delta)
	if err := os.Remove(d); err != nil { // a link to the template's
		t.Fatal(err)
	}
	if err := os.WriteFile(d, delta, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// FuzzGenerationFiles damages a generation's manifest or newest delta:
// opening the mirror, every read and Verify give errors (ErrCorrupt and
// the like) or problems, never a crash.
func FuzzGenerationFiles(f *testing.F) {
	g := newGenTemplate(f)
	f.Add(0, g.manifest)
	f.Add(1, g.deltaRaw)
	f.Add(0, g.manifest[:len(g.manifest)/2])
	f.Add(1, []byte("not a delta"))
	f.Fuzz(func(t *testing.T, which int, data []byte) {
		path := g.materialize(t, which&1, data)
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
