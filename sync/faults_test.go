package sync_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
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
	c, err := snapshotContent(m)
	if err != nil {
		t.Fatal(err)
	}
	return lastGood{meta.Generation, meta.Digest, c}
}

// check compares what a fresh reader of m's file sees with g.
func (g lastGood) check(t testing.TB, path string) {
	t.Helper()
	if err := g.compare(path); err != nil {
		t.Error(err)
	}
}

// compare is check without a testing.TB, for code that runs off the test
// goroutine (a registry hook): it returns what differs, nil when nothing.
func (g lastGood) compare(path string) error {
	r, err := mirror.Open(path, mirror.Options{})
	if err != nil {
		return fmt.Errorf("open the mirror as a reader: %w", err)
	}
	defer r.Close()
	var errs []error
	meta := r.Meta()
	if meta.Generation != g.gen || meta.Digest != g.digest {
		errs = append(errs, fmt.Errorf("reader sees generation %d digest %.12s, want the last good %d %.12s", meta.Generation, meta.Digest, g.gen, g.digest))
	}
	c, err := snapshotContent(r)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("reader cannot list the snapshot: %w", err))
	case c != g.content:
		errs = append(errs, errors.New("reader sees other content than the last good snapshot"))
	}
	return errors.Join(errs...)
}

// snapshotContent is contentOf returning its error instead of failing a
// test: id → bytes and quarantine keys of m's current snapshot.
func snapshotContent(m *mirror.Mirror) (string, error) {
	snap, err := m.Snapshot()
	if err != nil {
		return "", err
	}
	defer snap.Close()
	var b strings.Builder
	for rec, err := range snap.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %s\n", rec.ID, rec.Raw)
	}
	for q, err := range snap.Quarantined(context.Background()) {
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "Q %s %s\n", q.ID, q.Raw)
	}
	return b.String(), nil
}

// TestSyncFaults runs a second sync against a registry that changed
// (one stage added) and misbehaves. While it runs and after it ends,
// readers see the last good snapshot; a sync that succeeds ends with the
// registry's content, one that fails leaves everything as it was. Each
// case's fault runs on the test goroutine (it may fail the test) and
// returns what the registry's page hook does, if anything: that runs on a
// handler goroutine and only returns an error.
func TestSyncFaults(t *testing.T) {
	type fault func(t testing.TB, srv *registrytest.Server) func(lc string, offset int) error
	cases := []struct {
		name  string
		fault fault
		want  error // nil: the sync succeeds
	}{
		{name: "5xx then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.FailNext(2, 503); return nil }},
		{name: "5xx persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.FailNext(1000, 500); return nil }, want: registry.ErrServer},
		{name: "429 with Retry-After", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.RateLimitNext(2, time.Second)
			return nil
		}},
		{name: "429 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.RateLimitNext(1000, time.Second)
			return nil
		}, want: registry.ErrRateLimited},
		{name: "HTML 502 then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HTMLNext(2); return nil }},
		{name: "HTML 502 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HTMLNext(1000); return nil }, want: registry.ErrServer},
		{name: "slow pages", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.SlowPages(20 * time.Millisecond)
			return nil
		}},
		{name: "pages slower than the timeout", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.SlowPages(time.Second)
			return nil
		}, want: registry.ErrUnreachable},
		{name: "hung connection then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HangNext(1); return nil }},
		{name: "hung connections", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HangNext(1000); return nil }, want: registry.ErrUnreachable},
		{name: "truncated bodies then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.TruncateNext(2); return nil }},
		{name: "truncated bodies persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.TruncateNext(1000); return nil }, want: registry.ErrBadResponse},
		{name: "bad hash, bad signature, unknown fields", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.AddRaw(badHash(t, build(t, "f_hash", "h", store.Active)))
			s.AddRaw(badSig(t, build(t, "f_sig", "s", store.Active)))
			s.AddRaw(build(t, "f_unknown", "u", store.Active, store.ExtraField{Key: "x_new", Value: []byte(`true`)}).Raw)
			return nil
		}},
		{name: "drift", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			remove := removes(s, nthID(t, s, store.LifecycleActive, 0))
			var fired atomic.Bool
			return func(lc string, offset int) error {
				if lc == "active" && offset == 10 && fired.CompareAndSwap(false, true) {
					return remove()
				}
				return nil
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

			action := tc.fault(t, srv)
			var watched atomic.Int64
			var errs hookErrors
			srv.OnPage(func(lc string, offset int) {
				if action != nil {
					errs.add(action(lc, offset))
				}
				watched.Add(1)
				errs.add(good.compare(m.Path()))
			})
			rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
			srv.Close() // release hung requests, and wait for every hook
			errs.check(t)
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
			if watched.Load() == 0 && tc.want == nil {
				t.Errorf("the snapshot was never checked during the sync")
			}
		})
	}
}
