package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// format1Copy lays out the format-1 mirror of mirror/testdata/format1
// (written before generations) in a fresh directory.
func format1Copy(t *testing.T) string {
	t.Helper()
	gz := readFile(t, filepath.Join("..", "..", "mirror", "testdata", "format1", "mirror.db.gz"))
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "mirror.db")
	if err := os.WriteFile(db, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestFormat1Mirror: a mirror written before generations reads as it did,
// and status says it keeps no history and what will upgrade it; the
// first sync upgrades it and history starts.
func TestFormat1Mirror(t *testing.T) {
	t.Parallel()
	db := format1Copy(t)
	r := runIn(t, nil, "status", "--db", db)
	if r.code != exitOK || !strings.Contains(r.stdout, "1: one snapshot file, no history; the next sync") {
		t.Fatalf("status of a format-1 mirror: %s", r)
	}
	if r := runIn(t, nil, "get", "--db", db, "list_length"); r.code != exitOK || !strings.Contains(r.stdout, `"list_length"`) {
		t.Errorf("get from a format-1 mirror: %s", r)
	}
	fake := newFake(t, registrytest.Options{})
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync of a format-1 mirror: %s", r)
	}
	r = runIn(t, nil, "status", "--db", db)
	if r.code != exitOK || !strings.Contains(r.stdout, "generations kept") || strings.Contains(r.stdout, "no history") {
		t.Errorf("status after the upgrade: %s", r)
	}
	if r := runIn(t, nil, "log", "--db", db); r.code != exitOK || !strings.Contains(r.stdout, "(current)") {
		t.Errorf("log after the upgrade: %s", r)
	}
}
