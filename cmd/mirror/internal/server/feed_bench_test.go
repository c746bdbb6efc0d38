package server

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	syncengine "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// BenchmarkDownstreamSync measures a downstream mirror's sync from an
// upstream mirror (issue 16): registry → A → B. Per sync it reports the
// requests and response bytes counted at A's server, the wall time
// (ns/op: the downstream's sync alone) and the report's PublishMS, with 0, 7, 100 and 1,000 stages changed in the
// registry since B's last sync, two ways:
//
//   - feed: B syncs with sync.Options{} and reads A's change feed;
//   - listing: another downstream, L, syncs with NoFeed and lists every
//     page of A, as from a registry.
//
// The registry holds n generated stages (seed 1, implementation_code of
// about 5000 bytes, about 6.3 KB a stage: the stages of sync's
// BenchmarkSync and BenchmarkSyncWrites, and their cache file in
// os.TempDir). Each iteration, untimed, brings B up to A (feed only: the
// listing's bytes do not depend on how far behind L is), changes k stages
// in the registry (about half added, a few removed, the rest moved to
// Deprecated) and syncs A from it; then the downstream's sync is timed.
// The fixture (registry, A, B and L, each synced in full once) is built
// once per n and process: for 100k stages that takes minutes.
//
// Every iteration's setup lists the whole registry (A's sync): run with
// -benchtime Nx (the benchmark skips itself with a time-based
// -benchtime, which would run hundreds of them). n is 10k; set
// MIRROR_BENCH_N (e.g. 100000, or "10000,100000") for others:
//
//	MIRROR_BENCH_N=10000,100000 go test ./cmd/mirror/internal/server -run '^$' \
//	  -bench BenchmarkDownstreamSync -benchtime 1x -count 3 -timeout 120m
func BenchmarkDownstreamSync(b *testing.B) {
	if f := flag.Lookup("test.benchtime"); f == nil || !strings.HasSuffix(f.Value.String(), "x") {
		b.Skip("needs -benchtime Nx (e.g. 1x): every iteration first syncs A from the whole registry")
	}
	sizes := []int{10_000}
	if s := os.Getenv("MIRROR_BENCH_N"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("MIRROR_BENCH_N=%q: want stage counts separated by commas", s)
			}
			sizes = append(sizes, n)
		}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			parent := b
			var fx *downstreamFixture // built by the first sub-benchmark that runs
			for _, k := range []int{0, 7, 100, 1000} {
				for _, variant := range []string{"feed", "listing"} {
					b.Run(fmt.Sprintf("changes=%d/%s", k, variant), func(b *testing.B) {
						if fx == nil {
							fx = newDownstreamFixture(b, parent, n)
						}
						fx.run(b, k, variant == "feed")
					})
				}
			}
		})
	}
}

// benchNode is one mirror of the benchmark's chain and its server, which
// counts requests and response bytes (chain_test.go's node, for a
// testing.TB).
func benchNode(tb testing.TB, dir, name string) *node {
	tb.Helper()
	m, err := mirror.Create(filepath.Join(dir, name+".db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	n := &node{m: m}
	h := newTestServer(tb, FromMirror(m), Options{}).Handler()
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.requests.Add(1)
		h.ServeHTTP(&countingWriter{ResponseWriter: w, n: &n.bytes}, r)
	}))
	tb.Cleanup(n.srv.Close)
	return n
}

func benchSync(tb testing.TB, n *node, url string, opts syncengine.Options) syncengine.Report {
	tb.Helper()
	c, err := registry.New(url, registry.Options{MaxAttempts: 1})
	if err != nil {
		tb.Fatal(err)
	}
	rep, err := syncengine.Sync(context.Background(), n.m, c, opts)
	if err != nil {
		tb.Fatalf("sync from %s: %v (report %+v)", url, err, rep)
	}
	return rep
}

// downstreamFixture is the chain registry → A → B (feed) and A → L
// (listing), and where the next changes come from.
type downstreamFixture struct {
	reg     *registrytest.Server
	a, d, l *node
	// stages are the registry's initial stages; next is the first not
	// yet considered for a removal or a lifecycle change.
	stages []json.RawMessage
	next   int
	round  int64
}

// The stages of sync's benchmarks (sync/bench_test.go): seed 1, code of
// about 5000 bytes.
const (
	downstreamSeed = 1
	downstreamSize = 5000
)

// downstreamStages returns n generated stages, cached in os.TempDir under
// the name sync's benchmarks use (generating 100k signed stages takes
// over a minute).
func downstreamStages(tb testing.TB, n int) []json.RawMessage {
	tb.Helper()
	name := filepath.Join(os.TempDir(), fmt.Sprintf("noether-sync-bench-%d-%d-%d.json", n, downstreamSeed, downstreamSize))
	var stages []json.RawMessage
	if data, err := os.ReadFile(name); err == nil && json.Unmarshal(data, &stages) == nil && len(stages) == n {
		return stages
	}
	stages, err := registrytest.GenerateStages(n, downstreamSeed, downstreamSize)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := json.Marshal(stages)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(name+".tmp", data, 0o644); err == nil {
		_ = os.Rename(name+".tmp", name)
	}
	return stages
}

// newDownstreamFixture builds the chain for n stages and syncs every
// mirror once. Its files and servers live until parent (the n=
// benchmark, whose sub-benchmarks share it) ends.
func newDownstreamFixture(b, parent *testing.B, n int) *downstreamFixture {
	b.StopTimer()
	defer b.StartTimer()
	t0 := time.Now()
	fx := &downstreamFixture{stages: downstreamStages(b, n)}
	reg, err := registrytest.NewServer(registrytest.Options{Stages: fx.stages})
	if err != nil {
		b.Fatal(err)
	}
	fx.reg = reg
	dir := parent.TempDir()
	parent.Cleanup(reg.Close)
	tb := parentCleanup{b, parent}
	fx.a, fx.d, fx.l = benchNode(tb, dir, "a"), benchNode(tb, dir, "b"), benchNode(tb, dir, "l")
	if rep := benchSync(b, fx.a, reg.URL(), syncengine.Options{}); rep.Total != n {
		b.Fatalf("A holds %d stages, want %d", rep.Total, n)
	}
	if rep := benchSync(b, fx.d, fx.a.srv.URL, syncengine.Options{}); !rep.Feed.Used || rep.Feed.From != 0 {
		b.Fatalf("B's first sync: feed %+v", rep.Feed)
	}
	benchSync(b, fx.l, fx.a.srv.URL, syncengine.Options{NoFeed: true})
	fx.same(b, fx.d)
	fx.same(b, fx.l)
	b.Logf("fixture for n=%d built in %s", n, time.Since(t0).Round(time.Millisecond))
	return fx
}

// parentCleanup is a sub-benchmark whose cleanups run when its parent
// ends.
type parentCleanup struct {
	*testing.B
	parent *testing.B
}

func (p parentCleanup) Cleanup(f func()) { p.parent.Cleanup(f) }

// same fails unless n holds A's content.
func (fx *downstreamFixture) same(b *testing.B, n *node) {
	b.Helper()
	got, want := n.m.Meta(), fx.a.m.Meta()
	if got.Digest != want.Digest || got.Total != want.Total {
		b.Fatalf("downstream at digest %.12s (%d stages), A at %.12s (%d stages)", got.Digest, got.Total, want.Digest, want.Total)
	}
}

// change changes k of the registry's stages: about half are new stages,
// k/50 (at least one) are removed, and the rest move from Active to
// Deprecated. It returns the bytes of the stages the changes leave in
// the registry.
func (fx *downstreamFixture) change(b *testing.B, k int) int64 {
	b.Helper()
	if k == 0 {
		return 0
	}
	fx.round++
	adds := k / 2
	removes := max(1, k/50)
	moves := k - adds - removes
	var size int64
	if adds > 0 {
		gen, err := registrytest.GenerateStages(adds, 1000+fx.round, downstreamSize)
		if err != nil {
			b.Fatal(err)
		}
		for _, raw := range gen {
			fx.reg.AddRaw(raw)
			size += int64(len(raw))
		}
	}
	for moves+removes > 0 {
		if fx.next >= len(fx.stages) {
			b.Fatal("no Active stages left to change")
		}
		st, err := store.DecodeStage(fx.stages[fx.next])
		fx.next++
		if err != nil {
			b.Fatal(err)
		}
		if st.Lifecycle.Kind != store.LifecycleActive {
			continue
		}
		if removes > 0 {
			fx.reg.Remove(st.ID)
			removes--
			continue
		}
		if err := fx.reg.SetLifecycle(st.ID, store.Lifecycle{Kind: store.LifecycleDeprecated}); err != nil {
			b.Fatal(err)
		}
		raw, _ := fx.reg.Stage(st.ID)
		size += int64(len(raw))
		moves--
	}
	return size
}

// run is one sub-benchmark: k changes a sync, by the feed (B) or by a
// listing (L).
func (fx *downstreamFixture) run(b *testing.B, k int, useFeed bool) {
	var reqs, nbytes, changed, publishMS int64
	for range b.N {
		b.StopTimer()
		down, opts := fx.l, syncengine.Options{NoFeed: true}
		if useFeed {
			down, opts = fx.d, syncengine.Options{}
			// Changes since B's last sync (a listing sub-benchmark's)
			// are not this iteration's.
			if rep := benchSync(b, down, fx.a.srv.URL, opts); !rep.Feed.Used {
				b.Fatalf("catching B up: feed not used: %+v", rep.Feed)
			}
			fx.same(b, down)
		}
		changed += fx.change(b, k)
		repA := benchSync(b, fx.a, fx.reg.URL(), syncengine.Options{})
		if got := repA.Added + repA.Changed + repA.LifecycleChanged + repA.Removed; got != k {
			b.Fatalf("A's sync applied %d changes, want %d (report %+v)", got, k, repA)
		}
		r0, b0 := fx.a.requests.Load(), fx.a.bytes.Load()
		b.StartTimer()
		rep := benchSync(b, down, fx.a.srv.URL, opts)
		b.StopTimer()
		reqs += fx.a.requests.Load() - r0
		nbytes += fx.a.bytes.Load() - b0
		fx.same(b, down)
		switch {
		case useFeed && (!rep.Feed.Used || (k > 0 && rep.Feed.From == 0) || rep.Feed.Items != k):
			b.Fatalf("feed not used for the %d changes: %+v", k, rep.Feed)
		case !useFeed && (rep.Feed.Used || rep.Pages == 0):
			b.Fatalf("NoFeed sync: feed %+v, %d pages", rep.Feed, rep.Pages)
		}
		publishMS += rep.PublishMS
		b.StartTimer()
	}
	per := func(x int64) float64 { return float64(x) / float64(b.N) }
	b.ReportMetric(per(nbytes), "bytes/sync")
	b.ReportMetric(per(reqs), "requests/sync")
	b.ReportMetric(per(publishMS), "publish-ms/sync")
	if useFeed && k > 0 {
		// Bytes beyond the changed stages' own: the feed's overhead.
		b.ReportMetric(per(nbytes-changed), "overhead-bytes/sync")
	}
}
