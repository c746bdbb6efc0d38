package boltfile

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// snapPageSize is the mirror's page size, which its files use.
const snapPageSize = 64 << 10

// rootPageOf returns the page size and the offset of the root bucket page
// of the newer meta of a bbolt file image.
func rootPageOf(t testing.TB, b []byte) (pageSize, off int) {
	t.Helper()
	off, pageSize, err := RootPage(b)
	if err != nil {
		t.Fatal(err)
	}
	return pageSize, off
}

// loadedImage returns the bytes of a file the PageLoader wrote, shaped
// like a snapshot: every bucket with a page of its own.
func loadedImage(tb testing.TB) []byte {
	tb.Helper()
	r := rand.New(rand.NewPCG(5, 5))
	p := loadFile(tb, snapPageSize, map[string][]loadKV{
		"stages":  genKVs(r, 50, 64, 6000),
		"by_name": genKVs(r, 50, 40, 0),
		"empty":   nil,
		"meta":    genKVs(r, 10, 20, 50),
	})
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// exercise opens the file at p as the mirror does, checks its root pages
// and, if they pass, reads every entry of every bucket, collecting garbage
// in between so that a bad heap pointer is found while it is live. It may
// fail, never crash.
func exercise(p string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err := bolt.Open(p, 0o444, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := CheckFile(p, snapPageSize); err != nil {
		return err
	}
	for range 2 {
		err = db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
				c := b.Cursor()
				for k, v := c.First(); k != nil; k, v = c.Next() {
					_ = bytes.Clone(v)
				}
				runtime.GC()
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// FuzzRootPage writes fuzzed bytes over the root bucket page of a healthy
// file, one bbolt wrote (inline buckets, the case that reaches the Go
// heap) or one the PageLoader wrote: opening and reading it may fail,
// never crash.
func FuzzRootPage(f *testing.F) {
	images := [][]byte{stagingImage(f), loadedImage(f)}
	roots := make([]int, len(images))
	for i, b := range images {
		_, roots[i] = rootPageOf(f, b)
	}
	f.Add(uint8(0), uint16(0), images[0][roots[0]:roots[0]+64])
	f.Add(uint8(1), uint16(0), images[1][roots[1]:roots[1]+64])
	f.Add(uint8(0), uint16(pageHeaderSize), []byte{0xff, 0xff, 0, 0})
	f.Add(uint8(1), uint16(40), []byte{1, 2, 3})
	p := filepath.Join(f.TempDir(), "c.db")
	f.Fuzz(func(t *testing.T, which uint8, at uint16, data []byte) {
		i := int(which) % len(images)
		b, root := bytes.Clone(images[i]), roots[i]
		copy(b[root+int(at)%snapPageSize:root+snapPageSize], data)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_ = exercise(p)
	})
}

// TestRootPageCorruptionNeverCrashes damages the bytes of the root bucket
// page of a file bbolt wrote, where it keeps small buckets inline. Before
// the root-page check, every one of twelve seeds crashed a mirror within
// 300 rounds with "found bad pointer in Go heap", which recover cannot
// catch. (The mirror package runs the same test through mirror.Open.)
func TestRootPageCorruptionNeverCrashes(t *testing.T) {
	orig := stagingImage(t)
	_, root := rootPageOf(t, orig)
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	r := rand.New(rand.NewPCG(7, 9))
	p := filepath.Join(t.TempDir(), "c.db")
	opened, refused := 0, 0
	for range rounds {
		b := bytes.Clone(orig)
		for range 1 + r.IntN(3) {
			b[root+r.IntN(1024)] ^= byte(1 + r.IntN(255))
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if exercise(p) != nil {
			refused++
		} else {
			opened++
		}
	}
	if opened == 0 || refused == 0 {
		t.Fatalf("%d damaged files read, %d refused: want some of each", opened, refused)
	}
}

// stagingImage returns the bytes of a file bbolt wrote, as it writes a
// staging file: one bucket small enough to be stored inline in the root
// page, one with pages of its own.
func stagingImage(t testing.TB) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.db")
	boltUpdate(t, p, snapPageSize, func(tx *bolt.Tx) error {
		small, err := tx.CreateBucket([]byte("small"))
		if err != nil {
			return err
		}
		big, err := tx.CreateBucket([]byte("big"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := big.Put(be64(uint64(i)), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
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

// TestCheckRoots checks targeted damage to the structures bbolt would put
// on the heap, each named in the error. Files the PageLoader writes have
// no inline buckets (every bucket has its own page), but files bbolt
// writes, such as the mirror's staging files, do.
func TestCheckRoots(t *testing.T) {
	snap := loadedImage(t)
	if err := checkImage(snap); err != nil {
		t.Fatalf("a healthy loaded file fails the check: %v", err)
	}
	orig := stagingImage(t)
	if err := checkImage(orig); err != nil {
		t.Fatalf("a healthy staging file fails the check: %v", err)
	}
	pageSize, root := rootPageOf(t, orig)
	// An entry of the root page that holds an inline bucket, and one that
	// holds a bucket with its own page.
	// The inline one must have entries of its own.
	inline, paged := -1, -1
	for i := range int(pageCount(orig[root:])) {
		e := root + pageHeaderSize + i*elemSize
		v := e + int(ne.Uint32(orig[e+leafPosOff:])) + int(ne.Uint32(orig[e+leafKsizeOff:]))
		switch {
		case ne.Uint64(orig[v:]) != 0:
			paged = e
		case ne.Uint16(orig[v+bucketHeaderSize+pageCountOff:]) > 0:
			inline = e
		}
	}
	if inline < 0 || paged < 0 {
		t.Fatalf("the staging image's root page has no inline bucket (%d) or no paged one (%d)", inline, paged)
	}
	value := func(e int) int {
		return e + int(ne.Uint32(orig[e+leafPosOff:])) + int(ne.Uint32(orig[e+leafKsizeOff:]))
	}
	resum := func(b []byte, meta int) {
		ne.PutUint64(b[meta+pageHeaderSize+metaChecksumOff:], metaSum(b[meta+pageHeaderSize:]))
	}
	cases := []struct {
		name   string
		damage func(b []byte)
		want   string
	}{
		{"both meta checksums", func(b []byte) {
			b[pageHeaderSize+metaPgidOff] ^= 1
			b[pageSize+pageHeaderSize+metaPgidOff] ^= 1
		}, "both meta pages are damaged"},
		{"root page past the end", func(b []byte) {
			for i := range 2 {
				ne.PutUint64(b[i*pageSize+pageHeaderSize+metaRootOff:], 1<<40)
				resum(b, i*pageSize)
			}
		}, "outside the file's pages"},
		{"entry count", func(b []byte) { ne.PutUint16(b[root+pageCountOff:], 0xffff) }, "do not fit"},
		{"entry offset", func(b []byte) { ne.PutUint32(b[inline+leafPosOff:], 1<<30) }, "key and value end at byte"},
		{"inline entry offset", func(b []byte) {
			in := value(inline) + bucketHeaderSize
			ne.PutUint32(b[in+pageHeaderSize+leafPosOff:], 1<<20)
		}, "key and value end at byte"},
		{"paged bucket claims to be inline", func(b []byte) { ne.PutUint64(b[value(paged):], 0) }, "inline bucket without a leaf page"},
		{"bucket page out of range", func(b []byte) { ne.PutUint64(b[value(paged):], 1<<40) }, "outside the file's pages"},
		{"page flags", func(b []byte) { ne.PutUint16(b[root+pageFlagsOff:], 0x10) }, "want a branch or leaf page"},
	}
	// bbolt falls back to the other meta page when one is damaged (a torn
	// write): so does the check.
	for _, meta := range []int{0, pageSize} {
		torn := bytes.Clone(orig)
		torn[meta+pageHeaderSize+metaPgidOff] ^= 1
		if err := checkImage(torn); err != nil {
			t.Errorf("a damaged meta page at byte %d fails the check: %v", meta, err)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(orig)
			c.damage(b)
			err := checkImage(b)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
				t.Fatalf("check = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// checkImage runs CheckRoots on a file image.
func checkImage(b []byte) error {
	return CheckRoots(bytes.NewReader(b), int64(len(b)), snapPageSize)
}
