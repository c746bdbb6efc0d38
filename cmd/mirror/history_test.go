package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Tests of the history commands: log, diff, gc, --at and the keep policy.

// history is a mirror with four generations: 0 (empty, made by the first
// sync), 1 (the first sync), 2 (one stage removed, one changed, one
// promoted from draft to active, one quarantined) and 3 (the quarantined
// stage served valid again).
type history struct {
	db     string
	fake   *registrytest.Server
	stages []*store.Stage // as generation 1 has them
	// The stages generation 2 changed.
	removed, changed, promoted, quarantined *store.Stage
}

// newHistory builds a history; extra flags go to every sync.
func newHistory(t *testing.T, extra ...string) history {
	t.Helper()
	h := history{db: filepath.Join(t.TempDir(), "m.db"), fake: mixedFake(t)}
	h.stages = fakeStages(t, h.fake)
	h.pick(t)
	h.sync(t, exitOK, extra...)
	h.fake.Remove(h.removed.ID)
	var indented bytes.Buffer
	if err := json.Indent(&indented, h.changed.Raw, "", "  "); err != nil {
		t.Fatal(err)
	}
	h.fake.AddRaw(indented.Bytes()) // the same stage, other bytes
	if err := h.fake.SetLifecycle(h.promoted.ID, store.Active); err != nil {
		t.Fatal(err)
	}
	h.fake.AddRaw(tamper(t, h.quarantined.Raw))
	h.sync(t, exitPartial, extra...)
	h.fake.AddRaw(h.quarantined.Raw)
	h.sync(t, exitOK, extra...)
	return h
}

// pick chooses the stages generation 2 changes: three Active stages, each
// the only Active one of its signature, and a draft whose signature has
// no Active stage (so that promoting it deprecates nothing).
func (h *history) pick(t *testing.T) {
	t.Helper()
	active := map[store.SignatureID]int{}
	for _, s := range h.stages {
		if s.Lifecycle.Kind == store.LifecycleActive {
			active[s.SignatureID]++
		}
	}
	var lone []*store.Stage
	for _, s := range h.stages {
		switch {
		case s.Lifecycle.Kind == store.LifecycleActive && active[s.SignatureID] == 1 && s.Name != "":
			lone = append(lone, s)
		case s.Lifecycle.Kind == store.LifecycleDraft && active[s.SignatureID] == 0 && h.promoted == nil:
			h.promoted = s
		}
	}
	if len(lone) < 3 || h.promoted == nil {
		t.Fatalf("the fake has %d lone Active stages and draft %v; want 3 and one", len(lone), h.promoted)
	}
	h.removed, h.changed, h.quarantined = lone[0], lone[1], lone[2]
}

// touched reports whether generation 2 changed s.
func (h *history) touched(s *store.Stage) bool {
	return s == h.removed || s == h.changed || s == h.promoted || s == h.quarantined
}

func (h *history) sync(t *testing.T, code int, extra ...string) {
	t.Helper()
	args := append([]string{"sync", "-q", "--db", h.db, "--registry", h.fake.URL()}, extra...)
	if r := runIn(t, nil, args...); r.code != code {
		t.Fatalf("mirror %v: want exit %d, got %s", args, code, r)
	}
}

// TestLog: one row per kept generation, newest first, the current one
// marked, each with what it changed; --json has every key.
func TestLog(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	r := runIn(t, nil, "log", "--json", "--db", h.db)
	if r.code != exitOK {
		t.Fatalf("log --json: %s", r)
	}
	gens := goldenArray(t, "log.json", r.stdout)
	if len(gens) != 4 {
		t.Fatalf("log --json: %d generations, want 4:\n%s", len(gens), r.stdout)
	}
	for i, g := range gens {
		if num(t, g, "generation") != 3-i || g["current"] != (i == 0) || len(g["digest"].(string)) != 64 {
			t.Errorf("log --json[%d]: generation %v, current %v, digest %v; want %d, %v, 64 hex digits", i, g["generation"], g["current"], g["digest"], 3-i, i == 0)
		}
	}
	n := len(h.stages)
	wantChanges := []map[string]int{
		{"added": 1, "quarantine_out": 1},
		{"removed": 2, "changed": 1, "lifecycle": 1, "quarantine_in": 1},
		{"added": n},
		{},
	}
	for i, want := range wantChanges {
		for _, k := range []string{"added", "removed", "changed", "lifecycle", "quarantine_in", "quarantine_out"} {
			if got := num(t, gens[i], "changes", k); got != want[k] {
				t.Errorf("generation %d: changes.%s = %d, want %d", 3-i, k, got, want[k])
			}
		}
	}
	if num(t, gens[1], "total") != n-2 || num(t, gens[1], "quarantined") != 1 || num(t, gens[0], "total") != n-1 ||
		gens[0]["upstream"] != h.fake.URL() || gens[3]["upstream"] != "" || gens[3]["last_sync"] != "" {
		t.Errorf("log --json counts or upstreams:\n%s", r.stdout)
	}
	// status shows the history in brief.
	st := runIn(t, nil, "status", "--json", "--db", h.db)
	got := goldenShape(t, "status.json", st.stdout)
	layers := num(t, gens[0], "layers")
	if got["digest"] != gens[0]["digest"] || num(t, got, "layers") != layers || layers < 1 ||
		num(t, got, "generations_kept") != 4 || num(t, got, "oldest_generation") != 0 {
		t.Errorf("status and log disagree:\n%s\n%s", st.stdout, r.stdout)
	}
	st = runIn(t, nil, "status", "--db", h.db)
	for _, want := range []string{fmt.Sprintf("generation 3 (%d layer%s over its base)\n", layers, plural(layers)), "history 4 generations kept, the oldest 0 (see mirror log)\n"} {
		if !strings.Contains(collapse(st.stdout), want) {
			t.Errorf("status text lacks %q:\n%s", want, st.stdout)
		}
	}

	r = runIn(t, nil, "log", "--db", h.db)
	lines := strings.Split(strings.TrimSuffix(collapse(r.stdout), "\n"), "\n")
	if r.code != exitOK || len(lines) != 5 || !strings.HasPrefix(lines[0], "GENERATION DIGEST PUBLISHED UPSTREAM STAGES QUARANTINED LAYERS CHANGES") {
		t.Fatalf("log: want a header and 4 rows, got %s", r)
	}
	for i, want := range []string{
		fmt.Sprintf("3 (current) %s ", gens[0]["digest"].(string)[:12]),
		fmt.Sprintf("2 %s ", gens[1]["digest"].(string)[:12]),
		"1 ", "0 ",
	} {
		if !strings.HasPrefix(lines[i+1], want) {
			t.Errorf("log row %d: want it to start %q, got %q", i+1, want, lines[i+1])
		}
	}
	for i, want := range []string{
		fmt.Sprintf(" %d 0 %d 1 added, 1 left quarantine", n-1, num(t, gens[0], "layers")),
		" 2 removed, 1 changed, 1 lifecycle, 1 quarantined",
		fmt.Sprintf(" %d added", n),
		" - 0 0 0 none",
	} {
		if !strings.HasSuffix(lines[i+1], want) {
			t.Errorf("log row %d: want it to end %q, got %q", i+1, want, lines[i+1])
		}
	}
}

// TestDiff: the previous generation against the current one by default;
// one argument against the current one; two by number or digest prefix.
func TestDiff(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	id := func(s *store.Stage) string { return string(s.ID) }
	r := runIn(t, nil, "diff", "--db", h.db)
	want := fmt.Sprintf("generation 2 → 3: 1 added, 0 removed, 0 changed, 0 lifecycle changed; quarantine: 0 in, 1 out\n+ %s %s\nQ- %s\n",
		id(h.quarantined), h.quarantined.Name, id(h.quarantined))
	if r.code != exitOK || r.stdout != want || r.stderr != "" {
		t.Errorf("diff: want\n%s\ngot %s", want, r)
	}

	logJSON := runIn(t, nil, "log", "--json", "--db", h.db).stdout
	gens := goldenArray(t, "log.json", logJSON)
	prefix1 := gens[2]["digest"].(string)[:8]
	want = fmt.Sprintf("generation 1 → 2: 0 added, 2 removed, 1 changed, 1 lifecycle changed; quarantine: 1 in, 0 out\n"+
		"- %s\n- %s\n~ %s %s\nL %s %s draft→active\nQ+ %s\n",
		sortedPair(h.removed, h.quarantined)[0], sortedPair(h.removed, h.quarantined)[1],
		id(h.changed), h.changed.Name, id(h.promoted), h.promoted.Name, id(h.quarantined))
	for _, args := range [][]string{{"1", "2"}, {prefix1, "2"}, {"1", strings.ToUpper(gens[1]["digest"].(string)[:6])}} {
		if r := runIn(t, nil, append([]string{"diff", "--db", h.db}, args...)...); r.code != exitOK || r.stdout != want {
			t.Errorf("diff %v: want\n%s\ngot %s", args, want, r)
		}
	}

	r = runIn(t, nil, "diff", "--json", "--db", h.db, "1")
	got := goldenShape(t, "diff.json", r.stdout)
	if r.code != exitOK || num(t, got, "from", "generation") != 1 || num(t, got, "to", "generation") != 3 ||
		got["to"].(map[string]any)["current"] != true || got["note"] != "" {
		t.Fatalf("diff --json 1: %s", r)
	}
	// From 1 to 3 the quarantined stage came back unchanged: only the
	// removal, the new bytes and the promotion remain.
	entries := func(key string) []string {
		var out []string
		for _, e := range got[key].([]any) {
			e := e.(map[string]any)
			out = append(out, fmt.Sprintf("%s %s %s→%s", e["id"], e["name"], e["from"], e["to"]))
		}
		return out
	}
	for key, want := range map[string][]string{
		"added":     nil,
		"removed":   {fmt.Sprintf("%s %s active→", id(h.removed), h.removed.Name)},
		"changed":   {fmt.Sprintf("%s %s active→active", id(h.changed), h.changed.Name)},
		"lifecycle": {fmt.Sprintf("%s %s draft→active", id(h.promoted), h.promoted.Name)},
	} {
		if g := entries(key); !slices.Equal(g, want) {
			t.Errorf("diff --json 1: %s = %q, want %q", key, g, want)
		}
	}
	if num(t, got, "changes", "removed") != 1 || len(got["quarantine_in"].([]any))+len(got["quarantine_out"].([]any)) != 0 {
		t.Errorf("diff --json 1: %s", r.stdout)
	}
}

// sortedPair returns "ID NAME" of two stages in id order, as diff lists
// them.
func sortedPair(a, b *store.Stage) [2]string {
	x, y := fmt.Sprintf("%s %s", a.ID, a.Name), fmt.Sprintf("%s %s", b.ID, b.Name)
	if y < x {
		x, y = y, x
	}
	return [2]string{x, y}
}

// TestDiffOneGeneration: a mirror that keeps one generation compares it
// with itself, says why, and exits 0.
func TestDiffOneGeneration(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "m.db")
	// The failed sync leaves an empty mirror: generation 0 alone.
	if r := runIn(t, nil, "sync", "--db", db, "--registry", closedPortURL(t)); r.code != exitError {
		t.Fatalf("sync to a closed port: %s", r)
	}
	r := runIn(t, nil, "diff", "--db", db)
	want := "generation 0 → 0: 0 added, 0 removed, 0 changed, 0 lifecycle changed; quarantine: 0 in, 0 out\n" +
		"note: the mirror keeps only generation 0, so there is nothing to compare it with; the next publish that changes something adds one\n"
	if r.code != exitOK || r.stdout != want {
		t.Errorf("diff of a one-generation mirror: want\n%s\ngot %s", want, r)
	}
	r = runIn(t, nil, "diff", "--json", "--db", db)
	got := goldenShape(t, "diff.json", r.stdout)
	if r.code != exitOK || !strings.Contains(got["note"].(string), "only generation 0") || num(t, got, "from", "generation") != 0 ||
		!strings.Contains(r.stdout, `"added": []`) || !strings.Contains(r.stdout, `"quarantine_in": []`) {
		t.Errorf("diff --json of a one-generation mirror: %s", r)
	}
}

// TestGC: gc applies the policy now and says what it dropped; the files
// of the dropped generations are gone, the kept ones still read.
func TestGC(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	files := func() int {
		names, _ := filepath.Glob(filepath.Join(h.db+".gens", "*"))
		return len(names)
	}
	before := files()
	// The default policy keeps everything this young.
	r := runIn(t, nil, "gc", "--db", h.db)
	if r.code != exitOK || r.stdout != "gc: dropped no generation; removed 0 files, freed 0 B; kept 4 generations, the oldest 0 (policy: the last 30 generations and those of the last 7 days)\n" {
		t.Errorf("gc with the default policy: %s", r)
	}
	// So does --keep alone: generations of the last 7 days stay.
	if r := runIn(t, nil, "gc", "--json", "--db", h.db, "--keep", "1"); num(t, goldenShape(t, "gc.json", r.stdout), "kept") != 4 {
		t.Errorf("gc --keep 1 dropped generations of the last 7 days: %s", r)
	}
	r = runIn(t, nil, "gc", "--json", "--db", h.db, "--keep", "2", "--keep-within", "none")
	got := goldenShape(t, "gc.json", r.stdout)
	if r.code != exitOK || fmt.Sprint(got["dropped"]) != "[0 1]" || num(t, got, "kept") != 2 || num(t, got, "oldest_kept") != 2 ||
		num(t, got, "keep_last") != 2 || num(t, got, "keep_within_seconds") != 0 {
		t.Errorf("gc --keep 2 --keep-within none: %s", r)
	}
	if removed := num(t, got, "files_removed"); removed < 1 || files() != before-removed || num(t, got, "bytes_freed") <= 0 {
		t.Errorf("gc removed %d files, freed %d bytes: %d files left of %d", removed, num(t, got, "bytes_freed"), files(), before)
	}
	if r := runIn(t, nil, "verify", "-q", "--db", h.db); r.code != exitOK {
		t.Errorf("verify after gc: %s", r)
	}
	if r := runIn(t, nil, "diff", "--db", h.db, "2"); r.code != exitOK || !strings.HasPrefix(r.stdout, "generation 2 → 3: 1 added") {
		t.Errorf("diff of the generations kept after gc: %s", r)
	}
	if r := runIn(t, nil, "get", "--db", h.db, "--at", "2", string(h.changed.ID)); r.code != exitOK {
		t.Errorf("a kept generation after gc: %s", r)
	}
	r = runIn(t, nil, "gc", "--db", h.db, "--keep", "1", "--keep-within", "none")
	if want := "gc: dropped 1 generation (2); removed "; r.code != exitOK || !strings.HasPrefix(r.stdout, want) ||
		!strings.HasSuffix(r.stdout, "kept 1 generation, the oldest 3 (policy: the last generation)\n") {
		t.Errorf("gc --keep 1: want %q…, got %s", want, r)
	}
	if r := runIn(t, nil, "gc", "-q", "--db", h.db); r.code != exitOK || r.stdout+r.stderr != "" {
		t.Errorf("gc -q: %s", r)
	}
}

// TestGCBusy: gc while another writer holds the mirror exits 5 at once
// and changes nothing.
func TestGCBusy(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	m, err := mirror.Open(h.db, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	r := runIn(t, nil, "gc", "--db", h.db, "--keep", "1", "--keep-within", "none")
	if r.code != exitBusy || !strings.Contains(r.stderr, "another process") || r.stdout != "" {
		t.Errorf("gc during a sync: want exit 5, got %s", r)
	}
	if r := runIn(t, nil, "log", "--json", "--db", h.db); len(goldenArray(t, "log.json", r.stdout)) != 4 {
		t.Errorf("a busy gc dropped generations: %s", r.stdout)
	}
}

// TestHistoryErrors: a generation that was collected, or that never was,
// is exit 1 with the library's message: for a collected one it names the
// oldest kept and the fix.
func TestHistoryErrors(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	if r := runIn(t, nil, "gc", "-q", "--keep", "2", "--keep-within", "none", "--db", h.db); r.code != exitOK {
		t.Fatalf("gc: %s", r)
	}
	id := string(h.removed.ID)
	out := filepath.Join(t.TempDir(), "old.bundle")
	for _, cmd := range [][]string{
		{"get", id}, {"list"}, {"find", h.removed.Name}, {"resolve", string(h.removed.SignatureID)}, {"stats"}, {"export", out},
	} {
		for _, tc := range []struct {
			at, want string
		}{
			{"1", "--at 1: generation collected: generation 1 of " + h.db + " was collected; the oldest kept is 2 (keep more with --keep)"},
			{"0", "the oldest kept is 2"},
			{"9", `--at 9: no such generation: ` + h.db + ` has no generation "9"; it keeps 2 to 3`},
			{"ffffffff", `has no generation "ffffffff"`},
		} {
			args := append(append([]string{}, cmd...), "--db", h.db, "--at", tc.at)
			r := runIn(t, nil, args...)
			if r.code != exitError || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
				t.Errorf("mirror %v: want exit 1 and %q, got %s", args, tc.want, r)
			}
		}
	}
	if names, _ := filepath.Glob(out + "*"); len(names) > 0 {
		t.Errorf("a failed export left %v", names)
	}
	for _, args := range [][]string{{"diff", "1"}, {"diff", "2", "1"}} {
		if r := runIn(t, nil, append(args, "--db", h.db)...); r.code != exitError || !strings.Contains(r.stderr, "the oldest kept is 2") {
			t.Errorf("mirror %v: want exit 1 naming the oldest kept, got %s", args, r)
		}
	}
	if r := runIn(t, nil, "diff", "--db", h.db, "2", "12"); r.code != exitError || !strings.Contains(r.stderr, `no generation "12"`) {
		t.Errorf("diff to an unknown generation: %s", r)
	}
}

// TestAt: every read command with --at reads that generation, not the
// current one.
func TestAt(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	id, name, sig := string(h.removed.ID), h.removed.Name, string(h.removed.SignatureID)
	n := len(h.stages)
	// Gone from the current generation...
	for _, args := range [][]string{{"get", id}, {"find", name}, {"resolve", sig}} {
		if r := runIn(t, nil, append(args, "--db", h.db)...); r.code != exitError {
			t.Errorf("mirror %v: the stage was removed, got %s", args, r)
		}
	}
	// ...and there in generation 1, by number and by digest prefix.
	gens := goldenArray(t, "log.json", runIn(t, nil, "log", "--json", "--db", h.db).stdout)
	for _, at := range []string{"1", gens[2]["digest"].(string)[:10]} {
		// get prints the bytes as served, the others compacted.
		var compact bytes.Buffer
		if err := json.Compact(&compact, h.removed.Raw); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			args []string
			want []byte
		}{
			{[]string{"get", id}, h.removed.Raw}, {[]string{"get", id[:12]}, h.removed.Raw},
			{[]string{"find", name}, compact.Bytes()}, {[]string{"resolve", sig}, compact.Bytes()},
			{[]string{"resolve", "--all", sig}, compact.Bytes()},
		} {
			r := runIn(t, nil, append(tc.args, "--db", h.db, "--at", at)...)
			if r.code != exitOK || r.stdout != string(tc.want)+"\n" {
				t.Errorf("mirror %v --at %s: want the stage, got %s", tc.args, at, r)
			}
		}
		r := runIn(t, nil, "list", "--json", "--db", h.db, "--at", at)
		if r.code != exitOK || strings.Count(r.stdout, "\n") != n || !strings.Contains(r.stdout, `"id":"`+id+`"`) {
			t.Errorf("list --json --at %s: want the %d stages of generation 1, got %d lines", at, n, strings.Count(r.stdout, "\n"))
		}
	}
	// The promoted stage is a draft in generation 1 and active now.
	pid := shortID(string(h.promoted.ID))
	for at, want := range map[string]string{"1": "draft", "": "active"} {
		args := []string{"list", "--db", h.db, "--lifecycle", want}
		if at != "" {
			args = append(args, "--at", at)
		}
		if r := runIn(t, nil, args...); r.code != exitOK || !strings.Contains(r.stdout, pid+" ") {
			t.Errorf("mirror %v: %s should be listed, got %s", args, pid, r)
		}
	}
	r := runIn(t, nil, "stats", "--json", "--db", h.db, "--at", "2")
	if got := goldenShape(t, "stats.json", r.stdout); r.code != exitOK || num(t, got, "total_stages") != n-2 {
		t.Errorf("stats --at 2: want %d stages, got %s", n-2, r)
	}
	if r := runIn(t, nil, "stats", "--db", h.db, "--at", "0"); r.code != exitOK || !strings.Contains(collapse(r.stdout), "total 0\n") {
		t.Errorf("stats --at 0: %s", r)
	}
}

// TestExportAt: export --at writes an older generation, which imports as
// it was.
func TestExportAt(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	file := filepath.Join(t.TempDir(), "g1.bundle")
	r := runIn(t, nil, "export", "--json", "--db", h.db, "--at", "1", file)
	var res struct {
		Manifest struct {
			Generation uint64 `json:"generation"`
			Total      int    `json:"total"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.code != exitOK || res.Manifest.Generation != 1 || res.Manifest.Total != len(h.stages) {
		t.Fatalf("export --at 1 (%v): %s", err, r)
	}
	dst := filepath.Join(t.TempDir(), "dst.db")
	if r := runIn(t, nil, "import", "-q", "--db", dst, file); r.code != exitOK {
		t.Fatalf("import: %s", r)
	}
	a := runIn(t, nil, "list", "--json", "--db", h.db, "--at", "1")
	b := runIn(t, nil, "list", "--json", "--db", dst)
	if a.code != exitOK || a.stdout != b.stdout {
		t.Error("the imported bundle of generation 1 differs from generation 1")
	}
	storeFile := filepath.Join(t.TempDir(), "store.json")
	if r := runIn(t, nil, "export", "--format", "noether-store", "--db", h.db, "--at", "2", storeFile); r.code != exitOK ||
		!strings.Contains(r.stdout, fmt.Sprintf("wrote %d stages", len(h.stages)-2)) {
		t.Errorf("export --format noether-store --at 2: %s", r)
	}
}
