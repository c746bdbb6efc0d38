package server

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/feed"
	"github.com/noether-mirror/mirror/store"
	syncengine "github.com/noether-mirror/mirror/sync"
)

// feedMirror is a mirror with three generations: raws[:20], raws[5:30]
// (plus one quarantined entry), raws[5:30] with one revised stage.
func feedMirror(t *testing.T) (*mirror.Mirror, [][]byte) {
	t.Helper()
	raws := signedRaws(t, 11, 30)
	m, err := mirror.Create(filepath.Join(t.TempDir(), "m.db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	publishMirror(t, m, raws[:20], 0, fixedNow)
	publishMirror(t, m, raws[5:30], 1, fixedNow)
	next := append([][]byte{}, raws[5:30]...)
	next[3] = withLifecycle(t, next[3], store.Lifecycle{Kind: store.LifecycleDeprecated})
	publishMirror(t, m, next, 1, fixedNow)
	return m, raws
}

func readFeed(t *testing.T, body []byte) (feed.Header, []feed.Item) {
	t.Helper()
	r, err := feed.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var items []feed.Item
	for {
		it, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Header(), items
		}
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, it)
	}
}

func TestFeedCapabilities(t *testing.T) {
	m, _ := feedMirror(t)
	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	for _, path := range []string{"/mirror/v1/", "/mirror/v1"} {
		rec := do(t, h, http.MethodGet, path)
		env := decodeEnvelope(t, rec)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		var c feed.Capabilities
		if err := json.Unmarshal(env.Result, &c); err != nil {
			t.Fatal(err)
		}
		meta := m.Meta()
		if c.Mirror != feed.Software || c.FeedVersion != feed.Version || c.Generation != meta.Generation ||
			c.Digest != meta.Digest || c.Oldest != 0 || c.Total != meta.Total {
			t.Errorf("%s: capabilities %+v, meta generation %d digest %s total %d", path, c, meta.Generation, meta.Digest, meta.Total)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("Cache-Control %q", cc)
		}
		if rec := do(t, h, http.MethodGet, path, "If-None-Match", rec.Header().Get("ETag")); rec.Code != http.StatusNotModified {
			t.Errorf("revalidation: %d", rec.Code)
		}
	}
}

func TestFeedStream(t *testing.T) {
	m, raws := feedMirror(t)
	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	cur := m.Meta()
	rec := do(t, h, http.MethodGet, feed.ChangesPath(1, cur.Generation))
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != feed.ContentType || !strings.Contains(cc, "immutable") {
		t.Errorf("Content-Type %q Cache-Control %q", ct, cc)
	}
	hdr, items := readFeed(t, rec.Body.Bytes())
	if hdr.From != 1 || hdr.To != cur.Generation || hdr.Digest != cur.Digest || hdr.Total != 25 || hdr.Quarantined != 1 {
		t.Errorf("header %+v", hdr)
	}
	kinds := map[mirror.ChangeKind]int{}
	for _, it := range items {
		kinds[it.Kind]++
	}
	want := map[mirror.ChangeKind]int{mirror.ChangeAdded: 10, mirror.ChangeRemoved: 5, mirror.ChangeLifecycle: 1, mirror.ChangeQuarantined: 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("items by kind %v, want %v", kinds, want)
	}
	// Added stages carry their exact bytes.
	byKey := map[string][]byte{}
	for _, it := range items {
		byKey[it.Key] = it.Raw
	}
	st, _ := store.DecodeStage(raws[25])
	if !bytes.Equal(byKey[string(st.ID)], raws[25]) {
		t.Error("an added stage's bytes differ from what was mirrored")
	}
	// Revalidation, HEAD, and the full feed from 0.
	if rec := do(t, h, http.MethodGet, feed.ChangesPath(1, cur.Generation), "If-None-Match", rec.Header().Get("ETag")); rec.Code != http.StatusNotModified {
		t.Errorf("revalidation: %d", rec.Code)
	}
	if rec := do(t, h, http.MethodHead, feed.ChangesPath(1, cur.Generation)); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	full := do(t, h, http.MethodGet, feed.ChangesPath(0, cur.Generation))
	hdr, items = readFeed(t, full.Body.Bytes())
	if !hdr.Full || len(items) != 26 {
		t.Errorf("full feed: full %v, %d items", hdr.Full, len(items))
	}
}

func TestFeedRedirectAndErrors(t *testing.T) {
	m, _ := feedMirror(t)
	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	cur := m.Meta().Generation
	rec := do(t, h, http.MethodGet, "/mirror/v1/changes?since=1")
	if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != feed.ChangesPath(1, cur) || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("since=1: %d Location %q Cache-Control %q", rec.Code, rec.Header().Get("Location"), rec.Header().Get("Cache-Control"))
	}
	for _, tc := range []struct {
		path   string
		status int
		says   string
	}{
		{"/mirror/v1/changes?since=x", http.StatusBadRequest, "generation number"},
		{"/mirror/v1/changes/3/1", http.StatusBadRequest, "from ≤ to"},
		{"/mirror/v1/changes/01/3", http.StatusBadRequest, "two generation numbers"},
		{"/mirror/v1/changes/1", http.StatusBadRequest, "two generation numbers"},
		{fmt.Sprintf("/mirror/v1/changes/1/%d", cur+5), http.StatusNotFound, "does not exist yet"},
		{"/at/1/mirror/v1/", http.StatusNotFound, "pinned generation"},
	} {
		rec := do(t, h, http.MethodGet, tc.path)
		env := decodeEnvelope(t, rec)
		if rec.Code != tc.status || env.Error == nil || !strings.Contains(env.Error.Message, tc.says) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.path, rec.Code, rec.Body, tc.status, tc.says)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: error cached: %q", tc.path, cc)
		}
	}
	// Collected: the oldest kept is named.
	if _, err := m.GC(t.Context(), &mirror.KeepPolicy{Last: 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	rec = do(t, h, http.MethodGet, feed.ChangesPath(1, cur))
	env := decodeEnvelope(t, rec)
	if rec.Code != http.StatusNotFound || !strings.Contains(env.Error.Message, fmt.Sprintf("oldest generation kept is %d", cur)) {
		t.Errorf("collected: %d %s", rec.Code, rec.Body)
	}
	// A trust policy hides stages a feed would carry: no feed.
	ht := newTestServer(t, FromMirror(m), Options{Trust: &store.TrustPolicy{}}).Handler()
	for _, p := range []string{"/mirror/v1/", feed.ChangesPath(0, cur)} {
		if rec := do(t, ht, http.MethodGet, p); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "trusted-keys") {
			t.Errorf("with a trust policy, %s: %d %s", p, rec.Code, rec.Body)
		}
	}
}

// TestFeedWait: ?since=G&wait=D answers as soon as a newer generation
// is published, and after D when none is.
func TestFeedWait(t *testing.T) {
	m, raws := feedMirror(t)
	m2, err := mirror.Open(m.Path(), mirror.Options{ReloadInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	h := newTestServer(t, FromMirror(m2), Options{}).Handler()
	cur := m.Meta().Generation
	start := time.Now()
	rec := do(t, h, http.MethodGet, fmt.Sprintf("/mirror/v1/?since=%d&wait=300ms", cur))
	if time.Since(start) < 250*time.Millisecond || rec.Code != http.StatusOK {
		t.Errorf("no new generation: answered after %s with %d", time.Since(start), rec.Code)
	}
	done := make(chan *http.Response, 1)
	go func() {
		rec := do(t, h, http.MethodGet, fmt.Sprintf("/mirror/v1/?since=%d&wait=30s", cur))
		done <- rec.Result()
	}()
	time.Sleep(100 * time.Millisecond)
	publishMirror(t, m, raws[:3], 0, fixedNow)
	select {
	case resp := <-done:
		var env envelope
		_ = json.NewDecoder(resp.Body).Decode(&env)
		var c feed.Capabilities
		_ = json.Unmarshal(env.Result, &c)
		if c.Generation != cur+1 {
			t.Errorf("woke up at generation %d, want %d", c.Generation, cur+1)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll did not end when a generation was published")
	}
	if rec := do(t, h, http.MethodGet, "/mirror/v1/?wait=forever&since=1"); rec.Code != http.StatusBadRequest {
		t.Errorf("bad wait: %d", rec.Code)
	}
}

// TestFeedFormat1: a format-1 mirror (written before generations) has
// no content digest to prove a feed against: it serves none, and a
// downstream lists its pages.
func TestFeedFormat1(t *testing.T) {
	gz, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "mirror", "testdata", "format1", "mirror.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "f1.db")
	if err := os.WriteFile(db, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := mirror.Open(db, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	rec := do(t, h, http.MethodGet, "/mirror/v1/")
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "format-1") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	down := newNode(t, "down")
	rep, err := down.syncFrom(t, srv.URL, syncengine.Options{})
	if err != nil || rep.Feed.Used || len(rep.Warnings) != 0 || rep.Total != m.Meta().Total {
		t.Fatalf("sync from a format-1 mirror: err %v, feed %+v, warnings %v, total %d", err, rep.Feed, rep.Warnings, rep.Total)
	}
}
