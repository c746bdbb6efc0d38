package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/feed"
	"github.com/noether-mirror/mirror/store"
	syncengine "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// node is one mirror of a chain: its file, and the server in front of
// it, which counts requests and response bytes.
type node struct {
	m        *mirror.Mirror
	srv      *httptest.Server
	requests atomic.Int64
	bytes    atomic.Int64
	// wrap, when set, rewrites responses (a tampering proxy, a cut).
	wrap atomic.Pointer[func(http.ResponseWriter, *http.Request, http.Handler)]
}

func newNode(t *testing.T, name string) *node {
	t.Helper()
	m, err := mirror.Create(filepath.Join(t.TempDir(), name+".db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	n := &node{m: m}
	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.requests.Add(1)
		cw := &countingWriter{ResponseWriter: w, n: &n.bytes}
		if f := n.wrap.Load(); f != nil {
			(*f)(cw, r, h)
			return
		}
		h.ServeHTTP(cw, r)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// rewriting is a node.wrap that answers each request with the server's
// response as fn rewrites its body; with cut, the connection is then
// aborted, so the client sees a body cut off.
func rewriting(fn func(r *http.Request, status int, body []byte) (out []byte, cut bool)) func(http.ResponseWriter, *http.Request, http.Handler) {
	return func(w http.ResponseWriter, r *http.Request, h http.Handler) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body, cut := fn(r, rec.Code, rec.Body.Bytes())
		for k, v := range rec.Header() {
			if k != "Content-Length" && k != "Etag" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
		if cut {
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
	}
}

// isStream reports whether r asks for a change stream.
func isStream(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, feed.ChangesPrefix+"/") }

// syncFrom syncs n from url and returns the report.
func (n *node) syncFrom(t *testing.T, url string, opts syncengine.Options) (syncengine.Report, error) {
	t.Helper()
	c, err := registry.New(url, registry.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return syncengine.Sync(context.Background(), n.m, c, opts)
}

func mustSync(t *testing.T, n *node, url string) syncengine.Report {
	t.Helper()
	rep, err := n.syncFrom(t, url, syncengine.Options{})
	if err != nil {
		t.Fatalf("sync from %s: %v (report %+v)", url, err, rep)
	}
	return rep
}

// sameContent fails unless every node holds the same stages, bytes and
// quarantine (equal digests) as the first.
func sameContent(t *testing.T, nodes ...*node) {
	t.Helper()
	want := nodes[0].m.Meta()
	a := mirrorContents(t, nodes[0].m)
	for i, n := range nodes[1:] {
		got := n.m.Meta()
		if got.Digest != want.Digest || got.Total != want.Total || got.Quarantined != want.Quarantined {
			t.Errorf("node %d: digest %.12s total %d quarantined %d; first node %.12s %d %d",
				i+1, got.Digest, got.Total, got.Quarantined, want.Digest, want.Total, want.Quarantined)
		}
		b := mirrorContents(t, n.m)
		for id, raw := range a {
			if !bytes.Equal(raw, b[id]) {
				t.Fatalf("node %d: stage %s differs", i+1, id)
			}
		}
	}
}

// chainRegistry is a fake registry with the fixture stages (one of them
// tampered, so every mirror quarantines it) and generated ones.
// syncedPair is a registry of the chain's stages plus generate more, a
// mirror A synced from it, and a mirror B synced from A's feed.
func syncedPair(t *testing.T, generate int) (*registrytest.Server, *node, *node) {
	t.Helper()
	reg := chainRegistry(t, generate)
	a, b := newNode(t, "a"), newNode(t, "b")
	mustSync(t, a, reg.URL())
	mustSync(t, b, a.srv.URL)
	return reg, a, b
}

func chainRegistry(t *testing.T, generate int) *registrytest.Server {
	t.Helper()
	upstream := mixedRaws(t)
	upstream[5] = bytes.Replace(upstream[5], []byte(`"signature_id": "`), []byte(`"signature_id": "0`), 1)
	stages := make([]json.RawMessage, len(upstream))
	for i, r := range upstream {
		stages[i] = r
	}
	reg, err := registrytest.NewServer(registrytest.Options{Stages: stages, Generate: generate, StageSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}

// TestChainOfMirrors: registry → A → B → C. Every level ends identical
// (equal digests, quarantine included); below A each sync reads the
// change feed: the whole content first, then only the changes, and an
// unchanged re-sync is one small request.
func TestChainOfMirrors(t *testing.T) {
	reg := chainRegistry(t, 300)
	a, b, c := newNode(t, "a"), newNode(t, "b"), newNode(t, "c")

	repA := mustSync(t, a, reg.URL())
	if repA.Feed.Used || !strings.Contains(repA.Feed.Fallback, "serves no change feed") || len(repA.Warnings) != 0 {
		t.Errorf("A from a plain registry: feed %+v, warnings %v", repA.Feed, repA.Warnings)
	}
	for _, n := range []struct {
		n    *node
		from *node
	}{{b, a}, {c, b}} {
		rep := mustSync(t, n.n, n.from.srv.URL)
		if !rep.Feed.Used || rep.Feed.From != 0 || rep.Pages != 0 || rep.Quarantined != 1 {
			t.Errorf("first sync from a mirror: feed %+v, %d pages, %d quarantined", rep.Feed, rep.Pages, rep.Quarantined)
		}
	}
	sameContent(t, a, b, c)

	// Unchanged: one request, a few hundred bytes, nothing written.
	before, beforeBytes := b.requests.Load(), b.bytes.Load()
	rep := mustSync(t, c, b.srv.URL)
	if reqs, got := b.requests.Load()-before, b.bytes.Load()-beforeBytes; rep.Outcome != syncengine.OutcomeUnchanged ||
		reqs > 2 || got > 16<<10 || !rep.Feed.Used {
		t.Errorf("unchanged re-sync: outcome %s, %d requests, %d bytes, feed %+v", rep.Outcome, reqs, got, rep.Feed)
	}

	// The registry changes: 7 new stages, a lifecycle, a removal.
	gen, err := registrytest.GenerateStages(7, 99, 300)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range gen {
		reg.AddRaw(raw)
	}
	snap := reg.Snapshot()
	var victim, moved store.StageID
	for _, raw := range snap {
		st, err := store.DecodeStage(raw)
		if err == nil && st.Lifecycle.Kind == store.LifecycleActive {
			if victim == "" {
				victim = st.ID
			} else if moved == "" && st.ID != victim {
				moved = st.ID
			}
		}
	}
	reg.Remove(victim)
	if err := reg.SetLifecycle(moved, store.Lifecycle{Kind: store.LifecycleDeprecated}); err != nil {
		t.Fatal(err)
	}
	mustSync(t, a, reg.URL())
	for _, n := range []struct {
		n    *node
		from *node
	}{{b, a}, {c, b}} {
		before, beforeBytes := n.from.requests.Load(), n.from.bytes.Load()
		rep := mustSync(t, n.n, n.from.srv.URL)
		if !rep.Feed.Used || rep.Feed.From == 0 || rep.Feed.Items != 9 || rep.Added != 7 || rep.Removed != 1 || rep.LifecycleChanged != 1 {
			t.Errorf("sync of 9 changes: feed %+v, added %d removed %d lifecycle %d", rep.Feed, rep.Added, rep.Removed, rep.LifecycleChanged)
		}
		if reqs, got := n.from.requests.Load()-before, n.from.bytes.Load()-beforeBytes; reqs != 2 || got > 8*1024+rawSize(gen) {
			t.Errorf("9 changes moved %d bytes in %d requests", got, reqs)
		}
	}
	sameContent(t, a, b, c)
	if got, want := c.m.Meta().UpstreamGeneration, b.m.Meta().Generation; got != want {
		t.Errorf("C records upstream generation %d, B is at %d", got, want)
	}
}

// TestFeedFallbacks: history collected past the downstream's generation
// (the whole content is read), a local edit downstream (likewise), and a
// plain registry (listing); every one says why.
func TestFeedFallbacks(t *testing.T) {
	reg, a, b := syncedPair(t, 100)

	// A moves on twice and keeps only its last generation.
	for i := range 2 {
		gen, _ := registrytest.GenerateStages(1, int64(200+i), 300)
		reg.AddRaw(gen[0])
		mustSync(t, a, reg.URL())
	}
	if _, err := a.m.GC(t.Context(), &mirror.KeepPolicy{Last: 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	rep := mustSync(t, b, a.srv.URL)
	if !rep.Feed.Used || rep.Feed.From != 0 || !strings.Contains(rep.Feed.Fallback, "no longer keeps generation") ||
		len(rep.Warnings) != 1 || rep.Warnings[0] != rep.Feed.Fallback {
		t.Errorf("collected: feed %+v, warnings %v", rep.Feed, rep.Warnings)
	}
	sameContent(t, a, b)

	// A local edit on B: its content is no longer A's, so B reads A's
	// whole content again, and the edit is undone.
	w, err := b.m.BeginLocal(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	gen, _ := registrytest.GenerateStages(1, 300, 300)
	st, _ := store.DecodeStage(gen[0])
	e := w.AdmitStage(st)
	if err := w.PutBatch([]mirror.Entry{e}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), mirror.PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	rep = mustSync(t, b, a.srv.URL)
	if !rep.Feed.Used || rep.Feed.From != 0 || rep.Removed != 1 {
		t.Errorf("after a local edit: feed %+v, removed %d", rep.Feed, rep.Removed)
	}
	sameContent(t, a, b)

	// A server with a trust policy serves no feed: a listing.
	trusted := httptest.NewServer(newTestServer(t, FromMirror(a.m), Options{Trust: &store.TrustPolicy{}}).Handler())
	defer trusted.Close()
	c := newNode(t, "c")
	rep, err = c.syncFrom(t, trusted.URL, syncengine.Options{MaxRemove: syncengine.MaxRemovePercent(100)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Feed.Used || !strings.Contains(rep.Feed.Fallback, "serves no change feed") || len(rep.Warnings) != 0 {
		t.Errorf("trust policy: feed %+v, warnings %v", rep.Feed, rep.Warnings)
	}
}

// tamperFeed re-encodes every change stream with one stage's bytes
// changed (a valid stream: the trailer is recomputed, as an attacker in
// the middle would), and the same stage in every page.
func tamperFeed(t *testing.T, id store.StageID) func(http.ResponseWriter, *http.Request, http.Handler) {
	evil := func(raw []byte) []byte {
		// The code no longer matches implementation_hash.
		return bytes.Replace(raw, []byte(`"implementation_code":"`), []byte(`"implementation_code":"import os; `), 1)
	}
	return rewriting(func(r *http.Request, status int, body []byte) ([]byte, bool) {
		switch {
		case isStream(r) && status == http.StatusOK:
			rd, err := feed.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return body, false
			}
			var out bytes.Buffer
			fw, _ := feed.NewWriter(&out, rd.Header())
			for {
				it, err := rd.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if it.Key == string(id) {
					it.Raw = evil(it.Raw)
				}
				_ = fw.Add(it.Kind, it.Key, it.Raw)
			}
			_ = fw.Close()
			return out.Bytes(), false
		case strings.HasPrefix(r.URL.Path, "/stages"):
			if idx := bytes.Index(body, []byte(`"id":"`+string(id))); idx >= 0 {
				return append(bytes.Clone(body[:idx]), evil(body[idx:])...), false
			}
		}
		return body, false
	})
}

// TestTamperedStageInFeed: a stage whose bytes were changed inside a
// well-formed change stream is quarantined by the same gate as one in a
// page, never served; the content then cannot reach the upstream's
// digest, so the sync lists every page (tampered there too) and says
// why.
func TestTamperedStageInFeed(t *testing.T) {
	reg := chainRegistry(t, 100)
	a, d := newNode(t, "a"), newNode(t, "d")
	mustSync(t, a, reg.URL())
	var victim store.StageID
	for _, raw := range reg.Snapshot() {
		if st, err := store.DecodeStage(raw); err == nil && store.Verify(st).OK() && bytes.Contains(raw, []byte(`"implementation_code":"`)) {
			victim = st.ID
			break
		}
	}
	f := tamperFeed(t, victim)
	a.wrap.Store(&f)
	rep := mustSync(t, d, a.srv.URL)
	if rep.Outcome != syncengine.OutcomePartial || !strings.Contains(strings.Join(rep.QuarantinedIDs, " "), string(victim)) {
		t.Errorf("outcome %s, quarantined %v, want %s among them", rep.Outcome, rep.QuarantinedIDs, victim)
	}
	if rep.Feed.Used || !strings.Contains(rep.Feed.Fallback, "judged 1 of the change feed's stages otherwise") {
		t.Errorf("feed %+v", rep.Feed)
	}
	sn, err := d.m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if _, err := sn.GetRaw(t.Context(), victim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the tampered stage is served: %v", err)
	}
}

func rawSize(raws []json.RawMessage) int64 {
	var n int64
	for _, r := range raws {
		n += int64(len(r))
	}
	return n
}

// TestFeedCutResumes: a change stream cut off mid-way fails the sync
// (nothing published, staging kept); the next sync resumes, reusing what
// the cut one staged, and ends with the upstream's digest.
func TestFeedCutResumes(t *testing.T) {
	reg := chainRegistry(t, 700)
	a, b := newNode(t, "a"), newNode(t, "b")
	mustSync(t, a, reg.URL())
	cut := rewriting(func(r *http.Request, _ int, body []byte) ([]byte, bool) {
		if !isStream(r) {
			return body, false
		}
		return body[:len(body)*3/4], true
	})
	a.wrap.Store(&cut)
	rep, err := b.syncFrom(t, a.srv.URL, syncengine.Options{})
	if err == nil || rep.Published || b.m.Meta().Generation != 0 {
		t.Fatalf("a cut stream: err %v, published %v, generation %d", err, rep.Published, b.m.Meta().Generation)
	}
	a.wrap.Store(nil)
	rep = mustSync(t, b, a.srv.URL)
	if !rep.Resumed || rep.Reused < 400 || !rep.Feed.Used {
		t.Errorf("resumed %v, reused %d, feed %+v", rep.Resumed, rep.Reused, rep.Feed)
	}
	sameContent(t, a, b)
}

// TestDamagedStreamFallsBack: a stream damaged the same way at every
// request (a bad cache entry, a server bug) fails its trailer check; the
// sync lists every page instead of failing on every run, and says why.
func TestDamagedStreamFallsBack(t *testing.T) {
	reg := chainRegistry(t, 100)
	a, b := newNode(t, "a"), newNode(t, "b")
	mustSync(t, a, reg.URL())
	damage := rewriting(func(r *http.Request, _ int, body []byte) ([]byte, bool) {
		if isStream(r) && len(body) > 100 {
			body[len(body)-100] ^= 0x01 // inside the last stage's bytes
		}
		return body, false
	})
	a.wrap.Store(&damage)
	rep := mustSync(t, b, a.srv.URL)
	if rep.Feed.Used || !strings.Contains(rep.Feed.Fallback, "damaged") || rep.Pages == 0 || len(rep.Warnings) == 0 {
		t.Errorf("feed %+v, %d pages, warnings %v", rep.Feed, rep.Pages, rep.Warnings)
	}
	if got, want := b.m.Meta().Total, a.m.Meta().Total; got != want {
		t.Errorf("B holds %d stages, A %d", got, want)
	}
}

// TestIncompleteChangesReadWhole: a stream of changes that is well
// formed but leaves one change out (a server bug) cannot reach the
// upstream's digest: nothing of it is published, and the sync reads the
// upstream's whole content instead, and says why.
func TestIncompleteChangesReadWhole(t *testing.T) {
	reg, a, b := syncedPair(t, 100)
	gen, _ := registrytest.GenerateStages(2, 500, 300)
	for _, raw := range gen {
		reg.AddRaw(raw)
	}
	mustSync(t, a, reg.URL())
	dropOne := rewriting(func(r *http.Request, status int, body []byte) ([]byte, bool) {
		if !isStream(r) || strings.HasPrefix(r.URL.Path, feed.ChangesPrefix+"/0/") || status != http.StatusOK {
			return body, false
		}
		rd, err := feed.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Error(err)
			return body, false
		}
		h := rd.Header()
		h.Items--
		var out bytes.Buffer
		fw, _ := feed.NewWriter(&out, h)
		for i := 0; ; i++ {
			it, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if i > 0 {
				_ = fw.Add(it.Kind, it.Key, it.Raw)
			}
		}
		_ = fw.Close()
		return out.Bytes(), false
	})
	a.wrap.Store(&dropOne)
	rep := mustSync(t, b, a.srv.URL)
	if !rep.Feed.Used || rep.Feed.From != 0 || !strings.Contains(rep.Feed.Fallback, "did not reach the upstream's digest") || len(rep.Warnings) != 1 {
		t.Errorf("feed %+v, warnings %v", rep.Feed, rep.Warnings)
	}
	sameContent(t, a, b)
}
