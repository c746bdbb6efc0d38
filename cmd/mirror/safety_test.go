package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Subprocess tests of what a sync does when the upstream or the machine
// misbehaves: the loss guard, a proxy that drops the offset, drift that
// never settles, pages that repeat a stage, a trust policy that takes
// served stages away, a change of upstream, an older bundle of another
// upstream, and a full disk. Each runs the built binary.

// spoilingProxy serves h on 127.0.0.1. Requests pass through unchanged
// until spoil is set; then spoilt answers them.
type spoilingProxy struct {
	url   string
	spoil atomic.Bool
}

func newSpoilingProxy(t *testing.T, h http.Handler, spoilt func(w http.ResponseWriter, r *http.Request)) *spoilingProxy {
	t.Helper()
	p := &spoilingProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.spoil.Load() {
			spoilt(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// newHandler is an in-process fake registry handler, for a proxy to
// stand in front of.
func newHandler(t *testing.T, opts registrytest.Options) *registrytest.Handler {
	t.Helper()
	h, err := registrytest.NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// mustSyncBin runs `mirror sync -q` through the binary and fails the test
// unless it exits 0.
func mustSyncBin(t *testing.T, env []string, db, url string, args ...string) {
	t.Helper()
	if r := runMirror(t, env, append([]string{"sync", "-q", "--db", db, "--registry", url}, args...)...); r.code != exitOK {
		t.Fatalf("sync from %s: %s", url, r)
	}
}

// sameSnapshot fails the test when the mirror's published snapshot
// differs from before (generation, digest, total, last sync).
func sameSnapshot(t *testing.T, what string, before, after statusJSON) {
	t.Helper()
	if after.Generation != before.Generation || after.Digest != before.Digest || after.Total != before.Total ||
		after.LastSync != before.LastSync || after.Upstream != before.Upstream {
		t.Errorf("%s changed the mirror: generation %d→%d, total %d→%d, digest %s→%s, last sync %s→%s, upstream %s→%s",
			what, before.Generation, after.Generation, before.Total, after.Total, before.Digest, after.Digest,
			before.LastSync, after.LastSync, before.Upstream, after.Upstream)
	}
}

// TestSafetyRefusedSync: a sync that would remove more than 10% of the
// mirror exits 6, publishes nothing, says how many, the limit and
// --max-remove; status shows the refusal until a sync with --max-remove
// publishes. An empty registry at another URL is refused too.
func TestSafetyRefusedSync(t *testing.T) {
	t.Parallel()
	raws := stdlibRaw(t)
	// Every lifecycle has stages, so every by_lifecycle key shows.
	fake := newFake(t, registrytest.Options{Stages: raws, Generate: 40, StageSize: 200})
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, fake.URL())
	before := statusOf(t, env, db)

	// The same upstream loses 20 of its 125 stages.
	for _, raw := range raws[:20] {
		fake.Remove(store.StageID(stageField(t, raw, "id")))
	}
	r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", fake.URL())
	if r.code != exitRefused {
		t.Fatalf("a sync removing 20 of 125 stages: want exit %d, got %s", exitRefused, r)
	}
	for _, want := range []string{"mirror sync: sync refused to publish", "would remove 20 of the mirror's 125 stages",
		"the limit is 10%", "--max-remove 20", "last snapshot is intact"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	// The error says it all, once: no summary line on stdout.
	if r.stdout != "" || strings.Count(r.stderr, "would remove 20 of") != 1 {
		t.Errorf("a refused sync's reason, once, on stderr: %s", r)
	}
	st := statusOf(t, env, db)
	sameSnapshot(t, "a refused sync", before, st)
	if st.LastRefused == nil || st.LastRefused.WouldRemove != 20 || st.LastRefused.Total != 125 ||
		st.LastRefused.Upstream != fake.URL() || !strings.Contains(st.LastRefused.Reason, "remove 20 of") {
		t.Errorf("status --json last_refused: %+v", st.LastRefused)
	}
	text := runMirror(t, env, "status", "--db", db)
	if !strings.Contains(text.stdout, "last sync refused") || !strings.Contains(text.stdout, "mirror sync --max-remove 20") {
		t.Errorf("status text should show the refused sync:\n%s", text)
	}

	// Both JSON shapes hold with a refusal on record.
	goldenShape(t, "status.json", runMirror(t, env, "status", "--json", "--db", db).stdout)
	// --json says the same: outcome refused, and what would have gone.
	r = runMirror(t, env, "sync", "--json", "--db", db, "--registry", fake.URL())
	goldenShape(t, "sync.json", r.stdout)
	var rep struct {
		Outcome   string `json:"outcome"`
		Published bool   `json:"published"`
		Refusal   *struct {
			WouldRemove      int    `json:"would_remove"`
			LostToQuarantine int    `json:"lost_to_quarantine"`
			Total            int    `json:"total"`
			Limit            string `json:"limit"`
			Reason           string `json:"reason"`
		} `json:"refusal"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitRefused || rep.Outcome != "refused" || rep.Published ||
		rep.Refusal == nil || rep.Refusal.WouldRemove != 20 || rep.Refusal.LostToQuarantine != 0 || rep.Refusal.Total != 125 ||
		rep.Refusal.Limit != "10%" || !strings.Contains(rep.Refusal.Reason, "remove 20 of") {
		t.Errorf("sync --json of a refused sync (%v): %+v\n%s", err, rep.Refusal, r)
	}

	// A registry restarted on an empty database, at another address.
	empty := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(empty, []byte("[]"), 0o644); err != nil {
		t.Fatal(err)
	}
	none := startFake(t, "--stages", empty)
	r = runMirror(t, env, "sync", "-q", "--db", db, "--registry", none.URL)
	if r.code != exitRefused || !strings.Contains(r.stderr, "would remove 125 of the mirror's 125 stages") ||
		!strings.Contains(r.stderr, "synced from "+fake.URL()+" and this sync reads "+none.URL) {
		t.Errorf("a sync from an empty registry elsewhere: want exit %d naming both upstreams, got %s", exitRefused, r)
	}
	sameSnapshot(t, "a refused sync from an empty registry", before, statusOf(t, env, db))
	if st := statusOf(t, env, db); st.LastRefused == nil || st.LastRefused.Upstream != none.URL || st.LastRefused.WouldRemove != 125 {
		t.Errorf("status --json last_refused after the second refusal: %+v", st.LastRefused)
	}

	if r := runMirror(t, env, "sync", "--db", db, "--registry", fake.URL(), "--max-remove", "bogus"); r.code != exitUsage ||
		!strings.Contains(r.stderr, "--max-remove") {
		t.Errorf("--max-remove bogus: want exit %d, got %s", exitUsage, r)
	}

	// Accepting the shrink publishes it and clears the record.
	if r := runMirror(t, env, "sync", "--db", db, "--registry", fake.URL(), "--max-remove", "100%"); r.code != exitOK ||
		!strings.Contains(r.stdout, "20 removed") {
		t.Fatalf("sync --max-remove 100%%: %s", r)
	}
	st = statusOf(t, env, db)
	if st.LastRefused != nil || st.Total != 105 || st.Generation != before.Generation+1 {
		t.Errorf("after accepting the shrink: total %d, generation %d, last_refused %+v", st.Total, st.Generation, st.LastRefused)
	}
	if text := runMirror(t, env, "status", "--db", db); strings.Contains(text.stdout, "refused") {
		t.Errorf("status still shows a refusal:\n%s", text)
	}
}

// TestSafetyIgnoredOffset: a proxy that drops the offset from the query
// string makes every page page 0. The sync exits 1 naming the offset and
// the query string, and publishes nothing.
func TestSafetyIgnoredOffset(t *testing.T) {
	t.Parallel()
	// More than one page (200) of active stages.
	h := newHandler(t, registrytest.Options{Stages: stdlibRaw(t), Generate: 300, StageSize: 100})
	p := newSpoilingProxy(t, h, registrytest.DropQuery(h, "offset").ServeHTTP)
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, p.url)
	before := statusOf(t, env, db)
	if before.Total != 385 {
		t.Fatalf("first sync: %d stages", before.Total)
	}

	p.spoil.Store(true)
	r := runMirror(t, env, "sync", "--db", db, "--registry", p.url)
	if r.code != exitError {
		t.Fatalf("a sync through a proxy that drops the offset: want exit %d, got %s", exitError, r)
	}
	for _, want := range []string{"broke the registry protocol", "at offset 200", "ignores the offset", "query string", "Nothing was published"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stdout, "sync ok") || strings.Contains(r.stdout, "removed") {
		t.Errorf("stdout: %s", r)
	}
	after := statusOf(t, env, db)
	sameSnapshot(t, "a sync through an offset-dropping proxy", before, after)
	if after.LastRefused != nil {
		t.Errorf("a protocol error is not a refusal: %+v", after.LastRefused)
	}
}

// TestSafetyHungRegistry: a registry that accepts requests and never
// answers cannot hang a cron job: --timeout ends the sync (exit 1, saying
// so) and the last snapshot stays.
func TestSafetyHungRegistry(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{})
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, fake.URL())
	before := statusOf(t, env, db)
	fake.HangNext(1000)
	start := time.Now()
	r := runMirror(t, env, "sync", "-q", "--timeout", "1s", "--db", db, "--registry", fake.URL())
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the sync took %s with --timeout 1s", d)
	}
	if r.code != exitError || !strings.Contains(r.stderr, "sync did not finish within --timeout 1s; the last snapshot is intact") {
		t.Errorf("a hung registry: want exit %d naming --timeout, got %s", exitError, r)
	}
	sameSnapshot(t, "a sync of a hung registry", before, statusOf(t, env, db))
}

// TestSafetyUnresolvedDrift: a listing whose totals never add up and that
// hides a stage the mirror holds never removes it: exit 3, the summary
// says drift NOT resolved and the stage kept, and `get` still serves it.
func TestSafetyUnresolvedDrift(t *testing.T) {
	t.Parallel()
	raws := stdlibRaw(t)
	hidden := raws[40]
	h := newHandler(t, registrytest.Options{Stages: raws})
	var hid atomic.Int64 // pages the hidden stage was cut from
	p := newSpoilingProxy(t, h, registrytest.NeverSettle(h, hidden, "active", func() { hid.Add(1) }).ServeHTTP)
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, p.url)

	p.spoil.Store(true)
	r := runMirror(t, env, "sync", "--db", db, "--registry", p.url)
	if hid.Load() == 0 {
		t.Fatal("the proxy never hid the stage: nothing was tested")
	}
	if r.code != exitPartial {
		t.Fatalf("a sync whose drift never settles: want exit %d, got %s", exitPartial, r)
	}
	if !strings.Contains(r.stdout, "drift NOT resolved") || !strings.Contains(r.stdout, "1 kept") ||
		!strings.Contains(r.stdout, "0 removed") {
		t.Errorf("summary line: %s", r)
	}
	for _, want := range []string{"kept from the last snapshot", "partial sync:", "drift unresolved"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	id := stageField(t, hidden, "id")
	got := runMirror(t, env, "get", "--db", db, id)
	if got.code != exitOK || got.stdout != string(hidden)+"\n" {
		t.Errorf("mirror get %s of the hidden stage: %s", id, got)
	}
	if st := statusOf(t, env, db); st.Total != 85 {
		t.Errorf("the mirror holds %d stages, want 85", st.Total)
	}
}

// repeatLastPage makes h's answer to a listing page of active stages at
// offset 200 repeat that page's first stage at its end, while *left > 0;
// it counts the pages it spoilt in *done.
func repeatLastPage(h http.Handler, left, done *atomic.Int64) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.URL.Path != "/stages" || q.Get("lifecycle") != "active" || q.Get("offset") != "200" || left.Add(-1) < 0 {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var page struct {
			Result struct {
				Stages []json.RawMessage `json:"stages"`
			} `json:"result"`
		}
		if err := json.Unmarshal(body, &page); err == nil && len(page.Result.Stages) > 0 {
			end := bytes.LastIndexByte(body, ']') // of the stages array: {"ok":…,"result":{"stages":[…],"total":N}}
			body = slices.Concat(body[:end], []byte(","), page.Result.Stages[0], body[end:])
			done.Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		w.Write(body)
	}
}

// TestSafetyRepeatedStages: a listing page that repeats a stage is drift,
// not a new stage: once, it is repaired by relisting (exit 0, nothing
// changed); for ever, the sync ends partial (exit 3) and removes nothing.
func TestSafetyRepeatedStages(t *testing.T) {
	t.Parallel()
	h := newHandler(t, registrytest.Options{Stages: stdlibRaw(t), Generate: 300, StageSize: 100})
	var left, done atomic.Int64
	p := newSpoilingProxy(t, h, repeatLastPage(h, &left, &done))
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, p.url)
	before := statusOf(t, env, db)
	p.spoil.Store(true)

	left.Store(1)
	r := runMirror(t, env, "sync", "--json", "--db", db, "--registry", p.url)
	var rep struct {
		Outcome string `json:"outcome"`
		Total   int    `json:"total"`
		Added   int    `json:"added"`
		Removed int    `json:"removed"`
		Drift   struct {
			Detected   bool     `json:"detected"`
			Reasons    []string `json:"reasons"`
			Relists    int      `json:"relists"`
			Unresolved bool     `json:"unresolved"`
		} `json:"drift"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitOK || rep.Outcome != "unchanged" ||
		rep.Total != before.Total || rep.Added+rep.Removed != 0 || !rep.Drift.Detected || rep.Drift.Unresolved || rep.Drift.Relists != 1 ||
		!strings.Contains(strings.Join(rep.Drift.Reasons, "\n"), "active listing repeated 1 stages") {
		t.Errorf("a page repeating a stage once (%v): %+v\n%s", err, rep, r)
	}
	if done.Load() != 1 {
		t.Fatalf("the proxy repeated a stage in %d pages, want 1", done.Load())
	}

	left.Store(1 << 40)
	r = runMirror(t, env, "sync", "--db", db, "--registry", p.url)
	if r.code != exitPartial || !strings.Contains(r.stdout, "drift NOT resolved") || !strings.Contains(r.stdout, "0 removed") {
		t.Errorf("pages that always repeat a stage: want exit %d, drift NOT resolved and nothing removed, got %s", exitPartial, r)
	}
	// (Both count as syncs: last_sync moves on.)
	if st := statusOf(t, env, db); st.Generation != before.Generation || st.Digest != before.Digest || st.Total != before.Total {
		t.Errorf("syncs through a repeating proxy changed the mirror: generation %d→%d, total %d→%d", before.Generation, st.Generation, before.Total, st.Total)
	}
}

// TestSafetyTrustedKeysLoss: a sync with --trusted-keys that would take
// away stages the mirror serves (their signer is not listed) loses them
// to quarantine: the loss guard refuses it (exit 6) like a removal;
// --max-remove accepts it, and then those stages are quarantined (exit 3)
// and no longer served.
func TestSafetyTrustedKeysLoss(t *testing.T) {
	t.Parallel()
	fake := newFake(t, registrytest.Options{Stages: stdlibRaw(t), Generate: 10, Seed: 9, StageSize: 200})
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, fake.URL())
	before := statusOf(t, env, db)
	if before.Total != 95 {
		t.Fatalf("first sync: %d stages", before.Total)
	}
	// Trust the generated stages' signer only: the 85 stdlib stages go.
	pub := registrytest.GeneratedKey(9).Public().(ed25519.PublicKey)
	trusted := filepath.Join(t.TempDir(), "trusted-keys")
	if err := os.WriteFile(trusted, []byte("gen "+hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runMirror(t, env, "sync", "--json", "--trusted-keys", trusted, "--db", db, "--registry", fake.URL())
	var rep struct {
		Outcome string `json:"outcome"`
		Refusal *struct {
			WouldRemove      int    `json:"would_remove"`
			LostToQuarantine int    `json:"lost_to_quarantine"`
			Reason           string `json:"reason"`
		} `json:"refusal"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitRefused || rep.Outcome != "refused" || rep.Refusal == nil ||
		rep.Refusal.WouldRemove != 85 || rep.Refusal.LostToQuarantine != 85 ||
		!strings.Contains(rep.Refusal.Reason, "85 stages the mirror serves now fail verification or the trust policy") {
		t.Errorf("a trust policy that drops 85 of 95 served stages (%v): want exit %d and a refusal, got %+v\n%s", err, exitRefused, rep.Refusal, r)
	}
	sameSnapshot(t, "a refused sync", before, statusOf(t, env, db))

	r = runMirror(t, env, "sync", "--max-remove", "100%", "--trusted-keys", trusted, "--db", db, "--registry", fake.URL())
	if r.code != exitPartial || !strings.Contains(r.stderr, "85 stages quarantined") {
		t.Errorf("accepting it: want exit %d with 85 quarantined, got %s", exitPartial, r)
	}
	if st := statusOf(t, env, db); st.Total != 10 || st.Quarantined != 85 {
		t.Errorf("after accepting: %d stages, %d quarantined", st.Total, st.Quarantined)
	}
	if r := runMirror(t, env, "get", "--db", db, "list_length"); r.code != exitError {
		t.Errorf("a stage of an untrusted signer is still served: %s", r)
	}
}

// TestSafetyUpstreamSwitch: syncing a mirror of A from B warns on stderr
// even with -q; status says where it was switched from, and when.
func TestSafetyUpstreamSwitch(t *testing.T) {
	t.Parallel()
	a := startFake(t)
	b := startFake(t, "--generate", "10", "--stage-size", "200")
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	mustSyncBin(t, env, db, a.URL)

	r := runMirror(t, env, "sync", "-q", "--max-remove", "100%", "--db", db, "--registry", b.URL)
	want := "warning: the mirror was synced from " + a.URL + "; this sync replaced its content with " + b.URL + "'s\n"
	if r.code != exitOK || r.stdout != "" || r.stderr != want {
		t.Errorf("sync -q from another upstream: want exit 0, no stdout and exactly %q on stderr, got %s", want, r)
	}
	text := runMirror(t, env, "status", "--db", db)
	if !strings.Contains(text.stdout, "switched from "+a.URL+" at ") {
		t.Errorf("status text should show the switch:\n%s", text)
	}
	st := statusOf(t, env, db)
	since, err := time.Parse(time.RFC3339, st.UpstreamSince)
	if st.Upstream != b.URL || st.PreviousUpstream != a.URL || err != nil || time.Since(since) > time.Hour || st.Total != 95 {
		t.Errorf("status --json: upstream %q, previous_upstream %q, upstream_since %q (%v), total %d",
			st.Upstream, st.PreviousUpstream, st.UpstreamSince, err, st.Total)
	}
	// A second sync from B is not a switch: no warning.
	if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", b.URL); r.code != exitOK || r.stdout+r.stderr != "" {
		t.Errorf("a second sync from the same upstream: %s", r)
	}
}

// TestSafetyImportRollbackAcrossUpstreams: a bundle of upstream X synced
// before the mirror's last sync of upstream Y is a rollback: refused
// (exit 1, naming both upstreams and --force) unless --force.
func TestSafetyImportRollbackAcrossUpstreams(t *testing.T) {
	t.Parallel()
	raws := stdlibRaw(t)
	x := newFake(t, registrytest.Options{Stages: raws[:30]})
	y := newFake(t, registrytest.Options{Stages: raws[30:]})
	env := baseEnv(t)
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.db"), filepath.Join(dir, "dst.db")
	mustSyncBin(t, env, src, x.URL())
	bundleFile := filepath.Join(dir, "x.bundle.gz")
	if r := runMirror(t, env, "export", "-q", "--db", src, bundleFile); r.code != exitOK {
		t.Fatalf("export: %s", r)
	}
	// Later, and from elsewhere.
	waitFor(t, "the clock to move on", 5*time.Second, func() bool {
		ls, err := time.Parse(time.RFC3339, statusOf(t, env, src).LastSync)
		return err == nil && time.Since(ls) > 1100*time.Millisecond
	})
	mustSyncBin(t, env, dst, y.URL())
	before := statusOf(t, env, dst)

	r := runMirror(t, env, "import", "--db", dst, bundleFile)
	if r.code != exitError {
		t.Fatalf("import of an older bundle of another upstream: want exit %d, got %s", exitError, r)
	}
	for _, want := range []string{"a sync of " + x.URL(), "newer sync of " + y.URL(), "roll the mirror back", "--force"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r)
		}
	}
	sameSnapshot(t, "a refused import", before, statusOf(t, env, dst))

	r = runMirror(t, env, "import", "--force", "--db", dst, bundleFile)
	if r.code != exitOK || !strings.Contains(r.stderr, "installed an older bundle (--force)") || !strings.Contains(r.stdout, "imported") {
		t.Fatalf("import --force: %s", r)
	}
	st := statusOf(t, env, dst)
	if st.Upstream != x.URL() || st.Total != 30 || st.Generation <= before.Generation {
		t.Errorf("after import --force: upstream %q, total %d, generation %d", st.Upstream, st.Total, st.Generation)
	}
	if r := runMirror(t, env, "verify", "-q", "--db", dst); r.code != exitOK {
		t.Errorf("verify after import --force: %s", r)
	}
}
