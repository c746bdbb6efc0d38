package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

const immutableCC = "public, max-age=31536000, immutable"

// onlyIn returns a stage id of a that b does not hold.
func onlyIn(t testing.TB, a, b *memSnapshot) string {
	t.Helper()
	for _, st := range a.stages {
		if _, ok := b.raw[st.ID]; !ok {
			return string(st.ID)
		}
	}
	t.Fatal("no stage only in the first snapshot")
	return ""
}

// pinnedServer is a server over historyFixture, released at the end of
// the test, which also checks no snapshot stays pinned.
func pinnedServer(t *testing.T, opts Options) (*Server, *memHistory, []*memSnapshot) {
	t.Helper()
	src, snaps := historyFixture(t)
	s := newTestServer(t, src, opts)
	t.Cleanup(func() {
		s.ReleasePinned()
		if n := src.open.Load(); n != 0 {
			t.Errorf("%d snapshots still pinned after ReleasePinned", n)
		}
	})
	return s, src, snaps
}

func TestPinnedReads(t *testing.T) {
	s, _, snaps := pinnedServer(t, Options{})
	h := s.Handler()
	g3, g4, g5, g6 := snaps[0], snaps[1], snaps[2], snaps[3]
	active4 := g4.byKind[store.LifecycleActive]
	stage := func(sn *memSnapshot, id string) string {
		return `{"ok":true,"result":` + string(sn.raw[store.StageID(id)]) + `}`
	}
	only3 := onlyIn(t, g3, g6)
	only6 := onlyIn(t, g6, g4)
	var draft5 string
	for _, st := range g5.stages {
		if st.Lifecycle.Kind == store.LifecycleDraft {
			draft5 = string(st.ID)
			break
		}
	}
	tests := []struct {
		path string
		body string
	}{
		{"/at/4/stages?lifecycle=active&limit=200&offset=0", listBody(active4, len(active4))},
		{"/at/4/stages?lifecycle=active&limit=10&offset=5", listBody(active4[5:15], len(active4))},
		{"/at/4/stages", listBody(g4.byKind[store.LifecycleUnknown][:50], len(g4.stages))},
		{"/at/3/stages?lifecycle=draft", listBody(g3.byKind[store.LifecycleDraft], len(g3.byKind[store.LifecycleDraft]))},
		{"/at/6/stages?lifecycle=draft", listBody(nil, 0)}, // 6 made every draft active
		{"/at/5/stages?limit=200&offset=200", listBody(g5.byKind[store.LifecycleUnknown][200:], len(g5.stages))},
		{"/at/3/stages/" + only3, stage(g3, only3)},
		{"/at/6/stages/" + only6, stage(g6, only6)},
		{"/at/5/stages/" + draft5, stage(g5, draft5)}, // a draft in 5, active in 6
		{"/at/6/stages/" + draft5, stage(g6, draft5)},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := do(t, h, "GET", tt.path)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			decodeEnvelope(t, rec)
			if got := rec.Body.String(); got != tt.body {
				t.Fatalf("body differs:\n got %.300s\nwant %.300s", got, tt.body)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != immutableCC {
				t.Errorf("Cache-Control = %q, want %q", cc, immutableCC)
			}
			if !strings.HasPrefix(rec.Header().Get("ETag"), `"g`) {
				t.Errorf("ETag = %q, want a strong one", rec.Header().Get("ETag"))
			}
		})
	}
	if stage(g5, draft5) == stage(g6, draft5) {
		t.Fatal("fixture: the draft's bytes did not change between 5 and 6")
	}
	// The root still answers from the current generation.
	if got, want := do(t, h, "GET", "/stages?lifecycle=draft").Body.String(), listBody(nil, 0); got != want {
		t.Errorf("root drafts: %.200s", got)
	}
	wantError(t, do(t, h, "GET", "/stages/"+only3), 404, CodeNotFound)
}

func TestPinnedNotFound(t *testing.T) {
	s, _, snaps := pinnedServer(t, Options{})
	h := s.Handler()
	only6 := onlyIn(t, snaps[3], snaps[1])
	tests := []struct {
		path string
		msg  []string // substrings of the message
	}{
		{"/at/1/stages?lifecycle=active&limit=200&offset=0", []string{"generation 1 was collected", "oldest generation kept is 3"}},
		{"/at/2/health", []string{"generation 2 was collected", "oldest generation kept is 3"}},
		{"/at/0/stages/" + only6, []string{"generation 0 was collected", "oldest generation kept is 3"}},
		{"/at/7/stages", []string{"generation 7 does not exist yet", "newest is 6"}},
		{"/at/99999999999/stages", []string{"generation 99999999999 does not exist yet", "newest is 6"}},
		{"/at/xyz/stages", []string{`"xyz" is not a generation`, "at least 4 hex digits", "keeps generations 3 to 6"}},
		{"/at/abc/stages", []string{`"abc" is not a generation`}},
		{"/at/-1/stages", []string{`"-1" is not a generation`}},
		{"/at/99999999999999999999999/stages", []string{"no kept generation's digest starts with"}},
		{"/at/ffff/stages", []string{`no kept generation's digest starts with "ffff"`, "keeps generations 3 to 6"}},
		{"/at/4/stages/" + only6, []string{"stage " + only6 + " is not in this mirror"}},
		{"/at/4/stages/" + only6[:8], []string{"a stage id is 64 lowercase hex"}},
		{"/at/4/metrics", []string{"no endpoint", "/at/G/health"}},
		{"/at/4", []string{"no endpoint"}},
		{"/at/4/", []string{"no endpoint"}},
		{"/at/4/stages/", []string{"no endpoint"}},
		{"/at/4/at/4/stages", []string{"no endpoint"}},
		{"/at//stages", []string{"no endpoint"}},
		{"/at/", []string{"no endpoint"}},
		{"/at", []string{"no endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			// If-None-Match: * never turns a 404 into a 304.
			rec := do(t, h, "GET", tt.path, "If-None-Match", "*")
			msg := wantError(t, rec, 404, CodeNotFound) // no-store, no ETag
			for _, want := range tt.msg {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, ".db") || strings.Contains(msg, "--keep") {
				t.Errorf("message %q leaks the server's file or flags", msg)
			}
		})
	}
	// A server whose source keeps no history serves no /at/.
	plain := newTestServer(t, newMemSource(snaps[3]), Options{}).Handler()
	msg := wantError(t, do(t, plain, "GET", "/at/6/stages"), 404, CodeNotFound)
	if !strings.Contains(msg, "keeps no past generations") {
		t.Errorf("message %q", msg)
	}
	// A bad query under a kept generation is the root's 400.
	wantError(t, do(t, h, "GET", "/at/4/stages?limit=x"), 400, CodeInvalidParam)
}

func TestPinnedRedirects(t *testing.T) {
	s, _, snaps := pinnedServer(t, Options{})
	h := s.Handler()
	id := string(snaps[1].stages[0].ID)
	tests := []struct{ path, location string }{
		{"/at/beef/stages?lifecycle=active&limit=200&offset=0", "../4/stages?lifecycle=active&limit=200&offset=0"},
		{"/at/BEEF40/health", "../4/health"},
		{"/at/beef40" + strings.Repeat("1", 58) + "/stages/" + id, "../../4/stages/" + id},
		{"/at/c0ffee/stages", "../3/stages"},
		{"/at/004/stages", "../4/stages"},
		{"/at/1234/stages", "../5/stages"}, // no generation 1234: 5's digest prefix
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := do(t, h, "GET", tt.path)
			if rec.Code != 307 {
				t.Fatalf("status %d, want 307: %s", rec.Code, rec.Body)
			}
			e := decodeEnvelope(t, rec)
			if *e.OK || e.Error.Code != CodeRedirect {
				t.Fatalf("body %s", rec.Body)
			}
			msg := e.Error.Message
			if loc := rec.Header().Get("Location"); loc != tt.location {
				t.Errorf("Location = %q, want %q", loc, tt.location)
			}
			if !strings.Contains(msg, tt.location) {
				t.Errorf("message %q does not say where", msg)
			}
			// Where a prefix leads may change: cached like the root.
			if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=60" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if rec.Header().Get("ETag") != "" {
				t.Error("a redirect carries an ETag")
			}
		})
	}
	// Followed, the redirects land on the generation: a client resolves
	// the relative Location against the URL it asked for, whatever prefix
	// the server is mounted under.
	mux := httpMux(h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, base := range []string{srv.URL, srv.URL + "/registry"} {
		resp, err := srv.Client().Get(base + "/at/beef/stages?lifecycle=active&limit=3")
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Result struct {
				Stages []json.RawMessage `json:"stages"`
				Total  int               `json:"total"`
			} `json:"result"`
		}
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.Request.URL.Path != strings.TrimPrefix(base, srv.URL)+"/at/4/stages" {
			t.Fatalf("%s: followed to %s: %d %v", base, resp.Request.URL, resp.StatusCode, err)
		}
		if want := len(snaps[1].byKind[store.LifecycleActive]); env.Result.Total != want || len(env.Result.Stages) != 3 {
			t.Errorf("%s: %d stages of %d, want 3 of %d", base, len(env.Result.Stages), env.Result.Total, want)
		}
	}
}

func TestPinnedWritesRefused(t *testing.T) {
	for _, key := range []string{"", "secret"} {
		s, _, snaps := pinnedServer(t, Options{APIKey: key})
		h := s.Handler()
		id := string(snaps[1].stages[0].ID)
		for _, tt := range []struct{ method, path string }{
			{"POST", "/at/4/stages"},
			{"PATCH", "/at/4/stages/" + id + "/lifecycle"},
			{"DELETE", "/at/4/stages/" + id},
			{"DELETE", "/at/1/stages/" + id},         // collected: still not NOT_FOUND
			{"DELETE", "/at/7/stages/" + id},         // not reached yet
			{"DELETE", "/at/beef/stages/" + id},      // a prefix: refused, not redirected
			{"DELETE", "/at/NOT_FOUND/stages/" + id}, // nothing of the path is echoed
			{"POST", "/at/already/stages"},
			{"PUT", "/at/4/stages/" + id},
			{"POST", "/at/4/health"},
			{"OPTIONS", "/at/4/stages"},
		} {
			rec := do(t, h, tt.method, tt.path, "X-API-Key", key)
			msg := wantError(t, rec, 405, CodeReadOnly)
			if !strings.Contains(msg, "read-only") {
				t.Errorf("%s %s: message %q", tt.method, tt.path, msg)
			}
			body := rec.Body.String()
			if strings.Contains(strings.ToLower(body), "already") || strings.Contains(body, "NOT_FOUND") {
				t.Errorf("%s %s: body %s would be misread by noether's client", tt.method, tt.path, body)
			}
			if rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: Allow = %q", tt.method, tt.path, rec.Header().Get("Allow"))
			}
		}
	}
}

func TestPinnedHealth(t *testing.T) {
	s, _, snaps := pinnedServer(t, Options{})
	h := s.Handler()
	g4 := snaps[1]
	rec := do(t, h, "GET", "/at/4/health")
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	decodeEnvelope(t, rec)
	want := `{"ok":true,"result":{"status":"ok","store":` + statsJSON(t, g4.computeStats()) + `,"mirror":{"generation":4,` +
		`"digest":"` + g4.info.Digest + `","published":"2026-03-01T09:00:00Z","quarantined":2,"pinned":true}}}`
	if got := rec.Body.String(); got != want {
		t.Fatalf("health body\n got %s\nwant %s", got, want)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != immutableCC {
		t.Errorf("Cache-Control = %q", cc)
	}
	if etag := rec.Header().Get("ETag"); !strings.HasPrefix(etag, `"g4-`) {
		t.Errorf("ETag = %q, want a strong one for generation 4", etag)
	}
	for range 3 {
		do(t, h, "GET", "/at/4/health")
	}
	if n := g4.statsCalls.Load(); n != 1 {
		t.Errorf("generation 4's stats computed %d times, want 1", n)
	}
	// Hours later the answer is the same, byte for byte.
	later := newTestServer(t, s.src, Options{Now: func() time.Time { return fixedNow.Add(5 * time.Hour) }})
	defer later.ReleasePinned()
	if rec2 := do(t, later.Handler(), "GET", "/at/4/health"); rec2.Body.String() != want || rec2.Header().Get("ETag") != rec.Header().Get("ETag") {
		t.Errorf("a later answer differs: %s", rec2.Body)
	}
	// Unknown published time: null.
	snaps[0].info.Published = time.Time{}
	if got := do(t, h, "GET", "/at/3/health").Body.String(); !strings.Contains(got, `"published":null`) {
		t.Errorf("no published time: %s", got)
	}
}

func TestPinnedConditional(t *testing.T) {
	s, _, snaps := pinnedServer(t, Options{})
	h := s.Handler()
	id := string(snaps[1].stages[0].ID)
	etags := map[string]string{}
	for _, target := range []string{"/at/4/stages?lifecycle=active&limit=200&offset=0", "/at/4/stages/" + id, "/at/4/health",
		"/at/5/stages?lifecycle=active&limit=200&offset=0", "/at/5/health"} {
		t.Run(target, func(t *testing.T) {
			first := do(t, h, "GET", target)
			etag := first.Header().Get("ETag")
			if first.Code != 200 || etag == "" || strings.HasPrefix(etag, "W/") {
				t.Fatalf("%d, ETag %q", first.Code, etag)
			}
			if other, dup := etags[etag]; dup {
				t.Fatalf("ETag %s also answers %s", etag, other)
			}
			etags[etag] = target
			for _, inm := range []string{etag, "W/" + etag, `"nope", ` + etag, "*"} {
				rec := do(t, h, "GET", target, "If-None-Match", inm)
				if rec.Code != 304 || rec.Body.Len() != 0 {
					t.Fatalf("If-None-Match %s: %d %s", inm, rec.Code, rec.Body)
				}
				if rec.Header().Get("ETag") != etag || rec.Header().Get("Cache-Control") != immutableCC {
					t.Errorf("304 headers: %v", rec.Header())
				}
			}
			if rec := do(t, h, "GET", target, "If-None-Match", `"g4-other"`); rec.Code != 200 {
				t.Errorf("a stale ETag got %d", rec.Code)
			}
		})
	}
	// A list's ETag is the root's for the same generation and query (the
	// content is the same), and the same whatever the query's spelling.
	e1 := do(t, h, "GET", "/at/6/stages?offset=0&limit=200&lifecycle=active").Header().Get("ETag")
	e2 := do(t, h, "GET", "/stages?lifecycle=active&limit=200").Header().Get("ETag")
	if e1 != e2 {
		t.Errorf("pinned %s, root %s", e1, e2)
	}
}

func TestPinnedCacheControlPolicies(t *testing.T) {
	f := newTrustFixture(t, "cc", 12)
	for _, tt := range []struct {
		name string
		opts Options
		want string
	}{
		{"default", Options{}, immutableCC},
		{"max-age", Options{MaxAge: 5 * time.Minute}, immutableCC},
		{"no-cache", Options{MaxAge: -1}, immutableCC},
		{"api key", Options{APIKey: "k"}, "private, max-age=31536000, immutable"},
		// A policy change (a revoked key) changes what /at/G/ serves.
		{"trust", Options{Trust: f.policy}, "public, max-age=60"},
		{"trust no-cache", Options{Trust: f.policy, MaxAge: -1}, "no-cache"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _, snaps := pinnedServer(t, tt.opts)
			h := s.Handler()
			for _, p := range []string{"/at/4/stages", "/at/4/health", "/at/6/stages/" + string(snaps[3].stages[0].ID)} {
				rec := do(t, h, "GET", p, "X-API-Key", tt.opts.APIKey)
				if rec.Code != 200 && !(tt.opts.Trust != nil && rec.Code == 404) {
					t.Fatalf("%s: %d %s", p, rec.Code, rec.Body)
				}
				if rec.Code == 200 && rec.Header().Get("Cache-Control") != tt.want {
					t.Errorf("%s: Cache-Control = %q, want %q", p, rec.Header().Get("Cache-Control"), tt.want)
				}
			}
		})
	}
}

func TestPinnedTrust(t *testing.T) {
	f := newTrustFixture(t, "pt", 30)
	older := newTrustFixture(t, "po", 10)
	g1 := newMemSnapshot(t, testInfo(1), older.raws)
	g2 := newMemSnapshot(t, testInfo(2), f.raws)
	src := newMemHistory(g1, g2)
	s := newTestServer(t, src, Options{Trust: f.policy})
	defer s.ReleasePinned()
	h := s.Handler()
	// Generation 1's trusted stages were signed by the same "ops" key.
	want1 := older.trusted.byKind[store.LifecycleActive]
	if got := do(t, h, "GET", "/at/1/stages?lifecycle=active&limit=200").Body.String(); got != listBody(want1, len(want1)) {
		t.Fatalf("/at/1: %.300s", got)
	}
	want2 := f.trusted.byKind[store.LifecycleActive]
	for _, p := range []string{"/at/2/stages?lifecycle=active&limit=200", "/stages?lifecycle=active&limit=200"} {
		if got := do(t, h, "GET", p).Body.String(); got != listBody(want2, len(want2)) {
			t.Fatalf("%s: %.300s", p, got)
		}
	}
	for _, st := range older.untrusted[:3] {
		wantError(t, do(t, h, "GET", "/at/1/stages/"+string(st.ID)), 404, CodeNotFound)
	}
	var res struct {
		Mirror struct {
			Quarantined int  `json:"quarantined"`
			Untrusted   *int `json:"untrusted"`
		} `json:"mirror"`
	}
	if err := json.Unmarshal(decodeEnvelope(t, do(t, h, "GET", "/at/1/health")).Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Mirror.Untrusted == nil || *res.Mirror.Untrusted != len(older.untrusted) || res.Mirror.Quarantined != 2+len(older.untrusted) {
		t.Errorf("/at/1/health mirror %+v", res.Mirror)
	}
	// The current generation's view is shared between / and /at/2/: one
	// build each for generations 1 and 2, however the requests interleave.
	var logs syncBuffer
	s2 := newTestServer(t, src, Options{Trust: f.policy, Logger: slogJSON(&logs)})
	defer s2.ReleasePinned()
	for range 3 {
		for _, p := range []string{"/stages", "/at/1/stages", "/at/2/stages", "/at/1/health", "/health"} {
			if rec := do(t, s2.Handler(), "GET", p); rec.Code != 200 {
				t.Fatalf("%s: %d", p, rec.Code)
			}
		}
	}
	if n := strings.Count(logs.String(), "trust policy applied"); n != 2 {
		t.Errorf("%d trust view builds, want 2:\n%s", n, logs.String())
	}
}

func TestPinnedMetrics(t *testing.T) {
	s, _, _ := pinnedServer(t, Options{})
	h := s.Handler()
	do(t, h, "GET", "/at/4/stages")
	do(t, h, "GET", "/at/5/stages")
	do(t, h, "GET", "/at/1/stages")
	do(t, h, "GET", "/at/beef/stages")
	do(t, h, "GET", "/at/4/health")
	do(t, h, "DELETE", "/at/4/stages/"+strings.Repeat("a", 64))
	do(t, h, "GET", "/at/4/metrics")
	got := metricsSamples(t, h)
	for k, v := range map[string]string{
		`mirror_http_requests_total{method="GET",route="/at/{g}/stages",code="200"}`:         "2",
		`mirror_http_requests_total{method="GET",route="/at/{g}/stages",code="404"}`:         "1",
		`mirror_http_requests_total{method="GET",route="/at/{g}/stages",code="307"}`:         "1",
		`mirror_http_requests_total{method="GET",route="/at/{g}/health",code="200"}`:         "1",
		`mirror_http_requests_total{method="DELETE",route="/at/{g}/stages/{id}",code="405"}`: "1",
		`mirror_http_requests_total{method="GET",route="other",code="404"}`:                  "1",
		`mirror_http_request_duration_seconds_count{route="/at/{g}/stages"}`:                 "4",
		`mirror_snapshot_generation`: "6",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %s", k, got[k], v)
		}
	}
}

func TestPinnedCacheBounded(t *testing.T) {
	s, src, _ := pinnedServer(t, Options{PinnedGenerations: 2})
	h := s.Handler()
	get := func(g int) {
		t.Helper()
		if rec := do(t, h, "GET", fmt.Sprintf("/at/%d/stages?limit=1", g)); rec.Code != 200 {
			t.Fatalf("/at/%d: %d %s", g, rec.Code, rec.Body)
		}
	}
	for _, g := range []int{3, 4, 4, 3, 5, 3} { // 5 evicts 4, the least recently used
		get(g)
	}
	if n := src.opens.Load(); n != 3 {
		t.Errorf("%d opens, want 3 (3, 4, 5)", n)
	}
	if n := src.open.Load(); n != 2 || s.pins.len() != 2 {
		t.Errorf("%d snapshots open, %d cached; want 2", n, s.pins.len())
	}
	get(4) // reopened, evicting 5
	if n := src.opens.Load(); n != 4 {
		t.Errorf("%d opens, want 4", n)
	}

	// A generation collected while cached is answered 404 at once and
	// closed; the collection is also noticed for one not asked for again.
	src.collect(5)
	wantError(t, do(t, h, "GET", "/at/4/stages"), 404, CodeNotFound)
	if n := src.open.Load(); n != 1 || s.pins.len() != 1 {
		t.Errorf("after /at/4 was found collected: %d open, %d cached; want 1 (generation 3 left)", n, s.pins.len())
	}
	get(5) // a miss: sweeps out 3, collected and not asked for
	if n := src.open.Load(); n != 1 || s.pins.len() != 1 {
		t.Errorf("after the sweep: %d open, %d cached; want 1 (5)", n, s.pins.len())
	}
	get(6)
	if n := src.open.Load(); n != 2 || s.pins.len() != 2 {
		t.Errorf("%d open, %d cached; want 2 (5 and 6)", n, s.pins.len())
	}
	s.ReleasePinned()
	if n := src.open.Load(); n != 0 || s.pins.len() != 0 {
		t.Errorf("after ReleasePinned: %d open, %d cached", n, s.pins.len())
	}
	get(6) // still usable
	if src.open.Load() != 1 {
		t.Error("a request after ReleasePinned did not reopen its generation")
	}
}

// TestPinnedConcurrent: many requests over more generations than the
// cache holds, with evictions, a release and a collection meanwhile;
// first requests for one generation share one open; nothing stays open.
func TestPinnedConcurrent(t *testing.T) {
	s, src, snaps := pinnedServer(t, Options{PinnedGenerations: 2})
	h := s.Handler()

	src.gate = make(chan struct{})
	const waiters = 8
	var wg sync.WaitGroup
	codes := make(chan int, waiters)
	for range waiters {
		wg.Go(func() { codes <- do(t, h, "GET", "/at/4/stages?limit=5").Code })
	}
	eventually(t, "every request to wait for generation 4's open", func() bool {
		s.pins.mu.Lock()
		defer s.pins.mu.Unlock()
		e := s.pins.entries[4]
		return e != nil && e.refs == waiters+1
	})
	close(src.gate)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("status %d", c)
		}
	}
	if n := src.opens.Load(); n != 1 {
		t.Errorf("%d opens for concurrent first requests, want 1", n)
	}
	src.gate = nil

	ids := []string{string(snaps[0].stages[3].ID), string(snaps[1].stages[3].ID), string(snaps[2].stages[3].ID), string(snaps[3].stages[3].ID)}
	var failed sync.Once
	for w := range 8 {
		wg.Go(func() {
			for i := range 60 {
				g := 3 + (w+i)%4
				p := fmt.Sprintf("/at/%d/stages?limit=20&offset=%d", g, i%40)
				if i%3 == 0 {
					p = fmt.Sprintf("/at/%d/stages/%s", g, ids[g-3])
				}
				rec := do(t, h, "GET", p)
				if rec.Code != 200 && !(g == 3 && rec.Code == 404) {
					failed.Do(func() { t.Errorf("%s: %d %s", p, rec.Code, rec.Body) })
				}
				if w == 0 && i == 30 {
					s.ReleasePinned()
					src.collect(4) // 3 goes
				}
			}
		})
	}
	wg.Wait()
	if n, c := src.open.Load(), s.pins.len(); n != int64(c) || c > 2 {
		t.Errorf("%d snapshots open for %d cached generations (at most 2)", n, c)
	}
}

// TestPinnedHistoryUnavailable: a history that cannot be read is 503,
// like a mirror that cannot be read, and leaks nothing.
func TestPinnedHistoryUnavailable(t *testing.T) {
	s, src, _ := pinnedServer(t, Options{})
	h := s.Handler()
	boom := errors.New("bbolt: manifest page 3 unreadable")
	src.historyErr.Store(&boom)
	rec := do(t, h, "GET", "/at/4/stages")
	msg := wantError(t, rec, 503, CodeUnavailable)
	if strings.Contains(msg, "bbolt") || rec.Header().Get("Retry-After") == "" {
		t.Errorf("503: %q, Retry-After %q", msg, rec.Header().Get("Retry-After"))
	}
	src.historyErr.Store(nil)
	if rec := do(t, h, "GET", "/at/4/stages"); rec.Code != 200 {
		t.Errorf("after recovery: %d", rec.Code)
	}
	// A client that has left is not an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/at/5/stages", nil).WithContext(ctx))
	if rec.Code != 499 {
		t.Errorf("cancelled request answered %d", rec.Code)
	}
}

// httpMux serves h at the root and under /registry (http.StripPrefix).
func httpMux(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/registry/", http.StripPrefix("/registry", h))
	mux.Handle("/", h)
	return mux
}

// TestPinnedNewGeneration: a generation not reached yet is 404 (never
// cached) until it is published; then it answers, and the one before
// still answers as it did.
func TestPinnedNewGeneration(t *testing.T) {
	s, src, _ := pinnedServer(t, Options{})
	h := s.Handler()
	before := do(t, h, "GET", "/at/6/stages?limit=200").Body.String()
	rec := do(t, h, "GET", "/at/7/stages?limit=200")
	wantError(t, rec, 404, CodeNotFound)
	g7 := newMemSnapshot(t, testInfo(7), fixtureRaws(t)[:20])
	src.publish(g7)
	rec = do(t, h, "GET", "/at/7/stages?limit=200")
	if got, want := rec.Body.String(), listBody(g7.byKind[store.LifecycleUnknown], 20); rec.Code != 200 || got != want {
		t.Fatalf("/at/7 once published: %d %.200s", rec.Code, got)
	}
	if got := do(t, h, "GET", "/at/6/stages?limit=200").Body.String(); got != before || got == rec.Body.String() {
		t.Errorf("/at/6 changed when 7 was published")
	}
	if got, want := do(t, h, "GET", "/stages?limit=200").Body.String(), rec.Body.String(); got != want {
		t.Errorf("the root does not serve generation 7")
	}
}
