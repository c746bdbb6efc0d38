package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

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

// publishedCopy syncs stages into a new mirror (through bbolt's
// transactions when tx is set) and returns a copy of its snapshot file
// and the snapshot's meta.
func publishedCopy(t *testing.T, tx bool, stages []*store.Stage) (string, []byte, Meta) {
	t.Helper()
	m := newTemp(t, Options{BoltTransactions: tx, MaxOverlay: 1})
	syncAll(t, m, stages, PublishInfo{Upstream: "u"})
	base, meta := currentBase(t, m)
	p := filepath.Join(t.TempDir(), "copy.db")
	b := copyFile(t, base, p)
	return p, b, meta
}

// TestCheckCompiled checks that the full check compile runs before a
// snapshot can be published passes a healthy file from either writer and
// refuses damage it would otherwise miss: a flipped byte in a record,
// which only recomputing the digest from the trees finds, and a leaf page
// header claiming a page it does not own, which only bbolt's consistency
// walk finds.
func TestCheckCompiled(t *testing.T) {
	stages := stdlibStages(t)
	forBothWriters(t, func(t *testing.T, tx bool) {
		p, orig, meta := publishedCopy(t, tx, stages)
		if err := checkCompiled(p, &meta, Options{}); err != nil {
			t.Fatalf("a healthy snapshot fails the check: %v", err)
		}
		// A byte inside a record's JSON (a leaf value of "stages").
		b := bytes.Clone(orig)
		at := bytes.Index(b, stages[7].Raw)
		if at < 0 {
			t.Fatal("the stage's JSON is not in the file")
		}
		b[at+len(stages[7].Raw)/2] ^= 0x01
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := checkCompiled(p, &meta, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "digest to") {
			t.Fatalf("a flipped byte in a record: %v, want a digest mismatch", err)
		}
		// The meta's own counts must match what the compiler counted.
		want := meta
		want.Total++
		if err := os.WriteFile(p, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := checkCompiled(p, &want, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a total the compiler did not write: %v", err)
		}
	})
	t.Run("page header", func(t *testing.T) {
		p, b, meta := publishedCopy(t, false, stages)
		// bbolt's page header (boltfile/layout.go): flags u16 at byte 8,
		// overflow u32 at byte 12. The page writer puts the first leaf it
		// fills at page 2 and the next at page 3.
		page := b[2*pageSize:]
		ne := binary.NativeEndian
		if ne.Uint16(page[8:]) != 0x02 || ne.Uint32(page[12:]) != 0 {
			t.Fatalf("page 2 is not a one-page leaf")
		}
		ne.PutUint32(page[12:], 1)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := checkCompiled(p, &meta, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "multiple references") {
			t.Fatalf("a leaf page claiming its neighbour: %v, want bbolt's consistency check to refuse it", err)
		}
	})
}

// TestBoltTransactionsEquivalent checks that a snapshot written through
// bbolt's transactions holds what the page writer's does: the same
// digest, meta and reads.
func TestBoltTransactionsEquivalent(t *testing.T) {
	stages := stdlibStages(t)
	var metas []Meta
	forBothWriters(t, func(t *testing.T, tx bool) {
		m := newTemp(t, Options{BoltTransactions: tx})
		syncAll(t, m, stages, PublishInfo{Upstream: "u"})
		mustVerify(t, m)
		for _, s := range stages[:10] {
			if raw, err := m.GetRaw(t.Context(), s.ID); err != nil || !bytes.Equal(raw, s.Raw) {
				t.Fatalf("GetRaw %s: %v", s.ID, err)
			}
		}
		// The page writer's file is bbolt's transaction 1; bbolt's own
		// writer commits the buckets, then the entries.
		s, err := m.acquire()
		if err != nil {
			t.Fatal(err)
		}
		defer s.release()
		var txid int
		_ = s.view(func(tx *bolt.Tx) error { txid = tx.ID(); return nil })
		if (txid > 1) != tx {
			t.Fatalf("the snapshot is bbolt transaction %d", txid)
		}
		metas = append(metas, m.Meta())
	})
	if len(metas) != 2 {
		t.Fatal("a writer failed")
	}
	a, b := metas[0], metas[1]
	if a.Digest != b.Digest || a.Total != b.Total || a.Quarantined != b.Quarantined || a.Generation != b.Generation || a.FormatVersion != b.FormatVersion {
		t.Fatalf("page writer %+v, bbolt transactions %+v", a, b)
	}
}
