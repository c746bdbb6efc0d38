package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestServer(t testing.TB, src Source, opts Options) *Server {
	t.Helper()
	if opts.Now == nil {
		opts.Now = func() time.Time { return fixedNow }
	}
	s, err := New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(t testing.TB, h http.Handler, method, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// envelope is the registry's response envelope as a client decodes it.
type envelope struct {
	OK     *bool           `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeEnvelope(t testing.TB, rec *httptest.ResponseRecorder) envelope {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e envelope
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("body is not an envelope: %v\n%s", err, rec.Body)
	}
	if e.OK == nil {
		t.Fatalf("envelope without ok: %s", rec.Body)
	}
	if *e.OK != (e.Error == nil) || *e.OK == (e.Result == nil) {
		t.Fatalf("inconsistent envelope: %s", rec.Body)
	}
	return e
}

// wantError checks a failure envelope.
func wantError(t testing.TB, rec *httptest.ResponseRecorder, status int, code string) string {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	e := decodeEnvelope(t, rec)
	if *e.OK || e.Error.Code != code {
		t.Fatalf("error code = %+v, want %s", e.Error, code)
	}
	if e.Error.Message == "" {
		t.Fatal("empty error message")
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("error Cache-Control = %q, want no-store", cc)
	}
	if rec.Header().Get("ETag") != "" {
		t.Error("error response carries an ETag")
	}
	return e.Error.Message
}

// listBody is the exact body expected for a page.
func listBody(raws [][]byte, total int) string {
	var b strings.Builder
	b.WriteString(`{"ok":true,"result":{"stages":[`)
	for i, r := range raws {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(r)
	}
	fmt.Fprintf(&b, `],"total":%d}}`, total)
	return b.String()
}

func TestList(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(7), mixedRaws(t))
	src := newMemSource(snap)
	h := newTestServer(t, src, Options{}).Handler()
	all := snap.byKind[store.LifecycleUnknown]
	active := snap.byKind[store.LifecycleActive]
	drafts := snap.byKind[store.LifecycleDraft]
	if len(drafts) == 0 || len(snap.byKind[store.LifecycleDeprecated]) == 0 || len(snap.byKind[store.LifecycleTombstone]) == 0 {
		t.Fatal("fixture lacks a lifecycle")
	}
	tests := []struct {
		query string
		want  [][]byte
		total int
	}{
		{"", all[:50], len(all)},
		{"?offset=50", all[50:], len(all)},
		{"?lifecycle=active&limit=200&offset=0", active, len(active)},
		{"?lifecycle=active&limit=10&offset=5", active[5:15], len(active)},
		{"?lifecycle=draft", drafts, len(drafts)},
		{"?lifecycle=deprecated", snap.byKind[store.LifecycleDeprecated], len(snap.byKind[store.LifecycleDeprecated])},
		{"?lifecycle=tombstone", snap.byKind[store.LifecycleTombstone], len(snap.byKind[store.LifecycleTombstone])},
		{"?limit=0", nil, len(all)},
		{"?limit=3&offset=" + strconv.Itoa(len(all)-1), all[len(all)-1:], len(all)},
		{"?offset=" + strconv.Itoa(len(all)), nil, len(all)},
		{"?offset=99999999999", nil, len(all)},
		{"?offset=99999999999999999999999", nil, len(all)},
		{"?lifecycle=&limit=&offset=", all[:50], len(all)},        // empty = absent
		{"?limit=2&unrelated=x&q=y", all[:2], len(all)},           // unknown parameters ignored
		{"?limit=1000", all, len(all)},                            // capped at 200 (> 85)
		{"?limit=%32", all[:2], len(all)},                         // escaped digits
		{"?lifecycle=active&limit=1&offset=84", nil, len(active)}, // past the active end
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			rec := do(t, h, "GET", "/stages"+tt.query)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			decodeEnvelope(t, rec)
			if got, want := rec.Body.String(), listBody(tt.want, tt.total); got != want {
				t.Fatalf("body differs:\n got %.300s\nwant %.300s", got, want)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=60" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if rec.Header().Get("ETag") == "" {
				t.Error("no ETag")
			}
		})
	}
	if n := src.open.Load(); n != 0 {
		t.Errorf("%d snapshots left pinned", n)
	}
}

// TestListRawBytesSurviveDecoding checks what a client sees: decoding the
// page yields each stage's source bytes, byte for byte (the fixture is
// pretty-printed; nothing is re-encoded).
func TestListRawBytesSurviveDecoding(t *testing.T) {
	raws := fixtureRaws(t)
	snap := newMemSnapshot(t, testInfo(1), raws)
	h := newTestServer(t, newMemSource(snap), Options{}).Handler()
	rec := do(t, h, "GET", "/stages?limit=200")
	var res struct {
		Stages []json.RawMessage `json:"stages"`
		Total  int               `json:"total"`
	}
	if err := json.Unmarshal(decodeEnvelope(t, rec).Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Total != len(raws) || len(res.Stages) != len(raws) {
		t.Fatalf("got %d stages, total %d; want %d", len(res.Stages), res.Total, len(raws))
	}
	for i, got := range res.Stages {
		st, err := store.DecodeStage(got)
		if err != nil {
			t.Fatalf("stage %d does not decode: %v", i, err)
		}
		if !bytes.Equal(got, snap.raw[st.ID]) {
			t.Fatalf("stage %s bytes differ from the source", st.ID)
		}
		if !bytes.Contains(got, []byte("\n")) {
			t.Fatalf("stage %s lost its newlines", st.ID)
		}
	}
}

func TestListBadParams(t *testing.T) {
	h := newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t))), Options{}).Handler()
	tests := []struct{ query, param string }{
		{"limit=abc", "limit"},
		{"limit=-1", "limit"},
		{"limit=1.5", "limit"},
		{"limit=1e3", "limit"},
		{"limit=%20", "limit"},
		{"limit=-99999999999999999999999", "limit"},
		{"limit=1&limit=2", "limit"},
		{"offset=-3", "offset"},
		{"offset=x", "offset"},
		{"offset=0x10", "offset"},
		{"offset=1&offset=1", "offset"},
		{"lifecycle=foo", "lifecycle"},
		{"lifecycle=Active", "lifecycle"},
		{"lifecycle=unknown", "lifecycle"},
		{"lifecycle=active&lifecycle=draft", "lifecycle"},
		{"limit=%zz", "query"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			msg := wantError(t, do(t, h, "GET", "/stages?"+tt.query), 400, CodeInvalidParam)
			if !strings.Contains(msg, tt.param) {
				t.Errorf("message %q does not name %s", msg, tt.param)
			}
		})
	}
}

func TestListCapsLimit(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), genRaws(t, 1, 450, 0))
	h := newTestServer(t, newMemSource(snap), Options{}).Handler()
	all := snap.byKind[store.LifecycleUnknown]
	for _, q := range []string{"limit=201", "limit=1000000", "limit=99999999999999999999999"} {
		rec := do(t, h, "GET", "/stages?"+q+"&offset=10")
		if got, want := rec.Body.String(), listBody(all[10:210], 450); got != want {
			t.Errorf("%s: body is not the 200 stages from offset 10: %.200s", q, got)
		}
	}
}

func TestGetStage(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(3), mixedRaws(t))
	src := newMemSource(snap)
	h := newTestServer(t, src, Options{}).Handler()
	for _, st := range snap.stages {
		rec := do(t, h, "GET", "/stages/"+string(st.ID))
		if rec.Code != 200 {
			t.Fatalf("%s: status %d", st.ID, rec.Code)
		}
		e := decodeEnvelope(t, rec)
		if want := `{"ok":true,"result":` + string(st.Raw) + `}`; rec.Body.String() != want {
			t.Fatalf("%s: body is not the exact stage bytes in an envelope", st.ID)
		}
		if !bytes.Equal(e.Result, st.Raw) {
			t.Fatalf("%s: decoded result differs from the source bytes", st.ID)
		}
		if rec.Header().Get("Cache-Control") != "public, max-age=60" || rec.Header().Get("ETag") == "" {
			t.Fatalf("%s: caching headers %v", st.ID, rec.Header())
		}
	}
	absent := strings.Repeat("ab", 32)
	for _, id := range []string{
		absent,
		strings.ToUpper(string(snap.stages[0].ID)),
		string(snap.stages[0].ID[:63]),
		string(snap.stages[0].ID) + "0",
		string(snap.stages[0].ID[:8]), // prefixes are not resolved
		"search",
		"%00",
		"..",
		strings.Repeat("z", 500),
	} {
		t.Run(id[:min(len(id), 12)], func(t *testing.T) {
			wantError(t, do(t, h, "GET", "/stages/"+id), 404, CodeNotFound)
		})
	}
	if n := src.open.Load(); n != 0 {
		t.Errorf("%d snapshots left pinned", n)
	}
}

func TestUnknownPaths(t *testing.T) {
	h := newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t))), Options{}).Handler()
	for _, p := range []string{"/", "/stages/", "/stages/search?q=x", "/stages/" + strings.Repeat("a", 64) + "/lifecycle",
		"/health/", "/docs", "/STAGES", "//stages", "/stages/a/b"} {
		wantError(t, do(t, h, "GET", p), 404, CodeNotFound)
	}
}

func TestWritesRefused(t *testing.T) {
	id := strings.Repeat("c", 64)
	for _, key := range []string{"", "secret"} {
		h := newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t))), Options{APIKey: key}).Handler()
		for _, tt := range []struct{ method, path string }{
			{"POST", "/stages"},
			{"PATCH", "/stages/" + id + "/lifecycle"},
			{"DELETE", "/stages/" + id},
			{"DELETE", "/stages/not-an-id"}, // must not read as "NOT_FOUND ⇒ deleted"
			{"DELETE", "/nowhere"},
			{"PUT", "/stages/" + id},
			{"POST", "/health"},
			{"OPTIONS", "/stages"},
			{"BREW", "/stages"},
		} {
			rec := do(t, h, tt.method, tt.path, "X-API-Key", key)
			msg := wantError(t, rec, 405, CodeReadOnly)
			if strings.Contains(strings.ToLower(msg), "already") || strings.Contains(msg, "NOT_FOUND") {
				t.Errorf("%s %s: message %q would be misread by noether's client", tt.method, tt.path, msg)
			}
			if strings.Contains(rec.Body.String(), "NOT_FOUND") || strings.Contains(strings.ToLower(rec.Body.String()), "already") {
				t.Errorf("%s %s: body %s would be misread by noether's client", tt.method, tt.path, rec.Body)
			}
			if rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: Allow = %q", tt.method, tt.path, rec.Header().Get("Allow"))
			}
		}
	}
}

func TestAuth(t *testing.T) {
	src := newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t)))
	h := newTestServer(t, src, Options{APIKey: "s3cret"}).Handler()
	id := string(src.cur.Load().stages[0].ID)
	for _, p := range []string{"/stages?lifecycle=active", "/stages/" + id, "/health", "/metrics", "/nowhere"} {
		for _, key := range []string{"", "wrong", "s3cre", "s3cret "} {
			hdr := []string{}
			if key != "" {
				hdr = []string{"X-API-Key", key}
			}
			msg := wantError(t, do(t, h, "GET", p, hdr...), 401, CodeUnauthorized)
			if !strings.Contains(msg, "X-API-Key") {
				t.Errorf("message %q does not say which header", msg)
			}
		}
	}
	for _, p := range []string{"/stages?lifecycle=active", "/stages/" + id, "/health", "/metrics"} {
		rec := do(t, h, "GET", p, "X-API-Key", "s3cret")
		if rec.Code != 200 {
			t.Fatalf("%s with the key: %d %s", p, rec.Code, rec.Body)
		}
	}
	rec := do(t, h, "GET", "/stages/"+id, "X-API-Key", "s3cret")
	if cc := rec.Header().Get("Cache-Control"); cc != "private, max-age=60" {
		t.Errorf("with a key Cache-Control = %q, want private", cc)
	}
	// Without a key configured, a client's key is ignored.
	open := newTestServer(t, src, Options{}).Handler()
	if rec := do(t, open, "GET", "/health", "X-API-Key", "anything"); rec.Code != 200 {
		t.Errorf("unconfigured server refused a key: %d", rec.Code)
	}
}

func TestHealth(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(9), mixedRaws(t))
	snap.info.LastSync = fixedNow.Add(-90*time.Second - 300*time.Millisecond)
	src := newMemSource(snap)
	h := newTestServer(t, src, Options{}).Handler()
	rec := do(t, h, "GET", "/health")
	if rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	decodeEnvelope(t, rec)
	stats := snap.computeStats()
	storeJSON, err := json.Marshal(stats)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ok":true,"result":{"status":"ok","store":` + string(storeJSON) + `,"mirror":{"generation":9,` +
		`"upstream":"https://registry.example.org","last_sync":"2026-03-01T11:58:29Z","age_seconds":90,` +
		`"digest":"` + snap.info.Digest + `","quarantined":2}}}`
	if got := rec.Body.String(); got != want {
		t.Fatalf("health body\n got %s\nwant %s", got, want)
	}
	// by_effect uses Rust Debug keys and by_lifecycle lowercase, non-zero keys.
	for _, key := range []string{`"Pure":`, `"Fallible":`, `"Cost { cents: `, `"active":`, `"draft":`, `"deprecated":`, `"tombstone":`, `"total_stages":85`} {
		if !strings.Contains(rec.Body.String(), key) {
			t.Errorf("health lacks %s", key)
		}
	}
	if rec.Header().Get("Cache-Control") != "no-cache" || !strings.HasPrefix(rec.Header().Get("ETag"), `W/"g9-`) {
		t.Errorf("health caching headers: %v", rec.Header())
	}
	for range 5 {
		do(t, h, "GET", "/health")
		do(t, h, "GET", "/metrics")
	}
	if n := snap.statsCalls.Load(); n != 1 {
		t.Errorf("Stats computed %d times for one generation, want 1", n)
	}
	next := newMemSnapshot(t, testInfo(10), fixtureRaws(t))
	src.publish(next)
	rec = do(t, h, "GET", "/health")
	if !strings.Contains(rec.Body.String(), `"generation":10`) || !strings.Contains(rec.Body.String(), `"by_lifecycle":{"active":85}`) {
		t.Errorf("new generation not reflected: %s", rec.Body)
	}
	if next.statsCalls.Load() != 1 {
		t.Errorf("new generation's stats computed %d times", next.statsCalls.Load())
	}
}

func TestHealthNeverSynced(t *testing.T) {
	snap := newMemSnapshot(t, Info{}, nil)
	h := newTestServer(t, newMemSource(snap), Options{}).Handler()
	rec := do(t, h, "GET", "/health")
	want := `{"ok":true,"result":{"status":"ok","store":{"total_stages":0,"by_lifecycle":{},"by_effect":{}},` +
		`"mirror":{"generation":0,"upstream":"","last_sync":null,"age_seconds":null,"digest":"","quarantined":0}}}`
	if rec.Body.String() != want {
		t.Fatalf("got  %s\nwant %s", rec.Body, want)
	}
	rec = do(t, h, "GET", "/stages")
	if rec.Body.String() != `{"ok":true,"result":{"stages":[],"total":0}}` {
		t.Fatalf("empty list: %s", rec.Body)
	}
}

func TestConditionalRequests(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(4), fixtureRaws(t))
	src := newMemSource(snap)
	h := newTestServer(t, src, Options{MaxAge: 5 * time.Minute}).Handler()
	id := string(snap.stages[3].ID)

	for _, target := range []string{"/stages?lifecycle=active&limit=200&offset=0", "/stages/" + id, "/health"} {
		t.Run(target, func(t *testing.T) {
			first := do(t, h, "GET", target)
			etag := first.Header().Get("ETag")
			if first.Code != 200 || etag == "" {
				t.Fatalf("first: %d etag %q", first.Code, etag)
			}
			for _, inm := range []string{etag, "W/" + strings.TrimPrefix(etag, "W/"), `"nope", ` + etag, "*"} {
				rec := do(t, h, "GET", target, "If-None-Match", inm)
				if rec.Code != 304 {
					t.Fatalf("If-None-Match %s: status %d", inm, rec.Code)
				}
				if rec.Body.Len() != 0 {
					t.Fatalf("304 with a body: %q", rec.Body)
				}
				if rec.Header().Get("ETag") != etag || rec.Header().Get("Cache-Control") != first.Header().Get("Cache-Control") {
					t.Fatalf("304 headers %v", rec.Header())
				}
			}
			if rec := do(t, h, "GET", target, "If-None-Match", `"g3-other"`); rec.Code != 200 {
				t.Fatalf("stale ETag answered %d", rec.Code)
			}
		})
	}
	if cc := do(t, h, "GET", "/stages/"+id).Header().Get("Cache-Control"); cc != "public, max-age=300" {
		t.Errorf("Cache-Control = %q", cc)
	}

	// The ETag depends on the normalised query and on the snapshot.
	e1 := do(t, h, "GET", "/stages?lifecycle=active&limit=200&offset=0").Header().Get("ETag")
	e2 := do(t, h, "GET", "/stages?offset=0&limit=200&lifecycle=active&x=1").Header().Get("ETag")
	e3 := do(t, h, "GET", "/stages?lifecycle=active&limit=200&offset=200").Header().Get("ETag")
	e4 := do(t, h, "GET", "/stages?lifecycle=active&limit=999&offset=0").Header().Get("ETag")
	if e1 != e2 || e1 != e4 || e1 == e3 {
		t.Errorf("list ETags not normalised: %s %s %s %s", e1, e2, e3, e4)
	}
	src.publish(newMemSnapshot(t, testInfo(5), fixtureRaws(t)))
	rec := do(t, h, "GET", "/stages?lifecycle=active&limit=200&offset=0", "If-None-Match", e1)
	if rec.Code != 200 || rec.Header().Get("ETag") == e1 {
		t.Errorf("after a new snapshot: %d, etag %s (old %s)", rec.Code, rec.Header().Get("ETag"), e1)
	}
	// A matching ETag never turns a 404 into a 304.
	missing := "/stages/" + strings.Repeat("0", 64)
	if rec := do(t, h, "GET", missing, "If-None-Match", "*"); rec.Code != 404 {
		t.Errorf("missing stage with If-None-Match: %d", rec.Code)
	}
}

func TestHead(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), fixtureRaws(t))
	srv := httptest.NewServer(newTestServer(t, newMemSource(snap), Options{}).Handler())
	defer srv.Close()
	get, err := http.Get(srv.URL + "/stages/" + string(snap.stages[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(get.Body)
	get.Body.Close()
	head, err := http.Head(srv.URL + "/stages/" + string(snap.stages[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	hb, _ := io.ReadAll(head.Body)
	head.Body.Close()
	if head.StatusCode != 200 || len(hb) != 0 || head.ContentLength != int64(len(body)) || head.Header.Get("ETag") != get.Header.Get("ETag") {
		t.Errorf("HEAD: %d, %d body bytes, length %d (GET %d)", head.StatusCode, len(hb), head.ContentLength, len(body))
	}
}

func TestNewSnapshotServedWithoutRestart(t *testing.T) {
	src := newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t)[:10]))
	h := newTestServer(t, src, Options{}).Handler()
	total := func() int {
		var res struct{ Total int }
		_ = json.Unmarshal(decodeEnvelope(t, do(t, h, "GET", "/stages?limit=0")).Result, &res)
		return res.Total
	}
	if got := total(); got != 10 {
		t.Fatalf("total %d", got)
	}
	src.publish(newMemSnapshot(t, testInfo(2), fixtureRaws(t)))
	if got := total(); got != 85 {
		t.Fatalf("after publish total %d", got)
	}
}

// TestPinnedDuringRequest: a request keeps the snapshot it started with
// even when another is published meanwhile.
func TestPinnedDuringRequest(t *testing.T) {
	old := newMemSnapshot(t, testInfo(1), fixtureRaws(t)[:10])
	old.block = make(chan struct{})
	src := newMemSource(old)
	h := newTestServer(t, src, Options{}).Handler()
	done := make(chan *httptest.ResponseRecorder)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/stages?limit=200", nil))
		done <- rec
	}()
	await(t, old.waiting, "the request to hold the old snapshot")
	src.publish(newMemSnapshot(t, testInfo(2), fixtureRaws(t)))
	close(old.block)
	rec := <-done
	if got, want := rec.Body.String(), listBody(old.byKind[store.LifecycleUnknown], 10); got != want {
		t.Fatalf("the in-flight request did not answer from its snapshot: %.200s", got)
	}
	if src.open.Load() != 0 {
		t.Fatal("snapshot left pinned")
	}
}

func TestSourceFailures(t *testing.T) {
	src := newMemSource(newMemSnapshot(t, testInfo(1), fixtureRaws(t)))
	h := newTestServer(t, src, Options{}).Handler()
	boom := errors.New("mirror closed")
	src.acquireErr.Store(&boom)
	for _, p := range []string{"/stages", "/stages/" + strings.Repeat("a", 64), "/health"} {
		rec := do(t, h, "GET", p)
		msg := wantError(t, rec, 503, CodeUnavailable)
		if strings.Contains(msg, "mirror closed") {
			t.Errorf("internal error leaked: %q", msg)
		}
		if rec.Header().Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
	}
	rec := do(t, h, "GET", "/metrics")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "mirror_snapshot_available 0\n") {
		t.Errorf("metrics without a snapshot: %d %s", rec.Code, rec.Body)
	}
	src.acquireErr.Store(nil)

	snap := newMemSnapshot(t, testInfo(2), fixtureRaws(t))
	snap.pageErr = errors.New("bbolt: page 12 corrupt")
	src.publish(snap)
	msg := wantError(t, do(t, h, "GET", "/stages"), 500, CodeInternal)
	if strings.Contains(msg, "bbolt") {
		t.Errorf("internal error leaked: %q", msg)
	}
	if src.open.Load() != 0 {
		t.Fatal("snapshot left pinned")
	}
}

// metricLine is one sample line of the text exposition format.
var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$`)

func TestMetrics(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(12), mixedRaws(t))
	snap.info.LastSync = fixedNow.Add(-42 * time.Second)
	h := newTestServer(t, newMemSource(snap), Options{}).Handler()
	for range 3 {
		do(t, h, "GET", "/stages?lifecycle=active")
	}
	do(t, h, "GET", "/stages?limit=x")
	do(t, h, "GET", "/stages/"+string(snap.stages[0].ID))
	do(t, h, "DELETE", "/stages/"+string(snap.stages[0].ID))
	do(t, h, "GET", "/whatever/"+strings.Repeat("x", 30))
	do(t, h, "MKCOL", "/x")
	rec := do(t, h, "GET", "/metrics")
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("Content-Type %q", ct)
	}
	samples := map[string]string{}
	typed := map[string]bool{}
	for line := range strings.SplitSeq(strings.TrimSuffix(rec.Body.String(), "\n"), "\n") {
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || typed[f[0]] {
				t.Errorf("bad or repeated TYPE line %q", line)
			}
			typed[f[0]] = true
			continue
		}
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line does not parse: %q", line)
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m[1], "_bucket"), "_sum"), "_count")
		if !typed[m[1]] && !typed[base] {
			t.Errorf("sample before its TYPE: %q", line)
		}
		samples[m[1]+m[2]] = m[3]
	}
	want := map[string]string{
		`mirror_http_requests_total{method="GET",route="/stages",code="200"}`:         "3",
		`mirror_http_requests_total{method="GET",route="/stages",code="400"}`:         "1",
		`mirror_http_requests_total{method="GET",route="/stages/{id}",code="200"}`:    "1",
		`mirror_http_requests_total{method="DELETE",route="/stages/{id}",code="405"}`: "1",
		`mirror_http_requests_total{method="GET",route="other",code="404"}`:           "1",
		`mirror_http_requests_total{method="other",route="other",code="405"}`:         "1",
		`mirror_http_request_duration_seconds_count{route="/stages"}`:                 "4",
		`mirror_http_request_duration_seconds_bucket{route="/stages",le="+Inf"}`:      "4",
		`mirror_http_request_duration_seconds_count{route="/health"}`:                 "0",
		`mirror_snapshot_generation`:                                                  "12",
		`mirror_snapshot_age_seconds`:                                                 "42",
		`mirror_quarantined_stages`:                                                   "2",
		`mirror_snapshot_available`:                                                   "1",
		`mirror_stages{lifecycle="active"}`:                                           strconv.Itoa(len(snap.byKind[store.LifecycleActive])),
		`mirror_stages{lifecycle="draft"}`:                                            strconv.Itoa(len(snap.byKind[store.LifecycleDraft])),
		`mirror_stages{lifecycle="deprecated"}`:                                       strconv.Itoa(len(snap.byKind[store.LifecycleDeprecated])),
		`mirror_stages{lifecycle="tombstone"}`:                                        strconv.Itoa(len(snap.byKind[store.LifecycleTombstone])),
	}
	for k, v := range want {
		if samples[k] != v {
			t.Errorf("%s = %q, want %s", k, samples[k], v)
		}
	}
	// Buckets are cumulative and end at the count.
	var prev float64
	for _, le := range append(durationBuckets(), 0) {
		les := "+Inf"
		if le != 0 {
			les = formatFloat(le)
		}
		v, err := strconv.ParseFloat(samples[`mirror_http_request_duration_seconds_bucket{route="/stages",le="`+les+`"}`], 64)
		if err != nil || v < prev {
			t.Fatalf("bucket le=%s: %v (prev %v)", les, v, prev)
		}
		prev = v
	}
	// The label set stays small whatever the paths.
	for k := range samples {
		if strings.Contains(k, "xxxx") || strings.Contains(k, string(snap.stages[0].ID)) {
			t.Errorf("high-cardinality label: %s", k)
		}
	}
}

// TestNoetherClientPaging replays noether 0.8.2's RemoteStageStore.refresh
// (spec §5.1) and checks it sees every active stage exactly once.
func TestNoetherClientPaging(t *testing.T) {
	const active = 1_037
	snap := newMemSnapshot(t, testInfo(1), append(genRaws(t, 42, active, 150), mixedRaws(t)...))
	wantActive := snap.ids(store.LifecycleActive)
	if len(wantActive) <= active {
		t.Fatalf("only %d active stages", len(wantActive))
	}
	srv := httptest.NewServer(newTestServer(t, newMemSource(snap), Options{}).Handler())
	defer srv.Close()
	seen, pages := replayNoetherRefresh(t, srv.URL)
	if len(seen) != len(wantActive) {
		t.Fatalf("saw %d active stages, want %d", len(seen), len(wantActive))
	}
	for _, id := range wantActive {
		if seen[id] != 1 {
			t.Fatalf("stage %s seen %d times", id, seen[id])
		}
	}
	if want := (len(wantActive) + 199) / 200; pages != want {
		t.Errorf("%d pages, want %d", pages, want)
	}
}

// replayNoetherRefresh pages GET /stages?lifecycle=active at base as
// noether 0.8.2's RemoteStageStore.refresh does (limit 200, offset
// advanced by the stages received, stop on an empty page or at total) and
// returns how often each stage was seen and how many pages it took.
func replayNoetherRefresh(t *testing.T, base string) (map[store.StageID]int, int) {
	t.Helper()
	seen := map[store.StageID]int{}
	pages := 0
	for offset := 0; ; {
		resp, err := http.Get(fmt.Sprintf("%s/stages?lifecycle=active&limit=200&offset=%d", base, offset))
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			OK     bool `json:"ok"`
			Result struct {
				Stages []json.RawMessage `json:"stages"`
				Total  uint64            `json:"total"`
			} `json:"result"`
		}
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || !env.OK {
			t.Fatalf("page at %d: %v ok=%v", offset, err, env.OK)
		}
		pages++
		for _, raw := range env.Result.Stages {
			st, err := store.DecodeStage(raw)
			if err != nil {
				t.Fatalf("page at %d: stage does not decode: %v", offset, err)
			}
			if st.Lifecycle.Kind != store.LifecycleActive {
				t.Fatalf("non-active stage %s in an active page", st.ID)
			}
			seen[st.ID]++
		}
		offset += len(env.Result.Stages)
		if len(env.Result.Stages) == 0 || uint64(offset) >= env.Result.Total {
			break
		}
	}
	return seen, pages
}

func TestServeGracefulShutdown(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), fixtureRaws(t))
	snap.block = make(chan struct{})
	src := newMemSource(snap)
	s := newTestServer(t, src, Options{ShutdownTimeout: 10 * time.Second})
	ln := newNotifyListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()

	got := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/stages?limit=3")
		errc <- err
		got <- resp
	}()
	await(t, snap.waiting, "the request to be in flight")
	cancel() // SIGTERM: stop accepting, drain
	await(t, ln.closed, "Serve to close its listener")
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after shutdown began")
	}
	close(snap.block)
	if err := <-errc; err != nil {
		t.Fatalf("the request in flight during the drain: %v", err)
	}
	resp := <-got
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != listBody(snap.byKind[store.LifecycleUnknown][:3], 85) {
		t.Errorf("in-flight request during drain: %d %.100s", resp.StatusCode, body)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v after a clean drain", err)
	}
}

func TestServeDrainTimeout(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), fixtureRaws(t))
	snap.block = make(chan struct{})
	defer close(snap.block)
	src := newMemSource(snap)
	s := newTestServer(t, src, Options{ShutdownTimeout: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln) }()
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/stages")
		if err == nil {
			resp.Body.Close()
		}
	}()
	await(t, snap.waiting, "the request to be in flight")
	cancel()
	if err := <-served; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Serve = %v, want a drain timeout", err)
	}
}

func TestServeListenerError(t *testing.T) {
	s := newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(1), nil)), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := s.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "serving on") {
		t.Errorf("Serve on a closed listener = %v", err)
	}
}

func TestNewRejectsNilSource(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

func TestRequestLog(t *testing.T) {
	var buf bytes.Buffer
	log := slogJSON(&buf)
	h := newTestServer(t, newMemSource(newMemSnapshot(t, testInfo(77), fixtureRaws(t))), Options{Logger: log}).Handler()
	do(t, h, "GET", "/stages?limit=1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line: %v: %s", err, buf.Bytes())
	}
	for _, k := range []string{"method", "path", "status", "bytes", "duration", "generation"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line lacks %s: %s", k, buf.Bytes())
		}
	}
	if line["generation"] != float64(77) || line["status"] != float64(200) {
		t.Errorf("log line %s", buf.Bytes())
	}
}

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

func TestClientGone(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), fixtureRaws(t))
	snap.block = make(chan struct{}) // never closed: Page waits for the context
	src := newMemSource(snap)
	var logs bytes.Buffer
	h := newTestServer(t, src, Options{Logger: slogJSON(&logs)}).Handler()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/stages", nil).WithContext(ctx))
	if rec.Code != 499 {
		t.Errorf("cancelled request answered %d", rec.Code)
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a client leaving was logged as an error: %s", logs.String())
	}
	if src.open.Load() != 0 {
		t.Error("snapshot left pinned")
	}
}

func TestMaxAgeNegative(t *testing.T) {
	snap := newMemSnapshot(t, testInfo(1), fixtureRaws(t)[:3])
	h := newTestServer(t, newMemSource(snap), Options{MaxAge: -1}).Handler()
	rec := do(t, h, "GET", "/stages/"+string(snap.stages[0].ID))
	if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" || rec.Header().Get("ETag") == "" {
		t.Errorf("Cache-Control %q, ETag %q", cc, rec.Header().Get("ETag"))
	}
}
