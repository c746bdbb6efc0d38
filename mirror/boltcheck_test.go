package mirror

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// rootPageOf returns the page size and the offset of the root bucket page
// of the newer meta of a bbolt file image.
func rootPageOf(t testing.TB, b []byte) (pageSize, off int) {
	t.Helper()
	pageSize = int(ne.Uint32(b[boltPageHeader+8:]))
	var root, txid uint64
	for i := range 2 {
		m := b[i*pageSize+boltPageHeader:]
		if tx := ne.Uint64(m[48:]); i == 0 || tx > txid {
			root, txid = ne.Uint64(m[16:]), tx
		}
	}
	return pageSize, int(root) * pageSize
}

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

// TestRootPageCorruptionNeverCrashes damages the bytes of the root bucket
// page, where bbolt keeps the mirror's small buckets inline. Before
// checkBoltRoots, every one of twelve seeds crashed the process within 300
// rounds with "found bad pointer in Go heap", which recover cannot catch.
func TestRootPageCorruptionNeverCrashes(t *testing.T) {
	orig, ids := mirrorImage(t, 20)
	_, root := rootPageOf(t, orig)
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

// FuzzRootPage writes fuzzed bytes over the root bucket page of a healthy
// mirror: opening and reading it may fail, never crash.
func FuzzRootPage(f *testing.F) {
	orig, ids := mirrorImage(f, 5)
	pageSize, root := rootPageOf(f, orig)
	f.Add(uint16(0), orig[root:root+64])
	f.Add(uint16(boltPageHeader), []byte{0xff, 0xff, 0, 0})
	f.Add(uint16(40), []byte{1, 2, 3})
	p := filepath.Join(f.TempDir(), "c.db")
	f.Fuzz(func(t *testing.T, at uint16, data []byte) {
		b := bytes.Clone(orig)
		copy(b[root+int(at)%pageSize:root+pageSize], data)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, err := Open(p, Options{})
		if err != nil {
			return
		}
		defer m.Close()
		exercise(t, m, ids)
	})
}

// stagingImage returns the bytes of a file bbolt wrote, as it writes a
// staging file: one bucket small enough to be stored inline in the root
// page, one with pages of its own.
func stagingImage(t *testing.T) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.db")
	boltUpdate(t, p, pageSize, func(tx *bolt.Tx) error {
		small, err := tx.CreateBucket([]byte("small"))
		if err != nil {
			return err
		}
		big, err := tx.CreateBucket([]byte("big"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := big.Put(beUint64(uint64(i)), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
				return err
			}
		}
		if err := small.Put([]byte("a"), []byte("1")); err != nil {
			return err
		}
		return small.Put([]byte("b"), []byte("2"))
	})
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckBoltRoots checks targeted damage to the structures bbolt would
// put on the heap, each named in the error. Snapshots have no inline
// buckets (boltLoader gives every bucket its own page), but staging files,
// which bbolt writes, do.
func TestCheckBoltRoots(t *testing.T) {
	snap, _ := mirrorImage(t, 0)
	if err := checkBoltRoots(bytes.NewReader(snap), int64(len(snap))); err != nil {
		t.Fatalf("a healthy mirror fails the check: %v", err)
	}
	orig := stagingImage(t)
	if err := checkBoltRoots(bytes.NewReader(orig), int64(len(orig))); err != nil {
		t.Fatalf("a healthy staging file fails the check: %v", err)
	}
	if err := checkBoltRoots(bytes.NewReader(orig), int64(len(orig))); err != nil {
		t.Fatalf("a healthy mirror fails the check: %v", err)
	}
	pageSize, root := rootPageOf(t, orig)
	// An entry of the root page that holds an inline bucket, and one that
	// holds a bucket with its own page.
	// The inline one must have entries of its own.
	inline, paged := -1, -1
	for i := range int(ne.Uint16(orig[root+10:])) {
		e := root + boltPageHeader + i*boltElemSize
		v := e + int(ne.Uint32(orig[e+4:])) + int(ne.Uint32(orig[e+8:]))
		switch {
		case ne.Uint64(orig[v:]) != 0:
			paged = e
		case ne.Uint16(orig[v+boltBucketSize+10:]) > 0:
			inline = e
		}
	}
	if inline < 0 || paged < 0 {
		t.Fatalf("the staging image's root page has no inline bucket (%d) or no paged one (%d)", inline, paged)
	}
	value := func(e int) int { return e + int(ne.Uint32(orig[e+4:])) + int(ne.Uint32(orig[e+8:])) }
	resum := func(b []byte, meta int) {
		ne.PutUint64(b[meta+boltPageHeader+56:], boltMetaSum(b[meta+boltPageHeader:]))
	}
	cases := []struct {
		name   string
		damage func(b []byte)
		want   string
	}{
		{"both meta checksums", func(b []byte) {
			b[boltPageHeader+40] ^= 1
			b[pageSize+boltPageHeader+40] ^= 1
		}, "both meta pages are damaged"},
		{"root page past the end", func(b []byte) {
			for i := range 2 {
				ne.PutUint64(b[i*pageSize+boltPageHeader+16:], 1<<40)
				resum(b, i*pageSize)
			}
		}, "outside the file's pages"},
		{"entry count", func(b []byte) { ne.PutUint16(b[root+10:], 0xffff) }, "do not fit"},
		{"entry offset", func(b []byte) { ne.PutUint32(b[inline+4:], 1<<30) }, "key and value end at byte"},
		{"inline entry offset", func(b []byte) {
			in := value(inline) + boltBucketSize
			ne.PutUint32(b[in+boltPageHeader+4:], 1<<20)
		}, "key and value end at byte"},
		{"paged bucket claims to be inline", func(b []byte) { ne.PutUint64(b[value(paged):], 0) }, "inline bucket without a leaf page"},
		{"bucket page out of range", func(b []byte) { ne.PutUint64(b[value(paged):], 1<<40) }, "outside the file's pages"},
		{"page flags", func(b []byte) { ne.PutUint16(b[root+8:], 0x10) }, "want a branch or leaf page"},
	}
	// bbolt falls back to the other meta page when one is damaged (a torn
	// write): so does the check.
	for _, meta := range []int{0, pageSize} {
		torn := bytes.Clone(orig)
		torn[meta+boltPageHeader+40] ^= 1
		if err := checkBoltRoots(bytes.NewReader(torn), int64(len(torn))); err != nil {
			t.Errorf("a damaged meta page at byte %d fails the check: %v", meta, err)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.damage(b)
			err := checkBoltRoots(bytes.NewReader(b), int64(len(b)))
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("check = %v, want an error containing %q", err, c.want)
			}
			p := filepath.Join(t.TempDir(), "c.db")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if m, err := Open(p, Options{}); !errors.Is(err, ErrCorrupt) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
		})
	}
}
