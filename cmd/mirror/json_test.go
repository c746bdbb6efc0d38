package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Tests of the JSON contract: every key the README lists is present,
// empty collections included.

// TestGoldenShapesHaveNoOptionalKeys: every key the README lists for
// status, verify, stats, log, diff and gc --json is always present, so
// their golden shapes mark none optional.
func TestGoldenShapesHaveNoOptionalKeys(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"status.json", "verify.json", "stats.json", "log.json", "diff.json", "gc.json"} {
		b := readFile(t, filepath.Join("testdata", "golden", name))
		if bytes.Contains(b, []byte(`?"`)) {
			t.Errorf("%s marks a key optional:\n%s", name, b)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestJSONEmptyCollections: with no quarantine, no problems and no
// effects the collections are [] and {}, never null or missing, in the
// bytes themselves.
func TestJSONEmptyCollections(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	env := baseEnv(t)
	r := runMirror(t, env, "status", "--json", "--db", db)
	if r.code != exitOK || !strings.Contains(r.stdout, `"quarantined_ids": []`) {
		t.Errorf("status --json with no quarantine: %s", r)
	}
	goldenShape(t, "status.json", r.stdout)
	r = runMirror(t, env, "verify", "--json", "--db", db)
	if r.code != exitOK || !strings.Contains(r.stdout, `"problems": []`) {
		t.Errorf("verify --json with no problems: %s", r)
	}
	goldenShape(t, "verify.json", r.stdout)
	empty := newFake(t, registrytest.Options{Stages: []json.RawMessage{}})
	edb := filepath.Join(t.TempDir(), "empty.db")
	if r := runMirror(t, env, "sync", "-q", "--db", edb, "--registry", empty.URL()); r.code != exitOK {
		t.Fatalf("sync of an empty registry: %s", r)
	}
	r = runMirror(t, env, "stats", "--json", "--db", edb)
	if r.code != exitOK || !strings.Contains(r.stdout, `"by_effect": {}`) {
		t.Errorf("stats --json of an empty mirror: %s", r)
	}
	if got := goldenShape(t, "stats.json", r.stdout); num(t, got, "total_stages") != 0 {
		t.Errorf("stats of an empty mirror: %s", r.stdout)
	}
}

// TestVerifyProblemsHaveEveryKey: a problem of the whole file has an id
// too ("").
func TestVerifyProblemsHaveEveryKey(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "text.db")
	if err := os.WriteFile(db, []byte("hello, not a mirror\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runMirror(t, baseEnv(t), "verify", "--json", "--db", db)
	got := goldenShape(t, "verify.json", r.stdout)
	probs, _ := got["problems"].([]any)
	if r.code != exitPartial || len(probs) != 1 || probs[0].(map[string]any)["id"] != "" {
		t.Errorf("verify --json of a file that is not a mirror: %s", r)
	}
}
