package boltfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// loadKV is one entry for a loader test.
type loadKV struct{ k, v []byte }

// loaderKind is one of the two ways to write a file.
type loaderKind struct {
	name string
	new  func(path string, pageSize int, buckets [][]byte) (Loader, error)
}

// loaderKinds returns the page writer and the bbolt-transaction writer.
func loaderKinds() []loaderKind {
	return []loaderKind{
		{"pages", func(p string, ps int, b [][]byte) (Loader, error) { return NewPageLoader(p, ps, b) }},
		{"transactions", func(p string, ps int, b [][]byte) (Loader, error) { return NewTxLoader(p, ps, b) }},
	}
}

// loadFile writes buckets (each sorted by key) with a PageLoader at
// pageSize, putting entries round-robin across the buckets as compile
// interleaves them, and returns the file's path.
func loadFile(t testing.TB, pageSize int, buckets map[string][]loadKV) string {
	t.Helper()
	return loadFileIn(t, t.TempDir(), loaderKinds()[0], pageSize, buckets)
}

// loadFileIn is loadFile into dir, with the loader kind.
func loadFileIn(t testing.TB, dir string, kind loaderKind, pageSize int, buckets map[string][]loadKV) string {
	t.Helper()
	p := filepath.Join(dir, "l.db")
	var names [][]byte
	for name := range buckets {
		names = append(names, []byte(name))
	}
	slices.SortFunc(names, bytes.Compare)
	l, err := kind.new(p, pageSize, names)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; ; i++ {
		more := false
		for _, name := range names {
			if es := buckets[string(name)]; i < len(es) {
				more = true
				if err := l.Put(name, es[i].k, es[i].v); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !more {
			break
		}
	}
	if err := l.Finish(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkLoaded opens p with bbolt, runs bbolt's consistency check and
// compares every bucket with want, by cursor and by Get.
func checkLoaded(t testing.TB, p string, want map[string][]loadKV, readOnly bool) {
	t.Helper()
	if err := CheckFile(p, 4096); err != nil {
		t.Fatalf("CheckFile: %v", err)
	}
	db, err := bolt.Open(p, 0o644, &bolt.Options{ReadOnly: readOnly, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if err := CheckTrees(tx); err != nil {
			t.Error(err)
		}
		var got []string
		if err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			got = append(got, string(name))
			es := want[string(name)]
			i := 0
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if i >= len(es) {
					return fmt.Errorf("bucket %q: extra key %q", name, k)
				}
				if !bytes.Equal(k, es[i].k) || !bytes.Equal(v, es[i].v) {
					return fmt.Errorf("bucket %q entry %d: got %q (%d bytes), want %q (%d bytes)", name, i, k, len(v), es[i].k, len(es[i].v))
				}
				i++
			}
			if i != len(es) {
				return fmt.Errorf("bucket %q: %d entries, want %d", name, i, len(es))
			}
			for _, e := range es {
				if v := b.Get(e.k); v == nil || !bytes.Equal(v, e.v) {
					return fmt.Errorf("bucket %q: Get(%q) = %d bytes, want %d", name, e.k, len(v), len(e.v))
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if len(got) != len(want) {
			return fmt.Errorf("buckets %q, want %d", got, len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// boltUpdate runs fn in one bbolt transaction on the file at p, created
// with pageSize if it does not exist (0: bbolt's default).
func boltUpdate(t testing.TB, p string, pageSize int, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(p, 0o644, &bolt.Options{PageSize: pageSize, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

func sortedKVs(es []loadKV) []loadKV {
	slices.SortFunc(es, func(a, b loadKV) int { return bytes.Compare(a.k, b.k) })
	return slices.CompactFunc(es, func(a, b loadKV) bool { return bytes.Equal(a.k, b.k) })
}

func genKVs(r *rand.Rand, n, maxKey, maxVal int) []loadKV {
	es := make([]loadKV, n)
	for i := range es {
		k := make([]byte, 1+r.IntN(maxKey))
		for j := range k {
			k[j] = byte(r.Uint32())
		}
		v := make([]byte, r.IntN(maxVal+1))
		for j := range v {
			v[j] = byte(r.Uint32())
		}
		es[i] = loadKV{k, v}
	}
	return sortedKVs(es)
}

// TestBoltLoader writes files of every shape the page loader has a branch
// for, with both loaders, and checks that bbolt reads back exactly what
// was put, passes its own consistency check (so a bbolt release that
// reads the page layout differently fails here), and can go on writing
// the file.
func TestBoltLoader(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	huge := bytes.Repeat([]byte("h"), writeBufBytes+3*4096+17) // bigger than a write buffer
	cases := []struct {
		name     string
		pageSize int
		buckets  map[string][]loadKV
	}{
		{"empty buckets", 4096, map[string][]loadKV{"a": nil, "b": nil}},
		{"one entry", 4096, map[string][]loadKV{"a": {{[]byte("k"), []byte("v")}}}},
		{"empty values", 4096, map[string][]loadKV{"a": {{[]byte("k1"), []byte{}}, {[]byte("k2"), nil}}}},
		{"three levels", 4096, map[string][]loadKV{"small": genKVs(r, 20000, 24, 40), "empty": nil}},
		{"overflow pages", 4096, map[string][]loadKV{"big": genKVs(r, 300, 64, 20000), "tiny": genKVs(r, 3, 4, 4)}},
		{"outsized page", 65536, map[string][]loadKV{"x": {{[]byte("a"), []byte("1")}, {[]byte("b"), huge}, {[]byte("c"), []byte("3")}}}},
		{"largest keys", 4096, map[string][]loadKV{"k": genKVs(r, 40, MaxKeySize, 10)}},
		{"snapshot shape", 64 << 10, map[string][]loadKV{
			"stages":  genKVs(r, 3000, 64, 6000),
			"by_name": genKVs(r, 3000, 100, 0),
			"meta":    genKVs(r, 10, 20, 50),
		}},
	}
	for _, kind := range loaderKinds() {
		for _, c := range cases {
			t.Run(kind.name+"/"+c.name, func(t *testing.T) {
				testLoad(t, kind, c.pageSize, c.buckets)
			})
		}
	}
}

// testLoad loads buckets with kind, checks what bbolt reads back, adds a
// bucket through bbolt and checks again.
func testLoad(t *testing.T, kind loaderKind, pageSize int, buckets map[string][]loadKV) {
	p := loadFileIn(t, t.TempDir(), kind, pageSize, buckets)
	checkLoaded(t, p, buckets, true)
	// bbolt can write to it: its meta, freelist and trees are what a
	// read-write open needs too.
	boltUpdate(t, p, 0, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("added"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	})
	want := map[string][]loadKV{"added": {{[]byte("k"), []byte("v")}}}
	for k, v := range buckets {
		want[k] = v
	}
	checkLoaded(t, p, want, false)
}

// TestBoltLoaderRefuses checks the caller errors both loaders report
// instead of writing a file bbolt would misread.
func TestBoltLoaderRefuses(t *testing.T) {
	cases := []struct {
		name string
		puts []loadKV // into bucket "a"; the last must fail
		want string
	}{
		{"out of order", []loadKV{{[]byte("b"), nil}, {[]byte("a"), nil}}, "out of order"},
		{"duplicate", []loadKV{{[]byte("a"), nil}, {[]byte("a"), nil}}, "out of order"},
		{"empty key", []loadKV{{[]byte{}, nil}}, "empty key"},
		{"key too long", []loadKV{{bytes.Repeat([]byte("k"), MaxKeySize+1), nil}}, "bbolt's limit"},
	}
	for _, kind := range loaderKinds() {
		for _, c := range cases {
			t.Run(kind.name+"/"+c.name, func(t *testing.T) {
				l, err := kind.new(filepath.Join(t.TempDir(), "l.db"), 4096, [][]byte{[]byte("a")})
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				for i, kv := range c.puts {
					err := l.Put([]byte("a"), kv.k, kv.v)
					if i < len(c.puts)-1 && err != nil {
						t.Fatal(err)
					}
					if i == len(c.puts)-1 && (err == nil || !strings.Contains(err.Error(), c.want)) {
						t.Fatalf("put %d: %v, want an error containing %q", i, err, c.want)
					}
				}
			})
		}
		l, err := kind.new(filepath.Join(t.TempDir(), "l.db"), 4096, [][]byte{[]byte("a")})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Put([]byte("b"), []byte("k"), nil); err == nil || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("%s: put into an undeclared bucket: %v", kind.name, err)
		}
		l.Close()
		if _, err := kind.new(filepath.Join(t.TempDir(), "d.db"), 4096, [][]byte{[]byte("a"), []byte("a")}); err == nil {
			t.Fatalf("%s: a bucket declared twice was accepted", kind.name)
		}
	}
}

// TestLoaderCopies checks that both loaders copy what Put is given: the
// caller reuses one buffer for every key and value.
func TestLoaderCopies(t *testing.T) {
	want := genKVs(rand.New(rand.NewPCG(4, 4)), 500, 16, 3000)
	for _, kind := range loaderKinds() {
		t.Run(kind.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "l.db")
			l, err := kind.new(p, 4096, [][]byte{[]byte("a")})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var k, v []byte
			for _, e := range want {
				k, v = append(k[:0], e.k...), append(v[:0], e.v...)
				if err := l.Put([]byte("a"), k, v); err != nil {
					t.Fatal(err)
				}
				clear(k)
				clear(v)
			}
			if err := l.Finish(); err != nil {
				t.Fatal(err)
			}
			checkLoaded(t, p, map[string][]loadKV{"a": want}, true)
		})
	}
}

// TestPageWriterDirectFallback checks that a write the file system
// refuses to do directly (here a misaligned one) is done the ordinary way.
func TestPageWriterDirectFallback(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.db")
	w, err := newPageWriter(p, 4096, PageLoaderOptions{Direct: true, BufferBytes: writeBufBytes})
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	if !w.direct {
		t.Skip("this file system does not take O_DIRECT")
	}
	w.stop() // the test calls writeAt itself, as the writer goroutine would
	odd := []byte("not aligned")
	if err := w.writeAt(odd, 3); err != nil {
		t.Fatal(err)
	}
	if w.direct {
		t.Fatal("still writing directly after a refused write")
	}
	if err := w.f.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[3:], odd) {
		t.Fatalf("file holds %q", b)
	}
}

// TestBoltLoaderWriteError checks that a failed write surfaces from put or
// finish, not as a silently short file.
func TestBoltLoaderWriteError(t *testing.T) {
	l, err := NewPageLoader(filepath.Join(t.TempDir(), "l.db"), 4096, [][]byte{[]byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.w.f.Close() // every write now fails
	for i := range 5000 {
		if err = l.Put([]byte("a"), be64(uint64(i)), make([]byte, 2000)); err != nil {
			break
		}
	}
	if err == nil {
		err = l.Finish()
	}
	if !errors.Is(err, os.ErrClosed) {
		t.Fatalf("got %v, want the write error", err)
	}
}

// FuzzBoltLoader loads buckets derived from the input and checks that
// bbolt reads back the same entries. It writes to a tmpfs when there is
// one: the fsync each file ends with can stall for seconds on a disk
// that is discarding freed blocks, and the layout, not the disk, is what
// is fuzzed (TestBoltLoader covers direct writes).
func FuzzBoltLoader(f *testing.F) {
	dir := f.TempDir()
	if d, err := os.MkdirTemp("/dev/shm", "boltload-fuzz-"); err == nil {
		dir = d
		f.Cleanup(func() { os.RemoveAll(d) })
	}
	f.Add([]byte("\x03abc\x00\x01d\x02\xff\xfe"), uint8(3))
	f.Add(bytes.Repeat([]byte{0x40, 'k', 'v'}, 500), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, nb uint8) {
		// Each entry: a length byte, then a key of len%64+1 bytes, and
		// a value of len*37 bytes, round-robin over nb%4+1 buckets.
		buckets := map[string][]loadKV{}
		names := []string{"a", "b", "c", "d"}[:nb%4+1]
		for _, n := range names {
			buckets[n] = nil
		}
		for i := 0; len(data) > 0; i++ {
			n := int(data[0])
			data = data[1:]
			kl := min(n%64+1, len(data))
			if kl == 0 {
				break
			}
			k := data[:kl]
			data = data[kl:]
			v := bytes.Repeat(k[:1], n*37)
			name := names[i%len(names)]
			buckets[name] = append(buckets[name], loadKV{k, v})
		}
		for n, es := range buckets {
			buckets[n] = sortedKVs(es)
		}
		checkLoaded(t, loadFileIn(t, dir, loaderKinds()[0], 4096, buckets), buckets, true)
	})
}

// TestCheckTrees checks that bbolt's consistency walk, which compile runs
// on every snapshot before it is published, refuses a loaded file with a
// broken page header: a leaf page that claims an overflow page it does
// not have, which a cursor reading every entry never notices.
func TestCheckTrees(t *testing.T) {
	p := loadFile(t, 4096, map[string][]loadKV{
		"a": genKVs(rand.New(rand.NewPCG(3, 3)), 2000, 16, 100),
		"b": {{[]byte("only"), nil}},
	})
	check := func() error {
		db, err := bolt.Open(p, 0o444, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		return db.View(CheckTrees)
	}
	if err := check(); err != nil {
		t.Fatalf("a good file fails the check: %v", err)
	}
	// Page 2 is the first leaf page written; page 3 the next.
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	page := b[2*4096:]
	if pageFlags(page) != leafPage || pageOverflow(page) != 0 {
		t.Fatalf("page 2 has flags %#x, %d overflow pages: want a one-page leaf", pageFlags(page), pageOverflow(page))
	}
	ne.PutUint32(page[pageOverflowOff:], 1)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "multiple references") {
		t.Fatalf("a leaf page claiming a page it does not have: %v", err)
	}
}

// be64 is v as 8 bytes, big-endian.
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
