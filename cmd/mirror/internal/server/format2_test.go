package server

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/mirror"
)

// TestFeedReadyFormat2: a format-2 mirror (generations, content digests,
// every record in the manifest) serves its change feed as a format-3
// one does; only a format-1 mirror has no content digest to prove a feed
// against. The test rewrites a new mirror's manifest as format 2: each
// entry its record's JSON alone.
func TestFeedReadyFormat2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	m, err := mirror.Create(path, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		gb := tx.Bucket([]byte("gens"))
		old := map[string][]byte{}
		if err := gb.ForEach(func(k, v []byte) error {
			old[string(k)] = bytes.Clone(v[9:]) // kind byte and publish time dropped
			return nil
		}); err != nil {
			return err
		}
		for k, v := range old {
			if err := gb.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("meta")).Put([]byte("format_version"), binary.BigEndian.AppendUint32(nil, 2))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, err = mirror.Open(path, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if v := m.Meta().FormatVersion; v != 2 {
		t.Fatalf("the test made a format-%d mirror", v)
	}
	if err := (mirrorSource{m}).FeedReady(); err != nil {
		t.Fatalf("a format-2 mirror: %v", err)
	}
}
