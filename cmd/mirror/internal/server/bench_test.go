package server

import (
	"net/http/httptest"
	"strconv"
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
