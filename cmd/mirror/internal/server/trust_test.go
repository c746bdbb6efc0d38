package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// trustKey is a deterministic Ed25519 key for tests.
func trustKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("server-trust-test-" + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func pubHex(k ed25519.PrivateKey) string { return hex.EncodeToString(k.Public().(ed25519.PublicKey)) }

// trustPolicy parses a policy trusting keys by name.
func trustPolicy(t testing.TB, keys map[string]ed25519.PrivateKey) *store.TrustPolicy {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test policy\n")
	for name, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", name, pubHex(k))
	}
	p, err := store.ParseTrustPolicy(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// mint builds a stage signed by key (nil: unsigned) in lifecycle l.
func mint(t testing.TB, key ed25519.PrivateKey, name string, l store.Lifecycle) *store.Stage {
	t.Helper()
	st, err := store.BuildStage(store.StageSpec{
		Name:               name,
		Description:        "trust test stage " + name,
		Input:              json.RawMessage(`{"kind":"Text"}`),
		Output:             json.RawMessage(`{"kind":"Number"}`),
		Effects:            []store.Effect{{Kind: store.EffectPure}},
		ImplementationCode: "return len(" + name + ")",
		Lifecycle:          l,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// trustFixture is a snapshot's worth of stages signed by a trusted key
// ("ops"), by an untrusted one ("stranger"), and unsigned, in every
// lifecycle, plus the 85 stdlib stages (signed by the public stdlib key,
// which the policy does not list).
type trustFixture struct {
	raws      [][]byte
	trusted   *memSnapshot // what the server must serve: the trusted stages alone
	untrusted []*store.Stage
	policy    *store.TrustPolicy
}

func newTrustFixture(t testing.TB, prefix string, n int) trustFixture {
	t.Helper()
	ops, stranger := trustKey("ops"), trustKey("stranger")
	var f trustFixture
	var trustedRaws [][]byte
	var succ store.StageID
	lcs := func(i int) store.Lifecycle {
		switch i % 7 {
		case 1:
			return store.Draft
		case 2:
			if succ != "" {
				return store.Deprecated(succ)
			}
		case 3:
			return store.Tombstone
		}
		return store.Active
	}
	for i := range n {
		st := mint(t, ops, fmt.Sprintf("%s_trusted_%d", prefix, i), lcs(i))
		if succ == "" && st.Lifecycle.Kind == store.LifecycleActive {
			succ = st.ID
		}
		trustedRaws = append(trustedRaws, st.Raw)
		for _, key := range []ed25519.PrivateKey{stranger, nil} {
			if i%3 == 0 {
				u := mint(t, key, fmt.Sprintf("%s_other_%d_%t", prefix, i, key == nil), lcs(i))
				f.untrusted = append(f.untrusted, u)
			}
		}
	}
	f.raws = append(f.raws, trustedRaws...)
	for _, u := range f.untrusted {
		f.raws = append(f.raws, u.Raw)
	}
	for _, raw := range fixtureRaws(t) {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		f.untrusted = append(f.untrusted, st)
		f.raws = append(f.raws, raw)
	}
	f.trusted = newMemSnapshot(t, Info{}, trustedRaws)
	f.policy = trustPolicy(t, map[string]ed25519.PrivateKey{"ops": ops, "alice": trustKey("alice")})
	return f
}

// countingSource wraps a Source and counts the Page, GetRaw and Stats
// calls its snapshots answer.
type countingSource struct {
	Source
	pages, gets, stats atomic.Int64
}

func (c *countingSource) Acquire() (Snapshot, error) {
	sn, err := c.Source.Acquire()
	if err != nil {
		return nil, err
	}
	return &countingSnapshot{Snapshot: sn, c: c}, nil
}

type countingSnapshot struct {
	Snapshot
	c *countingSource
}

func (s *countingSnapshot) Page(ctx context.Context, k store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	s.c.pages.Add(1)
	return s.Snapshot.Page(ctx, k, offset, limit)
}

func (s *countingSnapshot) GetRaw(ctx context.Context, id store.StageID) ([]byte, error) {
	s.c.gets.Add(1)
	return s.Snapshot.GetRaw(ctx, id)
}

func (s *countingSnapshot) Stats(ctx context.Context) (store.Stats, error) {
	s.c.stats.Add(1)
	return s.Snapshot.Stats(ctx)
}

// healthMirror is /health's "mirror" object as a client decodes it.
type healthMirror struct {
	Generation  uint64 `json:"generation"`
	Quarantined int    `json:"quarantined"`
	Untrusted   *int   `json:"untrusted"`
}

func getHealth(t testing.TB, h http.Handler) (store.Stats, healthMirror, string) {
	t.Helper()
	rec := do(t, h, "GET", "/health")
	if rec.Code != 200 {
		t.Fatalf("health: %d %s", rec.Code, rec.Body)
	}
	var res struct {
		Store  store.Stats  `json:"store"`
		Mirror healthMirror `json:"mirror"`
	}
	if err := json.Unmarshal(decodeEnvelope(t, rec).Result, &res); err != nil {
		t.Fatal(err)
	}
	return res.Store, res.Mirror, rec.Body.String()
}

func statsJSON(t testing.TB, st store.Stats) string {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricsSamples scrapes /metrics into name{labels} → value.
func metricsSamples(t testing.TB, h http.Handler) map[string]string {
	t.Helper()
	out := map[string]string{}
	for line := range strings.SplitSeq(do(t, h, "GET", "/metrics").Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("metrics line does not parse: %q", line)
		}
		out[m[1]+m[2]] = m[3]
	}
	return out
}

func TestTrustServesOnlyTrustedStages(t *testing.T) {
	f := newTrustFixture(t, "a", 60)
	snap := newMemSnapshot(t, testInfo(5), f.raws)
	mem := newMemSource(snap)
	src := &countingSource{Source: mem}
	h := newTestServer(t, src, Options{Trust: f.policy}).Handler()
	want := f.trusted

	for _, kind := range []store.LifecycleKind{store.LifecycleUnknown, store.LifecycleDraft, store.LifecycleActive, store.LifecycleDeprecated, store.LifecycleTombstone} {
		all := want.byKind[kind]
		if len(all) < 4 {
			t.Fatalf("fixture has only %d trusted %s stages", len(all), kind.Name())
		}
		lc := ""
		if kind != store.LifecycleUnknown {
			lc = "lifecycle=" + kind.Name() + "&"
		}
		for _, pg := range []struct{ offset, limit int }{{0, 200}, {0, 3}, {2, 2}, {len(all) - 1, 5}, {len(all), 5}, {1 << 30, 5}, {0, 0}} {
			q := fmt.Sprintf("/stages?%slimit=%d&offset=%d", lc, pg.limit, pg.offset)
			rec := do(t, h, "GET", q)
			if rec.Code != 200 {
				t.Fatalf("%s: %d %s", q, rec.Code, rec.Body)
			}
			decodeEnvelope(t, rec)
			lo, hi := min(pg.offset, len(all)), min(pg.offset+pg.limit, len(all))
			if got, want := rec.Body.String(), listBody(all[lo:hi], len(all)); got != want {
				t.Fatalf("%s: body\n got %.300s\nwant %.300s", q, got, want)
			}
		}
	}

	// Trusted stages are served byte for byte; the others do not exist.
	for _, st := range want.stages {
		rec := do(t, h, "GET", "/stages/"+string(st.ID))
		if rec.Code != 200 || rec.Body.String() != `{"ok":true,"result":`+string(st.Raw)+`}` {
			t.Fatalf("trusted stage %s: %d, body is not its exact bytes", st.ID, rec.Code)
		}
	}
	absentMsg := wantError(t, do(t, h, "GET", "/stages/"+strings.Repeat("e", 64)), 404, CodeNotFound)
	var unsigned, stranger int
	for _, st := range f.untrusted {
		if st.SignerPublicKey == "" {
			unsigned++
		} else if st.SignerPublicKey == pubHex(trustKey("stranger")) {
			stranger++
		}
		msg := wantError(t, do(t, h, "GET", "/stages/"+string(st.ID)), 404, CodeNotFound)
		if msg != strings.ReplaceAll(absentMsg, strings.Repeat("e", 64), string(st.ID)) {
			t.Errorf("a held-back stage is answered differently from an absent one: %q vs %q", msg, absentMsg)
		}
		if rec := do(t, h, "GET", "/stages/"+string(st.ID), "If-None-Match", "*"); rec.Code != 404 {
			t.Errorf("held-back stage with If-None-Match: %d", rec.Code)
		}
	}
	if unsigned == 0 || stranger == 0 {
		t.Fatalf("fixture lacks unsigned (%d) or stranger-signed (%d) stages", unsigned, stranger)
	}

	// /health and /metrics count the trusted stages alone and add the
	// held-back ones to the quarantine figures.
	stats, mi, _ := getHealth(t, h)
	if got, want := statsJSON(t, stats), statsJSON(t, want.computeStats()); got != want {
		t.Errorf("health store stats\n got %s\nwant %s", got, want)
	}
	nu := len(f.untrusted)
	if mi.Untrusted == nil || *mi.Untrusted != nu || mi.Quarantined != snap.info.Quarantined+nu {
		t.Errorf("health mirror %+v (untrusted %v), want quarantined %d, untrusted %d", mi, mi.Untrusted, snap.info.Quarantined+nu, nu)
	}
	samples := metricsSamples(t, h)
	wantSamples := map[string]string{
		`mirror_quarantined_stages`: strconv.Itoa(snap.info.Quarantined + nu),
		`mirror_untrusted_stages`:   strconv.Itoa(nu),
	}
	for _, k := range store.AllLifecycleKinds() {
		wantSamples[`mirror_stages{lifecycle="`+k.Name()+`"}`] = strconv.Itoa(len(want.byKind[k]))
	}
	for k, v := range wantSamples {
		if samples[k] != v {
			t.Errorf("%s = %q, want %s", k, samples[k], v)
		}
	}

	// The listing was read once, in chunks, for every request above; the
	// snapshot's own (unfiltered) stats were never asked for.
	if got, want := src.pages.Load(), int64((len(f.raws)+trustChunk-1)/trustChunk); got != want {
		t.Errorf("Snapshot.Page called %d times, want %d (one pass over the listing)", got, want)
	}
	if n := src.stats.Load(); n != 0 {
		t.Errorf("Snapshot.Stats called %d times under a trust policy", n)
	}
	// A page costs one GetRaw per stage returned, whatever the offset.
	before := src.gets.Load()
	do(t, h, "GET", fmt.Sprintf("/stages?limit=3&offset=%d", len(want.stages)-3))
	if n := src.gets.Load() - before; n != 3 {
		t.Errorf("a 3-stage page at the end made %d GetRaw calls", n)
	}
	if n := mem.open.Load(); n != 0 {
		t.Errorf("%d snapshots left pinned", n)
	}
}

// TestTrustWithoutPolicyUnchanged: without a policy the health body has
// no "untrusted" member and /metrics no mirror_untrusted_stages, and the
// ETags differ from those under a policy.
func TestTrustWithoutPolicyUnchanged(t *testing.T) {
	f := newTrustFixture(t, "b", 10)
	snap := newMemSnapshot(t, testInfo(3), f.raws)
	plain := newTestServer(t, newMemSource(snap), Options{}).Handler()
	trusted := newTestServer(t, newMemSource(snap), Options{Trust: f.policy}).Handler()
	other := newTestServer(t, newMemSource(snap), Options{Trust: trustPolicy(t, map[string]ed25519.PrivateKey{"stranger": trustKey("stranger")})}).Handler()
	_, mi, body := getHealth(t, plain)
	if mi.Untrusted != nil || strings.Contains(body, "untrusted") || mi.Quarantined != snap.info.Quarantined {
		t.Errorf("health without a policy: %s", body)
	}
	if _, ok := metricsSamples(t, plain)["mirror_untrusted_stages"]; ok {
		t.Error("mirror_untrusted_stages exported without a policy")
	}
	for _, target := range []string{"/stages?lifecycle=active", "/health"} {
		e0 := do(t, plain, "GET", target).Header().Get("ETag")
		e1 := do(t, trusted, "GET", target).Header().Get("ETag")
		e2 := do(t, other, "GET", target).Header().Get("ETag")
		if e0 == e1 || e1 == e2 || e0 == e2 {
			t.Errorf("%s: ETags do not tell the policies apart: %s %s %s", target, e0, e1, e2)
		}
		if rec := do(t, trusted, "GET", target, "If-None-Match", e0); rec.Code != 200 {
			t.Errorf("%s: the unfiltered answer's ETag revalidated the filtered one", target)
		}
		if rec := do(t, trusted, "GET", target, "If-None-Match", e1); rec.Code != 304 {
			t.Errorf("%s: own ETag answered %d", target, rec.Code)
		}
	}
}

// TestTrustNoetherClientPaging: noether's refresh loop sees every trusted
// active stage exactly once, across more stages than one build chunk.
func TestTrustNoetherClientPaging(t *testing.T) {
	f := newTrustFixture(t, "c", 1_500)
	if len(f.raws) <= 2*trustChunk {
		t.Fatalf("only %d stages: the listing must span several build chunks", len(f.raws))
	}
	wantActive := f.trusted.ids(store.LifecycleActive)
	srv := httptest.NewServer(newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(1), f.raws)), Options{Trust: f.policy}).Handler())
	defer srv.Close()
	seen, pages := replayNoetherRefresh(t, srv.URL)
	if len(seen) != len(wantActive) {
		t.Fatalf("saw %d active stages, want %d", len(seen), len(wantActive))
	}
	for _, id := range wantActive {
		if seen[id] != 1 {
			t.Fatalf("trusted active stage %s seen %d times", id, seen[id])
		}
	}
	if want := (len(wantActive) + 199) / 200; pages != want {
		t.Errorf("%d pages, want %d", pages, want)
	}
}

// TestTrustNewSnapshotRefreshes: a new generation, or the same one with a
// different digest, gets its own filtered view.
func TestTrustNewSnapshotRefreshes(t *testing.T) {
	f1 := newTrustFixture(t, "d", 20)
	src := newMemSource(newMemSnapshot(t, testInfo(1), f1.raws))
	h := newTestServer(t, src, Options{Trust: f1.policy}).Handler()
	check := func(step string, want *memSnapshot, untrusted int) {
		t.Helper()
		all := want.byKind[store.LifecycleUnknown]
		if got, w := do(t, h, "GET", "/stages?limit=200").Body.String(), listBody(all, len(all)); got != w {
			t.Fatalf("%s: page\n got %.300s\nwant %.300s", step, got, w)
		}
		stats, mi, _ := getHealth(t, h)
		if got, w := statsJSON(t, stats), statsJSON(t, want.computeStats()); got != w {
			t.Errorf("%s: stats\n got %s\nwant %s", step, got, w)
		}
		if mi.Untrusted == nil || *mi.Untrusted != untrusted {
			t.Errorf("%s: untrusted %v, want %d", step, mi.Untrusted, untrusted)
		}
	}
	check("first", f1.trusted, len(f1.untrusted))
	first, err := store.DecodeStage(f1.raws[0]) // trusted, absent from the next snapshot
	if err != nil {
		t.Fatal(err)
	}
	gone := first.ID

	// A new generation with different content.
	f2 := newTrustFixture(t, "e", 12)
	src.publish(newMemSnapshot(t, testInfo(2), f2.raws))
	check("new generation", f2.trusted, len(f2.untrusted))
	wantError(t, do(t, h, "GET", "/stages/"+string(gone)), 404, CodeNotFound)

	// The same generation with another digest is another snapshot too.
	raws3 := append(slices.Clone(f2.raws), f1.raws[0])
	info := testInfo(2)
	info.Digest = strings.Repeat("9", 64)
	src.publish(newMemSnapshot(t, info, raws3))
	want3 := newMemSnapshot(t, Info{}, append(slices.Clone(f2.trusted.byKind[store.LifecycleUnknown]), f1.raws[0]))
	check("new digest", want3, len(f2.untrusted))
	if rec := do(t, h, "GET", "/stages/"+string(gone)); rec.Code != 200 {
		t.Errorf("a trusted stage of the new snapshot answered %d", rec.Code)
	}
}

// brokenListing is a snapshot whose listing breaks the Snapshot contract
// or fails.
type brokenListing struct {
	*memHandle
	reversed bool
	junk     []byte // appended to the listing when set
}

func (b *brokenListing) Page(ctx context.Context, k store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	raws, total, err := b.memHandle.Page(ctx, k, offset, limit)
	if err != nil {
		return nil, 0, err
	}
	if b.reversed {
		raws = slices.Clone(raws)
		slices.Reverse(raws)
	}
	if b.junk != nil {
		if offset+len(raws) >= total && len(raws) < limit {
			raws = append(slices.Clone(raws), b.junk)
		}
		total++
	}
	return raws, total, nil
}

type brokenSource struct {
	*memSource
	wrap func(*memHandle) Snapshot
}

func (s *brokenSource) Acquire() (Snapshot, error) {
	sn, err := s.memSource.Acquire()
	if err != nil {
		return nil, err
	}
	return s.wrap(sn.(*memHandle)), nil
}

func TestTrustViewFailures(t *testing.T) {
	f := newTrustFixture(t, "f", 8)
	id := string(f.trusted.stages[0].ID)

	t.Run("page error is not cached", func(t *testing.T) {
		snap := newMemSnapshot(t, testInfo(1), f.raws)
		snap.pageErr = errors.New("bbolt: page 3 corrupt")
		src := newMemSource(snap)
		var logs bytes.Buffer
		h := newTestServer(t, src, Options{Trust: f.policy, Logger: slogJSON(&logs)}).Handler()
		for _, p := range []string{"/stages", "/stages/" + id, "/health"} {
			msg := wantError(t, do(t, h, "GET", p), 500, CodeInternal)
			if strings.Contains(msg, "bbolt") {
				t.Errorf("internal error leaked: %q", msg)
			}
		}
		if rec := do(t, h, "GET", "/metrics"); rec.Code != 200 || strings.Contains(rec.Body.String(), "mirror_stages{") {
			t.Errorf("metrics with no view: %d %s", rec.Code, rec.Body)
		}
		if !strings.Contains(logs.String(), "bbolt: page 3 corrupt") {
			t.Errorf("the cause was not logged: %s", logs.String())
		}
		snap.pageErr = nil // same snapshot, healed: the next request retries
		if rec := do(t, h, "GET", "/stages/"+id); rec.Code != 200 {
			t.Errorf("after the error cleared: %d", rec.Code)
		}
		if src.open.Load() != 0 {
			t.Error("snapshot left pinned")
		}
	})

	t.Run("listing out of order", func(t *testing.T) {
		src := &brokenSource{memSource: newMemSource(newMemSnapshot(t, testInfo(1), f.raws)),
			wrap: func(h *memHandle) Snapshot { return &brokenListing{memHandle: h, reversed: true} }}
		var logs bytes.Buffer
		h := newTestServer(t, src, Options{Trust: f.policy, Logger: slogJSON(&logs)}).Handler()
		wantError(t, do(t, h, "GET", "/stages"), 500, CodeInternal)
		if !strings.Contains(logs.String(), errListingOrder.Error()) {
			t.Errorf("log does not name the broken order: %s", logs.String())
		}
	})

	t.Run("undecodable stage is held back", func(t *testing.T) {
		src := &brokenSource{memSource: newMemSource(newMemSnapshot(t, testInfo(1), f.raws)),
			wrap: func(h *memHandle) Snapshot { return &brokenListing{memHandle: h, junk: []byte(`{"id":"nope"}`)} }}
		var logs bytes.Buffer
		h := newTestServer(t, src, Options{Trust: f.policy, Logger: slogJSON(&logs)}).Handler()
		all := f.trusted.byKind[store.LifecycleUnknown]
		if got, want := do(t, h, "GET", "/stages?limit=200").Body.String(), listBody(all, len(all)); got != want {
			t.Errorf("page with an undecodable stage in the listing:\n got %.200s\nwant %.200s", got, want)
		}
		_, mi, _ := getHealth(t, h)
		if mi.Untrusted == nil || *mi.Untrusted != len(f.untrusted)+1 {
			t.Errorf("untrusted %v, want %d (the undecodable stage counts)", mi.Untrusted, len(f.untrusted)+1)
		}
		if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "does not decode") {
			t.Errorf("undecodable stage not logged: %s", logs.String())
		}
	})
}

// TestTrustConcurrentFirstRequests: many requests for a new snapshot
// share one build of its view, and a request whose client leaves while it
// waits for the build gives up at once.
func TestTrustConcurrentFirstRequests(t *testing.T) {
	f := newTrustFixture(t, "g", 30)
	snap := newMemSnapshot(t, testInfo(1), f.raws)
	snap.block = make(chan struct{})
	mem := newMemSource(snap)
	src := &countingSource{Source: mem}
	h := newTestServer(t, src, Options{Trust: f.policy}).Handler()
	all := f.trusted.byKind[store.LifecycleUnknown]

	var wg sync.WaitGroup
	const n = 16
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/stages?limit=200", nil))
			bodies[i] = rec.Body.String()
		})
	}
	await(t, snap.waiting, "the view build to call Page")
	// The build is stuck in Page: a request whose client has gone does
	// not wait for it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/stages/"+string(f.trusted.stages[0].ID), nil).WithContext(ctx))
	if rec.Code != 499 {
		t.Errorf("cancelled request waiting for the build answered %d", rec.Code)
	}
	close(snap.block)
	wg.Wait()
	for i, b := range bodies {
		if b != listBody(all, len(all)) {
			t.Fatalf("request %d: %.200s", i, b)
		}
	}
	if got := src.pages.Load(); got != 1 {
		t.Errorf("Page called %d times for %d concurrent first requests, want 1 build", got, n)
	}
	if mem.open.Load() != 0 {
		t.Error("snapshot left pinned")
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTrustServeWarmsAndStops: Serve applies the policy before the first
// request, and a shutdown cancels a build still running.
func TestTrustServeWarmsAndStops(t *testing.T) {
	f := newTrustFixture(t, "h", 10)
	t.Run("warm", func(t *testing.T) {
		mem := newMemSource(newMemSnapshot(t, testInfo(4), f.raws))
		src := &countingSource{Source: mem}
		var logs syncBuffer
		s := newTestServer(t, src, Options{Trust: f.policy, Logger: slogJSON(&logs)})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, ln) }()
		eventually(t, "Serve to build the trust view without a request", func() bool {
			return strings.Contains(logs.String(), "trust policy applied")
		})
		if !strings.Contains(logs.String(), fmt.Sprintf(`"served":%d,"untrusted":%d`, len(f.trusted.stages), len(f.untrusted))) {
			t.Errorf("build log lacks the counts: %s", logs.String())
		}
		pages := src.pages.Load()
		resp, err := http.Get("http://" + ln.Addr().String() + "/stages?limit=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || src.pages.Load() != pages {
			t.Errorf("first request: %d, Page calls %d → %d (the warmed view was not used)", resp.StatusCode, pages, src.pages.Load())
		}
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v", err)
		}
		if mem.open.Load() != 0 {
			t.Error("snapshot left pinned")
		}
	})
	t.Run("shutdown cancels the build", func(t *testing.T) {
		snap := newMemSnapshot(t, testInfo(4), f.raws)
		snap.block = make(chan struct{}) // never closed: Page waits for its context
		mem := newMemSource(snap)
		s := newTestServer(t, mem, Options{Trust: f.policy, ShutdownTimeout: time.Second})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, ln) }()
		await(t, snap.waiting, "Serve's view build to hold the snapshot")
		cancel()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return while the view was being built")
		}
		if mem.open.Load() != 0 {
			t.Error("Serve returned with the warming snapshot still pinned")
		}
	})
}

// TestTrustFromMirror: the policy over a real mirror snapshot.
func TestTrustFromMirror(t *testing.T) {
	f := newTrustFixture(t, "i", 40)
	m, err := mirror.Create(filepath.Join(t.TempDir(), "mirror.db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	publishMirror(t, m, f.raws, 1, fixedNow)
	h := newTestServer(t, FromMirror(m), Options{Trust: f.policy}).Handler()
	for _, kind := range append(store.AllLifecycleKinds(), store.LifecycleUnknown) {
		q := "/stages?limit=200"
		if kind != store.LifecycleUnknown {
			q += "&lifecycle=" + kind.Name()
		}
		want := f.trusted.byKind[kind]
		if got := do(t, h, "GET", q).Body.String(); got != listBody(want, len(want)) {
			t.Fatalf("%s: mirror page differs from the trusted stages:\n got %.200s", q, got)
		}
	}
	for _, st := range f.untrusted[:5] {
		wantError(t, do(t, h, "GET", "/stages/"+string(st.ID)), 404, CodeNotFound)
	}
	_, mi, _ := getHealth(t, h)
	if mi.Quarantined != 1+len(f.untrusted) || mi.Untrusted == nil || *mi.Untrusted != len(f.untrusted) {
		t.Errorf("health mirror %+v", mi)
	}
}
