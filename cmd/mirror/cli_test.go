package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// In-process tests: they call run() directly with an in-process fake
// registry. Exit codes and signals are proven again on the built binary in
// process_test.go.

// mixedFake serves the stdlib stages plus generated ones in every
// lifecycle.
func mixedFake(t *testing.T) *registrytest.Server {
	return newFake(t, registrytest.Options{Generate: 60, StageSize: 300})
}

// fakeStages decodes every stage a fake serves.
func fakeStages(t *testing.T, f *registrytest.Server) []*store.Stage {
	t.Helper()
	var out []*store.Stage
	for _, raw := range f.Snapshot() {
		s, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// checkShape compares a decoded JSON object with a golden shape: every
// key of want must be present with the named type ("string", "number",
// "bool", "array", "object", "null", or alternatives such as
// "object|null"; a trailing "?" marks a key that may be omitted; a nested
// object is a nested shape; an array of one shape is an array, never null,
// whose every element has that shape), and got must have no key the
// golden file does not name.
func checkShape(t *testing.T, where string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, spec := range want {
		v, ok := got[k]
		switch spec := spec.(type) {
		case string:
			typ, optional := strings.CutSuffix(spec, "?")
			if !ok {
				if !optional {
					t.Errorf("%s: key %q missing", where, k)
				}
				continue
			}
			if g := jsonType(v); !slices.Contains(strings.Split(typ, "|"), g) {
				t.Errorf("%s: key %q is %s (%v), want %s", where, k, g, v, typ)
			}
		case map[string]any:
			obj, isObj := v.(map[string]any)
			if !ok || !isObj {
				t.Errorf("%s: key %q is %v, want an object", where, k, v)
				continue
			}
			checkShape(t, where+"."+k, obj, spec)
		case []any:
			elem, isShape := spec[0].(map[string]any)
			if len(spec) != 1 || !isShape {
				t.Fatalf("bad golden spec for %s.%s: an array spec holds one object shape", where, k)
			}
			arr, isArr := v.([]any)
			if !ok || !isArr {
				t.Errorf("%s: key %q is %v, want an array", where, k, v)
				continue
			}
			for i, el := range arr {
				obj, isObj := el.(map[string]any)
				if !isObj {
					t.Errorf("%s.%s[%d] is %v, want an object", where, k, i, el)
					continue
				}
				checkShape(t, fmt.Sprintf("%s.%s[%d]", where, k, i), obj, elem)
			}
		default:
			t.Fatalf("bad golden spec for %s.%s: %v", where, k, spec)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: key %q is not in the golden shape; if the contract changed on purpose, add it to testdata/golden", where, k)
		}
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// goldenShape checks stdout (one JSON object) against testdata/golden/name
// and returns the decoded object.
func goldenShape(t *testing.T, name, stdout string) map[string]any {
	t.Helper()
	var want map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join("testdata", "golden", name)), &want); err != nil {
		t.Fatalf("golden %s: %v", name, err)
	}
	var got map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("%s: stdout is not a JSON object: %v\n%s", name, err, stdout)
	}
	if dec.More() {
		t.Errorf("%s: more than one JSON value on stdout:\n%s", name, stdout)
	}
	checkShape(t, name, got, want)
	return got
}

// goldenArray checks stdout (one JSON array, never null) against
// testdata/golden/name, which holds an array of one shape that every
// element must have, and returns the decoded elements.
func goldenArray(t *testing.T, name, stdout string) []map[string]any {
	t.Helper()
	var want []map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join("testdata", "golden", name)), &want); err != nil || len(want) != 1 {
		t.Fatalf("golden %s: want an array of one shape (%v)", name, err)
	}
	var got []map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&got); err != nil || got == nil {
		t.Fatalf("%s: stdout is not a JSON array of objects: %v\n%s", name, err, stdout)
	}
	if dec.More() {
		t.Errorf("%s: more than one JSON value on stdout:\n%s", name, stdout)
	}
	for i, obj := range got {
		checkShape(t, fmt.Sprintf("%s[%d]", name, i), obj, want[0])
	}
	return got
}

func num(t *testing.T, obj map[string]any, path ...string) int {
	t.Helper()
	var v any = obj
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v is %v, not a number", path, v)
	}
	return int(f)
}

func lifecycleCounts(ss []*store.Stage) map[string]int {
	c := map[string]int{}
	for _, s := range ss {
		c[s.Lifecycle.Kind.Name()]++
	}
	return c
}

func TestSyncJSONShape(t *testing.T) {
	t.Parallel()
	fake := mixedFake(t)
	stages := fakeStages(t, fake)
	db := filepath.Join(t.TempDir(), "new", "dir", "m.db") // sync creates parents
	r := runIn(t, nil, "sync", "--json", "--db", db, "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	got := goldenShape(t, "sync.json", r.stdout)
	if got["outcome"] != "ok" || got["upstream"] != fake.URL() || got["published"] != true {
		t.Errorf("outcome %v upstream %v published %v", got["outcome"], got["upstream"], got["published"])
	}
	if num(t, got, "total") != len(stages) || num(t, got, "added") != len(stages) ||
		num(t, got, "changed") != 0 || num(t, got, "removed") != 0 || num(t, got, "quarantined") != 0 ||
		num(t, got, "unchanged") != 0 || num(t, got, "generation") != 1 || num(t, got, "duration_ms") < 0 {
		t.Errorf("first sync counts wrong:\n%s", r.stdout)
	}
	for k, n := range lifecycleCounts(stages) {
		if num(t, got, "by_lifecycle", k) != n {
			t.Errorf("by_lifecycle.%s = %d, want %d", k, num(t, got, "by_lifecycle", k), n)
		}
	}

	// Again: nothing changed.
	r = runIn(t, nil, "sync", "--json", "--db", db, "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("second sync: %s", r)
	}
	got = goldenShape(t, "sync.json", r.stdout)
	if got["outcome"] != "unchanged" || num(t, got, "unchanged") != len(stages) || num(t, got, "added") != 0 {
		t.Errorf("second sync:\n%s", r.stdout)
	}

	// A removal and a tampered stage: both counted, none silent.
	victim, tampered := stages[0], stages[1]
	fake.Remove(victim.ID)
	fake.AddRaw(tamper(t, tampered.Raw))
	r = runIn(t, nil, "sync", "--json", "--db", db, "--registry", fake.URL())
	if r.code != exitPartial {
		t.Fatalf("sync with a tampered stage: %s", r)
	}
	got = goldenShape(t, "sync.json", r.stdout)
	if got["outcome"] != "partial" || num(t, got, "removed") != 1 || num(t, got, "quarantined") != 1 {
		t.Errorf("third sync:\n%s", r.stdout)
	}
	if ids, _ := got["quarantined_ids"].([]any); len(ids) != 1 || ids[0] != string(tampered.ID) {
		t.Errorf("quarantined_ids = %v, want [%s]", got["quarantined_ids"], tampered.ID)
	}
	if !strings.Contains(r.stderr, "quarantined") {
		t.Errorf("a partial sync must say so on stderr:\n%s", r.stderr)
	}
}

// tamper changes the first hex digit of a stage's Ed25519 signature, so
// that the signature no longer verifies.
func tamper(t testing.TB, raw []byte) []byte {
	t.Helper()
	const key = `"ed25519_signature"`
	i := bytes.Index(raw, []byte(key))
	if i < 0 {
		t.Fatal("no ed25519_signature to tamper with")
	}
	j := i + len(key) + bytes.IndexByte(raw[i+len(key):], '"') + 1
	out := bytes.Clone(raw)
	if out[j] == '0' {
		out[j] = '1'
	} else {
		out[j] = '0'
	}
	return out
}

func TestStatusJSONShape(t *testing.T) {
	t.Parallel()
	fake := mixedFake(t)
	stages := fakeStages(t, fake)
	db := filepath.Join(t.TempDir(), "m.db")
	before := time.Now().Add(-time.Second)
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	r := runIn(t, nil, "status", "--json", "--db", db)
	if r.code != exitOK {
		t.Fatalf("status: %s", r)
	}
	got := goldenShape(t, "status.json", r.stdout)
	ts, err := time.Parse(time.RFC3339, got["last_sync"].(string))
	if err != nil || ts.Before(before.Truncate(time.Second)) || ts.After(time.Now()) {
		t.Errorf("last_sync %v (%v) is not an RFC 3339 time of this sync", got["last_sync"], err)
	}
	if age := num(t, got, "age_seconds"); age < 0 || age > 60 {
		t.Errorf("age_seconds %d", age)
	}
	if got["upstream"] != fake.URL() || num(t, got, "total") != len(stages) || num(t, got, "quarantined") != 0 ||
		num(t, got, "generation") != 1 || got["stale"] != false || got["path"] != db {
		t.Errorf("status:\n%s", r.stdout)
	}
	counts := lifecycleCounts(stages)
	if len(counts) != 4 {
		t.Fatalf("the fake should serve every lifecycle, has %v", counts)
	}
	for k, n := range counts {
		if num(t, got, "by_lifecycle", k) != n {
			t.Errorf("by_lifecycle.%s = %d, want %d", k, num(t, got, "by_lifecycle", k), n)
		}
	}

	// Text form names the same facts.
	r = runIn(t, nil, "status", "--db", db)
	for _, want := range []string{db, fake.URL(), "generation 1", fmt.Sprintf("stages %d", len(stages)), "quarantined 0"} {
		if !strings.Contains(collapse(r.stdout), want) {
			t.Errorf("status text lacks %q:\n%s", want, r.stdout)
		}
	}
}

func TestStatusNeverSynced(t *testing.T) {
	t.Parallel()
	// An empty registry: the sync publishes generation 1 with no stages.
	empty := newFake(t, registrytest.Options{Stages: []json.RawMessage{}})
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runIn(t, nil, "sync", "--db", db, "--registry", closedPortURL(t)); r.code != exitError {
		t.Fatalf("sync to a closed port: %s", r)
	}
	// The failed sync left an empty, never-synced mirror (generation 0).
	r := runIn(t, nil, "status", "--json", "--db", db)
	if r.code != exitOK {
		t.Fatalf("status of a never-synced mirror: %s", r)
	}
	got := goldenShape(t, "status.json", r.stdout)
	if got["last_sync"] != "" || num(t, got, "generation") != 0 || num(t, got, "total") != 0 {
		t.Errorf("never synced:\n%s", r.stdout)
	}
	// Every listed key is there, empty collections included: [] and {},
	// never null or left out (goldenShape has no optional key for these).
	if ids, ok := got["quarantined_ids"].([]any); !ok || len(ids) != 0 {
		t.Errorf("quarantined_ids of a never-synced mirror: %v, want []", got["quarantined_ids"])
	}
	r = runIn(t, nil, "verify", "--json", "--db", db)
	if got := goldenShape(t, "verify.json", r.stdout); r.code != exitOK || len(got["problems"].([]any)) != 0 {
		t.Errorf("verify --json of a never-synced mirror: %s", r)
	}
	r = runIn(t, nil, "stats", "--json", "--db", db)
	if got := goldenShape(t, "stats.json", r.stdout); r.code != exitOK || len(got["by_effect"].(map[string]any)) != 0 || num(t, got, "by_lifecycle", "active") != 0 {
		t.Errorf("stats --json of a never-synced mirror: %s", r)
	}
	if r := runIn(t, nil, "status", "--db", db); !strings.Contains(r.stdout, "never") {
		t.Errorf("status text should say never:\n%s", r.stdout)
	}
	if r := runIn(t, nil, "status", "--max-age", "100h", "--db", db); r.code != exitStale || !strings.Contains(r.stderr, "never synced") {
		t.Errorf("--max-age on a never-synced mirror: %s", r)
	}
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", empty.URL()); r.code != exitOK {
		t.Fatalf("sync of an empty registry: %s", r)
	}
	if r := runIn(t, nil, "status", "--max-age", "100h", "--db", db); r.code != exitOK {
		t.Errorf("fresh after syncing: %s", r)
	}
}

func TestVerifyAndStatsJSONShape(t *testing.T) {
	t.Parallel()
	fake := mixedFake(t)
	stages := fakeStages(t, fake)
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	r := runIn(t, nil, "verify", "--json", "--db", db)
	if r.code != exitOK {
		t.Fatalf("verify: %s", r)
	}
	got := goldenShape(t, "verify.json", r.stdout)
	if got["ok"] != true || num(t, got, "checked") != len(stages) || num(t, got, "failed") != 0 {
		t.Errorf("verify:\n%s", r.stdout)
	}

	r = runIn(t, nil, "stats", "--json", "--db", db)
	if r.code != exitOK {
		t.Fatalf("stats: %s", r)
	}
	got = goldenShape(t, "stats.json", r.stdout)
	var want store.Stats
	for _, s := range stages {
		want.Add(s)
	}
	if num(t, got, "total_stages") != want.Total {
		t.Errorf("total_stages %d, want %d", num(t, got, "total_stages"), want.Total)
	}
	for k, n := range want.ByEffect {
		if num(t, got, "by_effect", k) != n {
			t.Errorf("by_effect[%s] = %d, want %d", k, num(t, got, "by_effect", k), n)
		}
	}
	r = runIn(t, nil, "stats", "--db", db)
	if r.code != exitOK || !strings.Contains(collapse(r.stdout), fmt.Sprintf("total %d\n", want.Total)) || !strings.Contains(r.stdout, "lifecycle active") {
		t.Errorf("stats text: %s", r)
	}

	// --live asks the registry's /health.
	r = runIn(t, nil, "stats", "--live", "--json", "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("stats --live: %s", r)
	}
	got = goldenShape(t, "stats.json", r.stdout)
	if num(t, got, "total_stages") != want.Total {
		t.Errorf("live total %d, want %d", num(t, got, "total_stages"), want.Total)
	}
	if r := runIn(t, nil, "stats", "--live", "--registry", closedPortURL(t)); r.code != exitError {
		t.Errorf("stats --live on a closed port: %s", r)
	}
}

// TestGetExactBytes: every stage, by full id, unique prefix and name,
// prints exactly the bytes the registry served plus one newline.
func TestGetExactBytes(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	raws := stdlibRaw(t)
	ids := make([]string, len(raws))
	for i, raw := range raws {
		ids[i] = stageField(t, raw, "id")
	}
	for i, raw := range raws {
		id, name := ids[i], stageField(t, raw, "name")
		prefix := uniquePrefix(id, ids)
		for _, ref := range []string{id, prefix, name} {
			r := runIn(t, nil, "get", "--db", db, ref)
			if r.code != exitOK {
				t.Fatalf("get %s: %s", ref, r)
			}
			if want := string(raw) + "\n"; r.stdout != want {
				t.Fatalf("get %s: %d bytes differ from the fixture's %d bytes (+newline)", ref, len(r.stdout), len(raw))
			}
			if r.stderr != "" {
				t.Errorf("get %s wrote to stderr: %s", ref, r.stderr)
			}
		}
	}

	// An ambiguous prefix lists its candidates.
	amb := ambiguousPrefix(t, ids)
	r := runIn(t, nil, "get", "--db", db, amb)
	if r.code != exitError || !strings.Contains(r.stderr, "ambiguous") {
		t.Fatalf("get %s: %s", amb, r)
	}
	for _, id := range ids {
		if strings.HasPrefix(id, amb) && !strings.Contains(r.stderr, id) {
			t.Errorf("ambiguous prefix %s: candidate %s not listed:\n%s", amb, id, r.stderr)
		}
	}
	if r.stdout != "" {
		t.Errorf("a failed get printed to stdout: %q", r.stdout)
	}
	r = runIn(t, nil, "get", "--db", db, "no_such_stage")
	if r.code != exitError || !strings.Contains(r.stderr, "no_such_stage") {
		t.Errorf("get of a missing name: %s", r)
	}
}

// collapse squeezes the runs of spaces a tabwriter makes into one.
func collapse(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(strings.Join(strings.Fields(line), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

func uniquePrefix(id string, ids []string) string {
	for n := 4; n < len(id); n++ {
		c := 0
		for _, o := range ids {
			if strings.HasPrefix(o, id[:n]) {
				c++
			}
		}
		if c == 1 {
			return id[:n]
		}
	}
	return id
}

func ambiguousPrefix(t *testing.T, ids []string) string {
	t.Helper()
	c := map[string]int{}
	for _, id := range ids {
		c[id[:1]]++
	}
	best := ""
	for p, n := range c {
		if n > 1 && (best == "" || n < c[best] || (n == c[best] && p < best)) {
			best = p
		}
	}
	if best == "" {
		t.Fatal("no shared first character among the ids")
	}
	return best
}

func TestList(t *testing.T) {
	t.Parallel()
	fake := mixedFake(t)
	stages := fakeStages(t, fake)
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	byID := map[string]*store.Stage{}
	for _, s := range stages {
		byID[string(s.ID)] = s
	}

	// Table: a header and one row per stage.
	r := runIn(t, nil, "list", "--db", db)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != exitOK || len(lines) != len(stages)+1 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "LIFECYCLE") {
		t.Fatalf("list: %d lines for %d stages: %s", len(lines), len(stages), r)
	}

	// --json: one compact JSON per line, every stage once, the stage's
	// own tokens.
	r = runIn(t, nil, "list", "--json", "--db", db)
	if r.code != exitOK {
		t.Fatalf("list --json: %s", r)
	}
	seen := map[string]bool{}
	for line := range strings.Lines(r.stdout) {
		line = strings.TrimSuffix(line, "\n")
		id := stageField(t, []byte(line), "id")
		s, ok := byID[id]
		if !ok || seen[id] {
			t.Fatalf("list --json: unexpected or repeated %s", id)
		}
		seen[id] = true
		var want bytes.Buffer
		json.Compact(&want, s.Raw)
		if line != want.String() {
			t.Errorf("list --json line for %s is not the stage's bytes compacted", id)
		}
	}
	if len(seen) != len(stages) {
		t.Errorf("list --json printed %d stages, want %d", len(seen), len(stages))
	}

	// --lifecycle filters, in both forms.
	for kind, n := range lifecycleCounts(stages) {
		r := runIn(t, nil, "list", "--lifecycle", kind, "--json", "--db", db)
		if got := strings.Count(r.stdout, "\n"); r.code != exitOK || got != n {
			t.Errorf("list --lifecycle %s --json: %d lines, want %d: %s", kind, got, n, r)
		}
		for line := range strings.Lines(r.stdout) {
			if s := byID[stageField(t, []byte(line), "id")]; s == nil || s.Lifecycle.Kind.Name() != kind {
				t.Errorf("list --lifecycle %s printed %s", kind, line)
			}
		}
		r = runIn(t, nil, "list", "--lifecycle", kind, "--db", db)
		if got := strings.Count(r.stdout, "\n") - 1; r.code != exitOK || got != n {
			t.Errorf("list --lifecycle %s: %d rows, want %d", kind, got, n)
		}
	}
}

func TestFindAndResolve(t *testing.T) {
	t.Parallel()
	fake := mixedFake(t)
	stages := fakeStages(t, fake)
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	byName := map[string][]*store.Stage{}
	activeBySig := map[store.SignatureID][]string{}
	for _, s := range stages {
		byName[s.Name] = append(byName[s.Name], s)
		if s.Lifecycle.Kind == store.LifecycleActive {
			activeBySig[s.SignatureID] = append(activeBySig[s.SignatureID], string(s.ID))
		}
	}
	for name, want := range byName {
		r := runIn(t, nil, "find", "--db", db, name)
		if r.code != exitOK {
			t.Fatalf("find %s: %s", name, r)
		}
		var got []string
		for line := range strings.Lines(r.stdout) {
			if stageField(t, []byte(line), "name") != name {
				t.Errorf("find %s printed %s", name, line)
			}
			got = append(got, stageField(t, []byte(line), "id"))
		}
		if len(got) != len(want) {
			t.Errorf("find %s: %d stages, want %d", name, len(got), len(want))
		}
	}
	if r := runIn(t, nil, "find", "--db", db, "no_such_name"); r.code != exitError || !strings.Contains(r.stderr, "no_such_name") {
		t.Errorf("find of a missing name: %s", r)
	}

	for sig, ids := range activeBySig {
		r := runIn(t, nil, "resolve", "--db", db, string(sig))
		if r.code != exitOK || strings.Count(r.stdout, "\n") != 1 {
			t.Fatalf("resolve %s: %s", sig, r)
		}
		if id := stageField(t, []byte(r.stdout), "id"); !contains(ids, id) {
			t.Errorf("resolve %s gave %s, not one of %v", sig, id, ids)
		}
		r = runIn(t, nil, "resolve", "--all", "--db", db, string(sig))
		var got []string
		for line := range strings.Lines(r.stdout) {
			got = append(got, stageField(t, []byte(line), "id"))
		}
		sort.Strings(ids)
		if r.code != exitOK || strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("resolve --all %s: %v, want %v (sorted by id): %s", sig, got, ids, r)
		}
	}
	unknown := strings.Repeat("0", 64)
	if r := runIn(t, nil, "resolve", "--db", db, unknown); r.code != exitError {
		t.Errorf("resolve of an unknown signature: %s", r)
	}
	if r := runIn(t, nil, "resolve", "--all", "--db", db, unknown); r.code != exitError {
		t.Errorf("resolve --all of an unknown signature: %s", r)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestUsageErrors: every kind of bad command line is exit 2 with a message
// naming the problem, and never touches the mirror.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	before := readFile(t, db)
	env := map[string]string{"MIRROR_DB": db}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"status", "extra"}, "takes no arguments"},
		{[]string{"status", "--max-age", "soon"}, "max-age"},
		{[]string{"get"}, "exactly one reference"},
		{[]string{"get", "a", "b"}, "exactly one reference"},
		{[]string{"find"}, "exactly one name"},
		{[]string{"resolve"}, "exactly one signature id"},
		{[]string{"resolve", "not-hex"}, "64 lowercase hex"},
		{[]string{"list", "--lifecycle", "retired"}, "unknown lifecycle"},
		{[]string{"list", "--lifecycle", "Active"}, "unknown lifecycle"},
		{[]string{"list", "extra"}, "takes no arguments"},
		{[]string{"stats", "--live"}, "--live needs"},
		{[]string{"verify", "x"}, "takes no arguments"},
		{[]string{"sync"}, "no registry"},
		{[]string{"sync", "extra", "--registry", "http://127.0.0.1:1"}, "takes no arguments"},
		{[]string{"sync", "--api-key", "s3cret", "--registry", "http://127.0.0.1:1"}, "unknown flag: --api-key"},
		{[]string{"sync", "--api-key=s3cret", "--registry", "http://127.0.0.1:1"}, "unknown flag: --api-key"},
		{[]string{"sync", "--registry", "ftp://x"}, "scheme must be http or https"},
		{[]string{"sync", "--registry", "not a url"}, "--registry"},
		{[]string{"sync", "--registry", "http://user:pw@127.0.0.1:1"}, "user name or password"},
		{[]string{"sync", "--timeout", "forever", "--registry", "http://127.0.0.1:1"}, "timeout"},
		{[]string{"serve", "extra"}, "takes no arguments"},
		{[]string{"help", "frobnicate"}, `mirror help: unknown command "frobnicate"`},
		{[]string{"help", "sync", "status"}, "at most one command name"},
		{[]string{"status", "--max-age", "-1h"}, "--max-age -1h0m0s: a duration cannot be negative"},
		{[]string{"status", "--max-age=-1ns"}, "--max-age -1ns: a duration cannot be negative"},
		{[]string{"sync", "--timeout", "-1s", "--registry", "http://127.0.0.1:1"}, "--timeout -1s: a duration cannot be negative"},
		{[]string{"log", "extra"}, "log takes no arguments"},
		{[]string{"diff", "1", "2", "3"}, "diff takes at most two generations, A and B; got 3 arguments"},
		{[]string{"gc", "extra"}, "gc takes no arguments"},
		{[]string{"gc", "--keep", "-1"}, `--keep "-1": want a whole number`},
		{[]string{"get", "--at", "", "list_length"}, "--at needs a generation"},
		{[]string{"list", "--at="}, "--at needs a generation"},
		{[]string{"stats", "--live", "--at", "1", "--registry", "http://127.0.0.1:1"}, "--at reads a generation of the mirror and --live asks the registry"},
		{[]string{"export", "--at", " ", "out.bundle"}, "--at needs a generation"},
	} {
		r := runIn(t, env, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("mirror %q: want exit 2 and %q on stderr, got %s", tc.args, tc.want, r)
		}
		if strings.Contains(r.stderr, "s3cret") || strings.Contains(r.stdout, "s3cret") {
			t.Errorf("mirror %q echoed the key", tc.args)
		}
		if r.stdout != "" && len(tc.args) > 0 {
			t.Errorf("mirror %q: a usage error printed to stdout: %q", tc.args, r.stdout)
		}
	}
	if !bytes.Equal(before, readFile(t, db)) {
		t.Error("a usage error changed the mirror")
	}
}

func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	r := runIn(t, nil, "help")
	if r.code != exitOK {
		t.Fatalf("help: %s", r)
	}
	for _, c := range commands() {
		if !strings.Contains(r.stdout, "  "+c.name+" ") {
			t.Errorf("help does not list %s", c.name)
		}
	}
	for _, want := range []string{"Exit codes:", "0    ok", "1    error", "2    usage", "3    partial", "4    stale", "5    busy", "130  interrupted", "MIRROR_DB", "NOETHER_API_KEY"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help", "help"}, {"help", "--help"}} {
		if r2 := runIn(t, nil, args...); r2.code != exitOK || r2.stdout != r.stdout {
			t.Errorf("mirror %v differs from mirror help", args)
		}
	}
	for _, c := range commands() {
		for _, args := range [][]string{{"help", c.name}, {c.name, "--help"}} {
			r := runIn(t, nil, args...)
			if r.code != exitOK || !strings.HasPrefix(r.stdout, "Usage: mirror "+c.name) || !strings.Contains(r.stdout, "Exit codes:") {
				t.Errorf("mirror %v: %s", args, r)
			}
		}
	}
	if r := runIn(t, nil, "sync", "--help"); strings.Contains(r.stdout, "api-key ") || !strings.Contains(r.stdout, "--api-key-file") {
		t.Errorf("sync help must offer --api-key-file and no --api-key:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runIn(t, nil, args...)
		if r.code != exitOK || r.stdout != "mirror "+version+"\n" || r.stderr != "" {
			t.Errorf("mirror %v: %s", args, r)
		}
	}
}

// TestQuiet: -q prints nothing at all on success.
func TestQuiet(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{})
	db := filepath.Join(t.TempDir(), "m.db")
	stdlib := stdlibRaw(t)
	for _, args := range [][]string{
		{"sync", "-q", "--registry", fake.URL()},
		{"sync", "--quiet", "--registry", fake.URL()}, // unchanged
		{"status", "-q"},
		{"status", "-q", "--max-age", "1h"},
		{"verify", "-q"},
	} {
		r := runIn(t, nil, append(args, "--db", db)...)
		if r.code != exitOK || r.stdout != "" || r.stderr != "" {
			t.Errorf("mirror %v: want silence and exit 0, got %s", args, r)
		}
	}
	// Without -q the same commands talk.
	fake.AddRaw(tamper(t, stdlib[3]))
	r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL())
	if r.code != exitPartial || r.stderr == "" {
		t.Errorf("-q must still report a partial sync: %s", r)
	}
}

// TestLogsOnStderr: stdout carries only results; logs (slog text) go to
// stderr, and -v adds debug lines.
func TestLogsOnStderr(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{})
	db := filepath.Join(t.TempDir(), "m.db")
	r := runIn(t, nil, "sync", "-v", "--json", "--db", db, "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("sync -v: %s", r)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Errorf("stdout of sync -v --json is not just the JSON report: %v", err)
	}
	if !strings.Contains(r.stderr, "level=DEBUG") {
		t.Errorf("-v should log debug lines to stderr:\n%s", r.stderr)
	}
	r = runIn(t, nil, "sync", "--db", db, "--registry", fake.URL())
	if strings.Contains(r.stderr, "level=DEBUG") || !strings.HasPrefix(r.stdout, "sync unchanged: 85 stages") {
		t.Errorf("without -v: %s", r)
	}
}

// TestReadCommandsOffline: with the registry unreachable every read
// command works from the mirror alone.
func TestReadCommandsOffline(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	raw := stdlibRaw(t)[0]
	id, name, sig := stageField(t, raw, "id"), stageField(t, raw, "name"), stageField(t, raw, "signature_id")
	env := map[string]string{"NOETHER_REGISTRY": closedPortURL(t), "MIRROR_DB": db}
	for _, args := range [][]string{
		{"status"}, {"status", "--json"}, {"status", "--max-age", "1h"},
		{"get", id}, {"get", id[:10]}, {"get", name},
		{"list"}, {"list", "--json"}, {"list", "--lifecycle", "active"},
		{"find", name}, {"resolve", sig}, {"resolve", "--all", sig},
		{"stats"}, {"stats", "--json"}, {"verify"}, {"verify", "--json"},
		{"log"}, {"log", "--json"}, {"diff"}, {"diff", "--json"}, {"get", "--at", "1", id}, {"list", "--at", "0"},
	} {
		if r := runIn(t, env, args...); r.code != exitOK || r.stdout == "" {
			t.Errorf("offline mirror %v: %s", args, r)
		}
	}
}

// TestDBLocation: --db beats MIRROR_DB.
func TestDBLocation(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{})
	dir := t.TempDir()
	envDB, flagDB := filepath.Join(dir, "env.db"), filepath.Join(dir, "flag.db")
	env := map[string]string{"MIRROR_DB": envDB, "NOETHER_REGISTRY": fake.URL()}
	if r := runIn(t, env, "sync", "-q"); r.code != exitOK {
		t.Fatalf("sync into MIRROR_DB: %s", r)
	}
	if _, err := os.Stat(envDB); err != nil {
		t.Fatalf("MIRROR_DB not used: %v", err)
	}
	if r := runIn(t, env, "sync", "-q", "--db", flagDB); r.code != exitOK {
		t.Fatalf("sync --db: %s", r)
	}
	if r := runIn(t, env, "status", "--json"); !strings.Contains(r.stdout, `"path": "`+envDB+`"`) {
		t.Errorf("status without --db should read MIRROR_DB: %s", r)
	}
	if r := runIn(t, env, "status", "--json", "--db", flagDB); !strings.Contains(r.stdout, `"path": "`+flagDB+`"`) {
		t.Errorf("status --db should win over MIRROR_DB: %s", r)
	}
}

// TestMissingMirror: a clear error naming the path and the fix, and no
// file created by a read command.
func TestMissingMirror(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "absent.db")
	for _, args := range [][]string{
		{"status"}, {"get", "x"}, {"list"}, {"find", "x"}, {"resolve", strings.Repeat("a", 64)},
		{"stats"}, {"verify"}, {"serve", "--addr", "127.0.0.1:0"}, {"log"}, {"diff"}, {"gc"},
		{"get", "--at", "1", "x"}, {"list", "--at", "1"}, {"stats", "--at", "1"},
	} {
		r := runIn(t, nil, append(args, "--db", db)...)
		if r.code != exitError || !strings.Contains(r.stderr, db) || !strings.Contains(r.stderr, "mirror sync") {
			t.Errorf("mirror %v on a missing mirror: want exit 1 naming %s and `mirror sync`, got %s", args, db, r)
		}
		if names, _ := filepath.Glob(db + "*"); len(names) > 0 {
			t.Fatalf("mirror %v created %v", args, names)
		}
	}
}

// TestBadFiles: an empty file, random bytes, a truncated mirror and a
// directory: every command fails with exit 1 (verify: 3), a message naming
// the file, no panic, and the bytes untouched.
func TestBadFiles(t *testing.T) {
	t.Parallel()
	good := syncedMirror(t)
	goodBytes := readFile(t, good)
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(i*7919 + i>>3)
	}
	fake := newFake(t, registrytest.Options{})
	files := map[string][]byte{
		"empty":     {},
		"random":    random,
		"truncated": goodBytes[:len(goodBytes)/2],
		"text":      []byte("hello, not a mirror\n"),
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			db := filepath.Join(t.TempDir(), name+".db")
			if err := os.WriteFile(db, content, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"status"}, {"status", "--json"}, {"get", "list_length"}, {"list"}, {"list", "--json"},
				{"find", "list_length"}, {"stats"}, {"sync", "--registry", fake.URL()},
				{"log"}, {"diff"}, {"gc"}, {"get", "--at", "1", "list_length"},
			} {
				r := runIn(t, nil, append(args, "--db", db)...)
				if r.code != exitError || !strings.Contains(r.stderr, db) || strings.Contains(r.stderr, "panic") {
					t.Errorf("mirror %v: want exit 1 naming the file, got %s", args, r)
				}
			}
			for _, args := range [][]string{{"verify"}, {"verify", "--json"}} {
				r := runIn(t, nil, append(args, "--db", db)...)
				if r.code != exitPartial || !strings.Contains(r.stdout+r.stderr, db) {
					t.Errorf("mirror %v: want exit 3 naming the file, got %s", args, r)
				}
			}
			if !bytes.Equal(content, readFile(t, db)) {
				t.Error("the file was modified")
			}
			if names, _ := filepath.Glob(db + ".*"); len(names) > 0 {
				t.Errorf("files created next to the bad mirror: %v", names)
			}
		})
	}
	t.Run("directory", func(t *testing.T) {
		db := t.TempDir()
		for _, args := range [][]string{{"status"}, {"list"}, {"sync", "--registry", fake.URL()}} {
			if r := runIn(t, nil, append(args, "--db", db)...); r.code != exitError || !strings.Contains(r.stderr, "directory") {
				t.Errorf("mirror %v on a directory: %s", args, r)
			}
		}
	})
}

// TestVerifyBitFlip: one flipped bit in one record fails verify (exit 3)
// naming the stage; the other reads still work.
func TestVerifyBitFlip(t *testing.T) {
	t.Parallel()
	good := syncedMirror(t)
	raws := stdlibRaw(t)
	victim := raws[7]
	db := copyTo(t, good, "flipped.db")
	desc := stageField(t, victim, "description")
	file := dataFile(t, db, []byte(desc))
	b := readFile(t, file)
	i := bytes.Index(b, []byte(desc))
	b[i+3] ^= 0x20
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := stageField(t, victim, "id")
	r := runIn(t, nil, "verify", "--json", "--db", db)
	if r.code != exitPartial {
		t.Fatalf("verify of a flipped record: %s", r)
	}
	got := goldenShape(t, "verify.json", r.stdout)
	if got["ok"] != false || num(t, got, "failed") < 1 || !strings.Contains(r.stdout, id) {
		t.Errorf("verify --json:\n%s", r.stdout)
	}
	r = runIn(t, nil, "verify", "--db", db)
	if r.code != exitPartial || !strings.Contains(r.stdout, "FAIL "+id) {
		t.Errorf("verify text: %s", r)
	}
	if r := runIn(t, nil, "get", "--db", db, id); r.code != exitError || !strings.Contains(r.stderr, id) {
		t.Errorf("get of the flipped record: %s", r)
	}
	if r := runIn(t, nil, "get", "--db", db, stageField(t, raws[8], "id")); r.code != exitOK || r.stdout != string(raws[8])+"\n" {
		t.Errorf("get of another record: %s", r)
	}
	if !bytes.Equal(b, readFile(t, file)) {
		t.Error("verify or get modified the file")
	}
}

// TestUnreachableRegistry: a closed port is exit 1 with a clear message,
// and the last snapshot stays as it was.
func TestUnreachableRegistry(t *testing.T) {
	t.Parallel()
	db := syncedMirror(t)
	before := readFile(t, db)
	url := closedPortURL(t)
	r := runIn(t, nil, "sync", "--db", db, "--registry", url, "--timeout", "20s")
	if r.code != exitError || !strings.Contains(r.stderr, strings.TrimPrefix(url, "http://")) {
		t.Fatalf("sync to a closed port: %s", r)
	}
	if !bytes.Equal(before, readFile(t, db)) {
		t.Error("a failed sync changed the published snapshot")
	}
	if r := runIn(t, nil, "verify", "-q", "--db", db); r.code != exitOK {
		t.Errorf("verify after a failed sync: %s", r)
	}
}

// TestAPIKey: the key is sent, never printed or logged (even with -v),
// comes from --api-key-file or NOETHER_API_KEY, and a wrong key is a clear
// exit 1.
func TestAPIKey(t *testing.T) {
	t.Parallel()
	const key = "k3y-Zq8w-very-secret-value"
	fake := newFake(t, registrytest.Options{APIKey: key, ReadAuth: true})
	dir := t.TempDir()
	keyFile := writeKeyFile(t, dir, key)
	db := filepath.Join(dir, "m.db")
	noLeak := func(what string, r result) {
		t.Helper()
		if strings.Contains(r.stdout, key) || strings.Contains(r.stderr, key) {
			t.Errorf("%s printed the API key:\n%s", what, r)
		}
	}
	for _, args := range [][]string{
		{"sync", "-v", "--api-key-file", keyFile},
		{"sync", "-v", "--json", "--api-key-file", keyFile},
		{"sync", "--api-key-file", keyFile},
	} {
		r := runIn(t, nil, append(args, "--db", db, "--registry", fake.URL())...)
		if r.code != exitOK {
			t.Fatalf("mirror %v: %s", args, r)
		}
		noLeak(fmt.Sprint(args), r)
		if strings.Contains(r.stderr, "readable by other users") {
			t.Errorf("a 0600 key file warned: %s", r.stderr)
		}
	}
	if got := fake.LastHeaders().Get("X-API-Key"); got != key {
		t.Errorf("the registry got X-API-Key %q", got)
	}
	env := map[string]string{"NOETHER_API_KEY": key}
	r := runIn(t, env, "sync", "-v", "--db", db, "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("sync with NOETHER_API_KEY: %s", r)
	}
	noLeak("sync with NOETHER_API_KEY", r)

	// Loose permissions: a warning naming the fix, never the key.
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	r = runIn(t, nil, "sync", "--api-key-file", loose, "--db", db, "--registry", fake.URL())
	if r.code != exitOK || !strings.Contains(r.stderr, "readable by other users") || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("0644 key file: want a warning, got %s", r)
	}
	noLeak("loose key file", r)

	// Wrong, missing, empty key files.
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-key"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	before := readFile(t, db)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--api-key-file", wrong}, nil, "API key"},
		{nil, map[string]string{"NOETHER_API_KEY": "not-the-key"}, "API key"},
		{nil, nil, "API key"},
		{[]string{"--api-key-file", filepath.Join(dir, "absent")}, nil, "absent"},
		{[]string{"--api-key-file", empty}, nil, "is empty"},
	} {
		r := runIn(t, tc.env, append([]string{"sync", "--db", db, "--registry", fake.URL()}, tc.args...)...)
		if r.code != exitError || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("sync %v %v: want exit 1 and %q, got %s", tc.args, tc.env, tc.want, r)
		}
		noLeak("failed sync", r)
	}
	if !bytes.Equal(before, readFile(t, db)) {
		t.Error("a failed sync changed the mirror")
	}
}

// TestNoProgressWithoutTTY: stderr that is not a terminal gets no
// carriage-return progress; a terminal gets it and it is cleared.
func TestNoProgressWithoutTTY(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{Generate: 400, StageSize: 200})
	fake.SetLatency(30 * time.Millisecond)
	db := filepath.Join(t.TempDir(), "m.db")
	r := runIn(t, nil, "sync", "--db", db, "--registry", fake.URL())
	if r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	if strings.ContainsAny(r.stdout+r.stderr, "\r\033") {
		t.Errorf("progress drawn on a non-terminal:\n%q", r.stderr)
	}

	// The bar itself, as a terminal would get it.
	var buf bytes.Buffer
	e := &env{stderr: &buf, stderrTTY: true}
	b := newProgressBar(e)
	b.update(msync.Progress{Lifecycle: "active", Pages: 2, Stages: 400, Expected: 800, Elapsed: time.Second})
	b.done()
	out := buf.String()
	if !strings.HasPrefix(out, "\r[") || !strings.Contains(out, " 50% active: 2 pages, 400 stages") || !strings.HasSuffix(out, "\033[K\r\033[K") {
		t.Errorf("progress on a terminal: %q", out)
	}
	buf.Reset()
	q := newProgressBar(&env{stderr: &buf, stderrTTY: true, quiet: true})
	q.update(msync.Progress{Lifecycle: "active", Stages: 1, Elapsed: time.Second})
	q.done()
	if buf.Len() != 0 {
		t.Errorf("-q drew progress: %q", buf.String())
	}
}

// TestStatusFutureLastSync: a last sync in the future (the clock went
// back; PATH.state may move the last sync forward) is reported as such,
// never as "never synced". Beyond a clock skew of 5 minutes the age means
// nothing, so it is stale for --max-age (exit 4, stale true), with a
// message to check the clock; within the skew it is fresh. Through the
// binary.
func TestStatusFutureLastSync(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	for _, tc := range []struct {
		name   string
		ahead  time.Duration
		args   []string
		code   int
		stdout string // in the status text ("" for --json)
		stderr string // "" means empty
		stale  bool   // with --json
	}{
		{"an hour ahead", time.Hour, []string{"--max-age", "26h"}, exitStale, "in the future: check the clock", "check the clock", true},
		{"an hour ahead, json", time.Hour, []string{"--max-age", "26h", "--json"}, exitStale, "", "check the clock", true},
		{"an hour ahead, no max-age", time.Hour, nil, exitOK, "1h0m0s in the future: check the clock", "", false},
		{"an hour ahead, quiet", time.Hour, []string{"--max-age", "26h", "-q"}, exitStale, "", "in the future", true},
		{"within the skew", 2 * time.Minute, []string{"--max-age", "26h"}, exitOK, "(0s ago)", "", false},
		{"within the skew, json", 2 * time.Minute, []string{"--max-age", "26h", "--json"}, exitOK, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := syncedMirror(t)
			writeLastSync(t, db, time.Now().Add(tc.ahead))
			r := runMirror(t, env, append([]string{"status", "--db", db}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("want exit %d, got %s", tc.code, r)
			}
			if !strings.Contains(r.stdout, tc.stdout) || (tc.stderr == "") != (r.stderr == "") || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("want %q on stdout and %q on stderr, got %s", tc.stdout, tc.stderr, r)
			}
			if strings.Contains(r.stdout+r.stderr, "never") {
				t.Errorf("a last sync in the future is not \"never synced\": %s", r)
			}
			if slices.Contains(tc.args, "--json") {
				got := goldenShape(t, "status.json", r.stdout)
				if got["stale"] != tc.stale || got["last_sync"] == "" {
					t.Errorf("stale %v, want %v; last_sync %v", got["stale"], tc.stale, got["last_sync"])
				}
			}
		})
	}
}

// writeLastSync moves the last sync recorded in PATH.state to ts.
func writeLastSync(t *testing.T, db string, ts time.Time) {
	t.Helper()
	// A sync that published leaves no sidecar (the manifest has its
	// time); one that found nothing new writes one for its generation.
	sc := map[string]any{"generation": statusOf(t, baseEnv(t), db).Generation}
	if b, err := os.ReadFile(db + ".state"); err == nil {
		if err := json.Unmarshal(b, &sc); err != nil {
			t.Fatalf("PATH.state: %v", err)
		}
	}
	sc["last_sync"] = ts.Format(time.RFC3339Nano)
	b, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db+".state", b, 0o644); err != nil {
		t.Fatal(err)
	}
}
