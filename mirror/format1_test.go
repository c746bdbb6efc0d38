package mirror

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/noether-mirror/mirror/store"
)

// toFormat1 rewrites the format-2 snapshot at path as format 1 wrote it:
// each record under its id in bucket stages, no log, and the digest over
// the records themselves.
func toFormat1(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{PageSize: pageSize, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		loc, err := newLocator(tx, 2)
		if err != nil {
			return err
		}
		type kv struct{ k, v []byte }
		var recs []kv
		c := tx.Bucket(bucketStages).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			rec, err := loc.record(k, v)
			if err != nil {
				return err
			}
			recs = append(recs, kv{bytes.Clone(k), bytes.Clone(rec)})
		}
		for _, name := range [][]byte{bucketStages, bucketLog} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		sb, err := tx.CreateBucket(bucketStages)
		if err != nil {
			return err
		}
		dg := newDigester()
		for _, r := range recs {
			if err := sb.Put(r.k, r.v); err != nil {
				return err
			}
			dg.add(bucketStages, r.k, r.v)
		}
		for _, name := range digestBuckets()[1:] {
			c := tx.Bucket(name).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				dg.add(name, k, v)
			}
		}
		mb := tx.Bucket(bucketMeta)
		if err := mb.Put([]byte(metaFormatVersion), binary.BigEndian.AppendUint32(nil, 1)); err != nil {
			return err
		}
		return mb.Put([]byte(metaDigest), dg.sum())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReadsFormat1: a mirror written by an earlier version (format 1)
// reads and verifies as before, ScanRaw walks it in id order, and the
// next write turns it into format 2 with the same stages.
func TestReadsFormat1(t *testing.T) {
	p := filepath.Join(t.TempDir(), "v1.db")
	copyFile(t, stdlibMirror(t), p)
	toFormat1(t, p)
	m, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := t.Context()
	if v := m.Meta().FormatVersion; v != 1 {
		t.Fatalf("format %d, want 1", v)
	}
	ss := stdlibStages(t)
	for _, s := range ss {
		raw, err := m.GetRaw(ctx, s.ID)
		if err != nil || !bytes.Equal(raw, s.Raw) {
			t.Fatalf("GetRaw %s: %v", s.ID, err)
		}
	}
	if got, err := m.FindByName(ctx, ss[0].Name); err != nil || len(got) != 1 || got[0].ID != ss[0].ID {
		t.Errorf("FindByName: %v, %v", got, err)
	}
	var ids []string
	err = m.ScanRaw(ctx, store.LifecycleUnknown, func(id store.StageID, _ []byte) error {
		ids = append(ids, string(id))
		return nil
	})
	if err != nil || len(ids) != len(ss) || !slices.IsSorted(ids) {
		t.Errorf("ScanRaw of format 1: %d ids, sorted %v, err %v", len(ids), slices.IsSorted(ids), err)
	}
	res, err := m.Verify(ctx)
	if err != nil || !res.OK() || res.Checked != len(ss) {
		t.Fatalf("verify format 1: %+v, %v", res, err)
	}
	before := m.Meta().Digest

	// A local write starts from the format-1 records and publishes format 2.
	if err := m.Remove(ctx, ss[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	meta := m.Meta()
	if meta.FormatVersion != FormatVersion || meta.Total != len(ss)-1 || meta.Digest == before {
		t.Errorf("after a write: format %d, %d stages, digest changed %v", meta.FormatVersion, meta.Total, meta.Digest != before)
	}
	for _, s := range ss[2:] {
		if raw, err := m.GetRaw(ctx, s.ID); err != nil || !bytes.Equal(raw, s.Raw) {
			t.Fatalf("GetRaw %s after the write: %v", s.ID, err)
		}
	}
	if res, err := m.Verify(ctx); err != nil || !res.OK() {
		t.Fatalf("verify after the write: %+v, %v", res, err)
	}
}
