package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// stdlibMirror returns the path of a snapshot file holding the stdlib: the
// base file of a compacted generation, which opens as a mirror of its own
// (as a format-1 mirror does).
func stdlibMirror(t testing.TB) string {
	t.Helper()
	m := newTemp(t, Options{MaxOverlay: 1})
	syncAll(t, m, stdlibStages(t), PublishInfo{Upstream: "u"})
	defer m.Close()
	p, _ := currentBase(t, m)
	return p
}

func copyFile(t *testing.T, from, to string) []byte {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpenBadFiles(t *testing.T) {
	good := stdlibMirror(t)
	dir := t.TempDir()
	cases := []struct {
		name string
		make func(path string)
		want error
		msg  string
	}{
		{"missing", func(string) {}, ErrNoMirror, "run `mirror sync` first"},
		{"empty", func(p string) { os.WriteFile(p, nil, 0o644) }, ErrCorrupt, "is empty"},
		{"directory", func(p string) { os.Mkdir(p, 0o755) }, ErrCorrupt, "is a directory"},
		{"text", func(p string) { os.WriteFile(p, []byte(strings.Repeat("not a database\n", 2000)), 0o644) }, ErrCorrupt, "not a readable bbolt file"},
		{"truncated", func(p string) {
			b := copyFile(t, good, p)
			os.WriteFile(p, b[:len(b)/2], 0o644)
		}, ErrCorrupt, "mirror sync"},
		{"foreign bbolt", func(p string) {
			db, err := bolt.Open(p, 0o644, nil)
			if err != nil {
				t.Fatal(err)
			}
			db.Update(func(tx *bolt.Tx) error {
				b, _ := tx.CreateBucket([]byte("meta"))
				return b.Put([]byte("x"), []byte("y"))
			})
			db.Close()
		}, ErrCorrupt, "not a noether-mirror snapshot"},
		{"newer format", func(p string) {
			copyFile(t, good, p)
			db, err := bolt.Open(p, 0o644, nil)
			if err != nil {
				t.Fatal(err)
			}
			db.Update(func(tx *bolt.Tx) error {
				v := make([]byte, 4)
				binary.BigEndian.PutUint32(v, FormatVersion+1)
				return tx.Bucket(bucketMeta).Put([]byte(metaFormatVersion), v)
			})
			db.Close()
		}, ErrFormatVersion, fmt.Sprintf("was written by a newer noether-mirror (format %d > %d): upgrade", FormatVersion+1, FormatVersion)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".db")
			c.make(p)
			before, _ := os.ReadFile(p)
			for _, open := range []func(string, Options) (*Mirror, error){Open, Create} {
				m, err := open(p, Options{})
				if c.name == "missing" && err == nil {
					// Create makes an empty mirror where there is none.
					m.Close()
					os.Remove(p)
					os.RemoveAll(gensDir(p))
					continue
				}
				if !errors.Is(err, c.want) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.msg) {
					t.Errorf("got %v, want %v naming %s and saying %q", err, c.want, p, c.msg)
				}
				if m != nil {
					t.Error("a Mirror was returned with an error")
				}
			}
			after, _ := os.ReadFile(p)
			if !bytes.Equal(before, after) {
				t.Error("opening a bad file modified it")
			}
			if names, _ := filepath.Glob(p + ".*"); len(names) > 0 {
				t.Errorf("opening created %v", names)
			}
		})
	}
}

func TestBitFlipInRecord(t *testing.T) {
	good := stdlibMirror(t)
	p := filepath.Join(t.TempDir(), "flipped.db")
	b := copyFile(t, good, p)
	victim := stdlibStages(t)[7]
	i := bytes.Index(b, []byte(victim.Description))
	if i < 0 {
		t.Fatal("victim's description not found in the file")
	}
	b[i+3] ^= 0x20
	os.WriteFile(p, b, 0o644)
	m, err := Open(p, Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer m.Close()
	ctx := t.Context()
	if _, err := m.GetRaw(ctx, victim.ID); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), string(victim.ID)) {
		t.Errorf("GetRaw of the flipped record: %v, want ErrCorrupt naming it", err)
	}
	if _, err := m.Get(ctx, victim.ID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get of the flipped record: %v", err)
	}
	if _, err := m.List(ctx, store.Filter{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("List over the flipped record: %v", err)
	}
	other := stdlibStages(t)[8]
	if _, err := m.GetRaw(ctx, other.ID); err != nil {
		t.Errorf("another record: %v", err)
	}
	res, err := m.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || res.OK() {
		t.Errorf("verify: failed %d, problems %v", res.Failed, res.Problems)
	}
	var named, digest bool
	for _, pr := range res.Problems {
		named = named || pr.ID == string(victim.ID)
		digest = digest || strings.Contains(pr.What, "digest")
	}
	if !named || !digest {
		t.Errorf("verify problems %v: want the record and the digest", res.Problems)
	}
}

// TestIndexTamperDetected rewrites one index entry (with a valid bbolt
// file): Verify must catch it through the index check and the digest.
func TestIndexTamperDetected(t *testing.T) {
	good := stdlibMirror(t)
	p := filepath.Join(t.TempDir(), "tampered.db")
	copyFile(t, good, p)
	db, err := bolt.Open(p, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(posBucket(store.LifecycleUnknown))
		return b.Put(beUint64(3), []byte(strings.Repeat("0", 64)))
	})
	db.Close()
	m, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	res, err := m.Verify(t.Context())
	if err != nil || res.OK() {
		t.Fatalf("verify of a tampered index: %+v %v", res, err)
	}
	if _, _, err := m.Page(t.Context(), store.LifecycleUnknown, 3, 1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("page through the tampered entry: %v", err)
	}
}

// TestRandomCorruptionNeverPanics flips random bytes of a valid mirror:
// opening, reading and verifying give errors or problems, never a crash.
func TestRandomCorruptionNeverPanics(t *testing.T) {
	good := stdlibMirror(t)
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	rounds := 60
	if testing.Short() {
		rounds = 15
	}
	r := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	for i := range rounds {
		b := bytes.Clone(orig)
		for range 1 + r.IntN(4) {
			b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
		}
		p := filepath.Join(dir, "c.db")
		os.WriteFile(p, b, 0o644)
		m, err := Open(p, Options{})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrFormatVersion) {
				t.Errorf("round %d: open error %v is not ErrCorrupt", i, err)
			}
			continue
		}
		for _, err := range m.Records(t.Context(), store.LifecycleUnknown) {
			if err != nil {
				break
			}
		}
		m.Page(t.Context(), store.LifecycleActive, 5, 5)
		if _, err := m.Verify(t.Context()); err != nil {
			t.Errorf("round %d: verify error %v", i, err)
		}
		m.Close()
	}
}
