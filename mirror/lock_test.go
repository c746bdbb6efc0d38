package mirror

// Tests that hold on every platform: reads never touch the writer lock,
// and where there is no flock every write fails at once, clearly.

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// snapshotByHand publishes ss at path without a Writer (so without the
// writer lock, which some platforms lack): it stages them as a local
// writer would, in a bbolt file of its own, and compiles that into path,
// as a mirror synced elsewhere and copied here would be.
func snapshotByHand(t *testing.T, path string, ss []*store.Stage) {
	t.Helper()
	staging := filepath.Join(t.TempDir(), "staging.db")
	db, err := bolt.Open(staging, 0o644, &bolt.Options{PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l, err := newStageLog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	var lt *logTx
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLog, bucketQuarantine} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		var err error
		if lt, err = l.begin(tx); err != nil {
			return err
		}
		for _, s := range ss {
			if err := lt.put(recordOf(s, store.Verify(s))); err != nil {
				return err
			}
		}
		return lt.prepare()
	})
	if err != nil {
		t.Fatal(err)
	}
	lt.commit()
	err = db.View(func(tx *bolt.Tx) error {
		tmp, _, err := compile(t.Context(), path, source{tx: tx, log: l}, Meta{Generation: 1, Upstream: "https://registry.example"}, Options{}.normalized(), 0)
		if err != nil {
			return err
		}
		return os.Rename(tmp, path)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadsTakeNoLock: every read of a mirror, from Open to Verify, works
// without the writer lock and leaves no lock or staging file behind, so
// reads work where the lock cannot be taken (Windows).
func TestReadsTakeNoLock(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "mirror.db")
	ss := []*store.Stage{genStage(t, 1, 100, testKey()), genStage(t, 2, 100, testKey())}
	snapshotByHand(t, path, ss)

	m, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if meta := m.Meta(); meta.Total != 2 || meta.Generation != 1 {
		t.Errorf("meta: total %d, generation %d; want 2, 1", meta.Total, meta.Generation)
	}
	raw, err := m.GetRaw(ctx, ss[0].ID)
	if err != nil || string(raw) != string(ss[0].Raw) {
		t.Errorf("GetRaw: %q, %v", raw, err)
	}
	if raws, total, err := m.Page(ctx, store.LifecycleActive, 0, 10); err != nil || total != 2 || len(raws) != 2 {
		t.Errorf("Page: %d of %d, %v; want 2 of 2", len(raws), total, err)
	}
	if found, err := m.FindRawByName(ctx, ss[1].Name); err != nil || len(found) != 1 {
		t.Errorf("FindRawByName: %d, %v", len(found), err)
	}
	if _, err := m.Stats(ctx); err != nil {
		t.Error(err)
	}
	if _, err := m.Reload(); err != nil {
		t.Error(err)
	}
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sn.Close()
	mustVerify(t, m)
	for _, f := range []string{m.lockPath(), m.nextPath()} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a read left %s: %v", f, err)
		}
	}
}

// TestWritesWithoutFlock: where there is no flock (Windows), creating a
// mirror, a sync's writer, a local writer and a local edit each fail at
// once with ErrWriteUnsupported, saying what works instead, and create no
// file. It runs only on such a platform; `make test` cross-compiles it
// for Windows, and TestLockGrace and TestSecondWriterIsBusy cover the
// lock where there is one.
func TestWritesWithoutFlock(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "mirror.db")
	if checkWritable(path+".lock") == nil {
		t.Skipf("%s has flock: TestLockGrace covers the writer lock here", runtime.GOOS)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrWriteUnsupported) {
			t.Errorf("%s: %v, want ErrWriteUnsupported", what, err)
			return
		}
		for _, want := range []string{runtime.GOOS, path + ".lock", "can be read", "Linux or macOS", "mirror serve"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q does not say %q", what, err, want)
			}
		}
	}
	_, err := Create(filepath.Join(dir, "mirror.db"), Options{})
	check("Create", err)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused Create left %v", ents)
	}

	snapshotByHand(t, path, []*store.Stage{genStage(t, 1, 100, testKey())})
	m, err := Create(path, Options{}) // an existing mirror: Create only opens it
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, err = m.BeginSync(ctx)
	check("BeginSync", err)
	_, err = m.BeginLocal(ctx)
	check("BeginLocal", err)
	_, err = m.Put(ctx, genStage(t, 2, 100, testKey()))
	check("Put", err)
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("refused writes left files: %v", ents)
	}
	mustVerify(t, m)
}
