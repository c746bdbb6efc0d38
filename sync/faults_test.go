package sync_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// lastGood captures the published snapshot so that a test can check,
// during and after a failing sync, that readers still see exactly it.
type lastGood struct {
	gen     uint64
	digest  string
	content string
}

func capture(t testing.TB, m *mirror.Mirror) lastGood {
	t.Helper()
	meta := m.Meta()
	return lastGood{meta.Generation, meta.Digest, contentOf(t, m)}
}

// check compares what a fresh reader of m's file sees with g.
func (g lastGood) check(t testing.TB, path string) {
	t.Helper()
	r, err := mirror.Open(path, mirror.Options{})
	if err != nil {
		t.Errorf("open the mirror as a reader: %v", err)
		return
	}
	defer r.Close()
	meta := r.Meta()
	if meta.Generation != g.gen || meta.Digest != g.digest {
		t.Errorf("reader sees generation %d digest %.12s, want the last good %d %.12s", meta.Generation, meta.Digest, g.gen, g.digest)
	}
	if c := contentOf(t, r); c != g.content {
		t.Errorf("reader sees other content than the last good snapshot")
	}
}

// TestSyncFaults runs a second sync against a registry that changed
// (one stage added) and misbehaves. While it runs and after it ends,
// readers see the last good snapshot; a sync that succeeds ends with the
// registry's content, one that fails leaves everything as it was.
func TestSyncFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault func(t testing.TB, srv *registrytest.Server) func(string, int)
		want  error // nil: the sync succeeds
	}{
		{name: "5xx then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.FailNext(2, 503); return nil }},
		{name: "5xx persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.FailNext(1000, 500); return nil }, want: registry.ErrServer},
		{name: "429 with Retry-After", fault: func(t testing.TB, s *registrytest.Server) func(string, int) {
			s.RateLimitNext(2, time.Second)
			return nil
		}},
		{name: "429 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) {
			s.RateLimitNext(1000, time.Second)
			return nil
		}, want: registry.ErrRateLimited},
		{name: "HTML 502 then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.HTMLNext(2); return nil }},
		{name: "HTML 502 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.HTMLNext(1000); return nil }, want: registry.ErrServer},
		{name: "slow pages", fault: func(t testing.TB, s *registrytest.Server) func(string, int) {
			s.SlowPages(20 * time.Millisecond)
			return nil
		}},
		{name: "pages slower than the timeout", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.SlowPages(time.Second); return nil }, want: registry.ErrUnreachable},
		{name: "hung connection then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.HangNext(1); return nil }},
		{name: "hung connections", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.HangNext(1000); return nil }, want: registry.ErrUnreachable},
		{name: "truncated bodies then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.TruncateNext(2); return nil }},
		{name: "truncated bodies persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) { s.TruncateNext(1000); return nil }, want: registry.ErrBadResponse},
		{name: "bad hash, bad signature, unknown fields", fault: func(t testing.TB, s *registrytest.Server) func(string, int) {
			s.AddRaw(badHash(t, build(t, "f_hash", "h", store.Active)))
			s.AddRaw(badSig(t, build(t, "f_sig", "s", store.Active)))
			s.AddRaw(build(t, "f_unknown", "u", store.Active, store.ExtraField{Key: "x_new", Value: []byte(`true`)}).Raw)
			return nil
		}},
		{name: "drift", fault: func(t testing.TB, s *registrytest.Server) func(string, int) {
			fired := false
			return func(lc string, offset int) {
				if lc == "active" && offset == 10 && !fired {
					fired = true
					s.Remove(lifecycleIDs(t, s, store.LifecycleActive)[0])
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 6)})
			m := newMirror(t)
			mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
			good := capture(t, m)
			srv.AddRaw(build(t, "f_added", "added upstream", store.Active).Raw)

			hook := tc.fault(t, srv)
			watched := 0
			srv.OnPage(chain(hook, func(string, int) {
				watched++
				good.check(t, m.Path())
			}))
			rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
			srv.Close() // release hung requests
			if tc.want == nil {
				if err != nil {
					t.Fatalf("sync: %v", err)
				}
				if rep.Generation != good.gen+1 {
					t.Errorf("generation %d, want %d", rep.Generation, good.gen+1)
				}
				assertMirrors(t, m, srv)
			} else {
				if !errors.Is(err, tc.want) {
					t.Fatalf("sync: %v, want %v", err, tc.want)
				}
				if rep.Published {
					t.Errorf("failed sync reports Published")
				}
				good.check(t, m.Path())
			}
			if watched == 0 && tc.want == nil {
				t.Errorf("the snapshot was never checked during the sync")
			}
		})
	}
}

func chain(fs ...func(string, int)) func(string, int) {
	return func(lc string, off int) {
		for _, f := range fs {
			if f != nil {
				f(lc, off)
			}
		}
	}
}
