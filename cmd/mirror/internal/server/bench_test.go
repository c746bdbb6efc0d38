package server

import (
	"crypto/ed25519"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

const benchStages = 100_000

// benchFakeData is a 100k-stage in-memory source, built once per test
// binary (benchmark functions run several times).
var benchFakeData struct {
	once sync.Once
	src  *memSource
	ids  []store.StageID
}

func benchFake(b *testing.B) (*memSource, []store.StageID) {
	benchFakeData.once.Do(func() {
		snap := newMemSnapshot(b, testInfo(1), genRaws(b, 7, benchStages, 0))
		benchFakeData.src, benchFakeData.ids = newMemSource(snap), snap.ids(store.LifecycleUnknown)
	})
	if benchFakeData.src == nil {
		b.Fatal("building the benchmark source failed")
	}
	return benchFakeData.src, benchFakeData.ids
}

func BenchmarkFakeListPage(b *testing.B) {
	src, _ := benchFake(b)
	benchListPage(b, src, benchStages)
}

func BenchmarkFakeGetStage(b *testing.B) {
	src, ids := benchFake(b)
	benchGetStage(b, src, ids)
}

// benchListPage measures a 200-stage page at offset 0 and at the end of a
// listing of n stages (active only: lifecycle=active, as noether asks).
func benchListPage(b *testing.B, src Source, n int) {
	s, err := New(src, Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	for _, offset := range []int{0, n - 200} {
		b.Run("offset="+strconv.Itoa(offset), func(b *testing.B) {
			target := "/stages?lifecycle=active&limit=200&offset=" + strconv.Itoa(offset)
			var bytes int64
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				bytes = int64(rec.Body.Len())
			}
			b.SetBytes(bytes)
		})
	}
}

// benchGetStage measures GET /stages/{id} throughput with parallel clients
// hitting random ids, reporting requests per second.
func benchGetStage(b *testing.B, src Source, ids []store.StageID) {
	s, err := New(src, Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	var next atomic.Uint64
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(7919) % uint64(len(ids))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/stages/"+string(ids[i]), nil))
			if rec.Code != 200 {
				b.Errorf("status %d", rec.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}

// benchTrustData is a 100k-stage source of which half are signed by a
// trusted key (active) and half unsigned, built once per test binary.
var benchTrustData struct {
	once   sync.Once
	src    *memSource
	policy *store.TrustPolicy
}

func benchTrust(b *testing.B) (*memSource, *store.TrustPolicy) {
	benchTrustData.once.Do(func() {
		ops := trustKey("ops")
		raws := genRaws(b, 9, benchStages/2, 0) // unsigned
		for i := range benchStages / 2 {
			raws = append(raws, mint(b, ops, "bench_"+strconv.Itoa(i), store.Active).Raw)
		}
		benchTrustData.src = newMemSource(newMemSnapshot(b, testInfo(1), raws))
		benchTrustData.policy = trustPolicy(b, map[string]ed25519.PrivateKey{"ops": ops})
	})
	if benchTrustData.src == nil {
		b.Fatal("building the benchmark source failed")
	}
	return benchTrustData.src, benchTrustData.policy
}

// BenchmarkTrustViewBuild measures applying a trust policy to a new
// 100k-stage snapshot (what the first request after a sync, or Serve's
// warm-up, pays), and reports the heap the finished view keeps per
// snapshot stage.
func BenchmarkTrustViewBuild(b *testing.B) {
	src, policy := benchTrust(b)
	snap, err := src.Acquire()
	if err != nil {
		b.Fatal(err)
	}
	defer snap.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v, err := buildTrustView(b.Context(), snap, snap.Info(), policy)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if v.served() != benchStages/2 || v.untrusted != benchStages/2 {
		b.Fatalf("view serves %d, holds back %d", v.served(), v.untrusted)
	}
	kept := float64(after.HeapAlloc-before.HeapAlloc) / float64(benchStages)
	runtime.KeepAlive(v)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildTrustView(b.Context(), snap, snap.Info(), policy); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(kept, "heapB/stage")
}

// BenchmarkTrustListPage is BenchmarkFakeListPage under a trust policy
// (50k trusted active stages of 100k): pages are served from the cached
// view, at the start and at the end of the listing.
func BenchmarkTrustListPage(b *testing.B) {
	src, policy := benchTrust(b)
	s, err := New(src, Options{Trust: policy})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	// Build the view outside the timings.
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/stages?limit=0", nil))
	for _, offset := range []int{0, benchStages/2 - 200} {
		b.Run("offset="+strconv.Itoa(offset), func(b *testing.B) {
			target := "/stages?lifecycle=active&limit=200&offset=" + strconv.Itoa(offset)
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
				if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"total":50000}`) {
					b.Fatalf("status %d: %.200s", rec.Code, rec.Body)
				}
			}
		})
	}
}
