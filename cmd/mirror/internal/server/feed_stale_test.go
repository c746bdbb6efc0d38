package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror/feed"
)

// TestStaleStreamIsNotPublished: a cache in front of an upstream that
// was rebuilt (same generation numbers, other content) still serves the
// old stream for a pair. The downstream must not publish that content as
// proven equal to the upstream's current generation, nor record the
// upstream's position with the old digest.
func TestStaleStreamIsNotPublished(t *testing.T) {
	old, now := newNode(t, "old"), newNode(t, "now")
	mustSync(t, old, chainRegistry(t, 20).URL())
	mustSync(t, now, chainRegistry(t, 30).URL())
	if o, n := old.m.Meta(), now.m.Meta(); o.Generation != n.Generation || o.Digest == n.Digest {
		t.Fatalf("want two generations with one number and two digests: %d %.12s, %d %.12s", o.Generation, o.Digest, n.Generation, n.Digest)
	}
	stale := newTestServer(t, FromMirror(old.m), Options{}).Handler()
	f := func(w http.ResponseWriter, r *http.Request, h http.Handler) {
		if strings.HasPrefix(r.URL.Path, feed.ChangesPrefix+"/") {
			stale.ServeHTTP(w, r) // the cache's copy
			return
		}
		h.ServeHTTP(w, r)
	}
	now.wrap.Store(&f)
	c := newNode(t, "c")
	rep := mustSync(t, c, now.srv.URL)
	got, want := c.m.Meta(), now.m.Meta()
	// A listing cannot see the upstream's quarantine: compare the stages.
	if got.Total != want.Total {
		t.Errorf("downstream holds %d stages (feed %+v), the upstream %d", got.Total, rep.Feed, want.Total)
	}
	if got.UpstreamDigest != "" && got.UpstreamDigest != want.Digest {
		t.Errorf("downstream records upstream digest %.12s for generation %d, the upstream's is %.12s", got.UpstreamDigest, got.UpstreamGeneration, want.Digest)
	}
	if rep.Feed.Used {
		t.Errorf("a stale stream was used: %+v", rep.Feed)
	}
}
