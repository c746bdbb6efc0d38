package mirror

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// format1Mirror lays out, in a fresh directory, the format-1 mirror in
// testdata/format1: written by noether-mirror before generations (commit
// c63318c), a sync of the 85 stdlib stages and one tampered stage, which
// it quarantined, with its PATH.state sidecar.
func format1Mirror(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(filepath.Join("testdata", "format1", "mirror.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mirror.db")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join("testdata", "format1", "mirror.db.state"), sidecarPath(path))
	return path
}

// TestUpgradeFromFormat1: a format-1 mirror reads as before, the first
// writer upgrades it in place (its file becomes the first base, linked,
// not copied), every read gives the same bytes after, the manifest is
// one an older noether-mirror refuses with its format-version error, and
// history starts from there.
func TestUpgradeFromFormat1(t *testing.T) {
	path := format1Mirror(t)
	ctx := t.Context()
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	before := m.Meta()
	if before.FormatVersion != 1 || before.Generation != 1 || before.Total != 85 || before.Quarantined != 1 || before.LastSync.IsZero() {
		t.Fatalf("the format-1 mirror reads as %+v", before)
	}
	if gens, err := m.Generations(ctx); err != nil || len(gens) != 1 {
		t.Fatalf("a format-1 mirror has one generation: %v %v", gens, err)
	}
	raws := scanAll(t, m, store.LifecycleUnknown)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	w, err := m.BeginLocal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(false); err != nil {
		t.Fatal(err)
	}

	after := m.Meta()
	if after.FormatVersion != FormatVersion || after.Generation != 1 || after.Total != 85 || after.Quarantined != 1 ||
		!after.LastSync.Equal(before.LastSync) || after.Upstream != before.Upstream || after.Layers != 0 {
		t.Fatalf("after the upgrade: %+v, before %+v", after, before)
	}
	if got := scanAll(t, m, store.LifecycleUnknown); !slices.EqualFunc(got, raws, bytes.Equal) {
		t.Fatal("the upgraded mirror reads different stages")
	}
	base := filepath.Join(gensDir(path), baseName(1))
	if bfi, err := os.Stat(base); err != nil || !os.SameFile(fi, bfi) {
		t.Errorf("the base %s is not the format-1 file itself (%v)", base, err)
	}
	if res := mustVerify(t, m); !res.OK() {
		t.Errorf("verify after the upgrade: %+v", res.Problems)
	}
	s, err := m.acquire()
	if err != nil {
		t.Fatal(err)
	}
	st, err := contentHash(ctx, s)
	s.release()
	if err != nil || digestHex(&st) != after.Digest {
		t.Errorf("digest %s, the content hashes to %s (%v)", after.Digest, digestHex(&st), err)
	}

	// What a format-1 reader checks first: the marker, then the version,
	// which it refuses as newer than its own.
	db, err := bolt.Open(path, 0o444, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if string(b.Get([]byte(metaMagic))) != magic || binary.BigEndian.Uint32(b.Get([]byte(metaFormatVersion))) != FormatVersion {
			t.Errorf("the manifest does not carry the marker and format version %d where format-1 readers look", FormatVersion)
		}
		return nil
	})
	db.Close()

	// History starts at the upgraded generation.
	added := genStage(t, 1, 10, testKey())
	if _, err := m.Put(ctx, added); err != nil {
		t.Fatal(err)
	}
	if g := m.Meta(); g.Generation != 2 || g.Layers != 1 {
		t.Errorf("after a Put: generation %d with %d layers", g.Generation, g.Layers)
	}
	d, err := m.Diff(ctx, "1", "2")
	if err != nil || len(d.Added) != 1 || d.Added[0].ID != added.ID || d.Changes() != (Changes{Added: 1}) {
		t.Errorf("diff 1 2: %+v %v", d, err)
	}
}

// TestUpgradeReplacesLeftovers: an upgrade killed after it linked the
// base but before the manifest replaced PATH left a base file behind;
// the next writer upgrades again over it.
func TestUpgradeReplacesLeftovers(t *testing.T) {
	path := format1Mirror(t)
	if err := os.MkdirAll(gensDir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gensDir(path), baseName(1)), []byte("half an upgrade"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Meta().FormatVersion != 1 {
		t.Fatal("the leftover changed how the format-1 mirror reads")
	}
	w, err := m.BeginLocal(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Abort(false)
	if meta := m.Meta(); meta.FormatVersion != FormatVersion || meta.Total != 85 {
		t.Fatalf("after the upgrade: %+v", meta)
	}
	if res := mustVerify(t, m); !res.OK() {
		t.Errorf("verify: %+v", res.Problems)
	}
}
