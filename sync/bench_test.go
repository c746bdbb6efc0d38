package sync_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Benchmarks of a sync against the fake registry run as a separate
// process (cmd/fakeregistry), so that the registry's copy of the stages
// does not count in this process's memory, with 20 ms of latency per
// request. Each iteration first downloads every page (the download-only
// rate), then syncs into a new mirror, sampling the heap and anonymous
// RSS every 5 ms. Run with -benchtime=1x; see BENCHMARKS.md.
func BenchmarkSync10k(b *testing.B)  { benchmarkSync(b, 10_000) }
func BenchmarkSync100k(b *testing.B) { benchmarkSync(b, 100_000) }

// BenchmarkSync200k shows the memory staying flat past 100k; its stages
// take about three minutes to generate the first time.
func BenchmarkSync200k(b *testing.B) { benchmarkSync(b, 200_000) }

const (
	benchSeed    = 1
	benchSize    = 5000
	benchLatency = 20 * time.Millisecond
)

// benchStagesFile returns a JSON array of n generated stages, cached in
// os.TempDir keyed by (n, seed, size): generating 100k signed stages takes
// over a minute.
func benchStagesFile(b *testing.B, n int) string {
	b.Helper()
	name := filepath.Join(os.TempDir(), fmt.Sprintf("noether-sync-bench-%d-%d-%d.json", n, benchSeed, benchSize))
	if _, err := os.Stat(name); err == nil {
		return name
	}
	stages, err := registrytest.GenerateStages(n, benchSeed, benchSize)
	if err != nil {
		b.Fatal(err)
	}
	data, err := json.Marshal(stages)
	if err != nil {
		b.Fatal(err)
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		b.Fatal(err)
	}
	return name
}

// memSampler records the peak HeapInuse and RssAnon while it runs.
type memSampler struct {
	stop        chan struct{}
	done        gosync.WaitGroup
	heapPeak    uint64
	rssPeak     uint64
	scratchPeak uint64 // bytes of mirror scratch files (mirror.Scratch)
}

// scratchBytes sums the sizes of the mirror scratch files this process
// has open (they are unlinked, so only /proc/self/fd finds them).
func scratchBytes() uint64 {
	fds, _ := os.ReadDir("/proc/self/fd")
	var n uint64
	for _, fd := range fds {
		p := "/proc/self/fd/" + fd.Name()
		if target, err := os.Readlink(p); err == nil && strings.Contains(target, ".mirror-scratch-") {
			if fi, err := os.Stat(p); err == nil {
				n += uint64(fi.Size())
			}
		}
	}
	return n
}

func rssAnon() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startSampler starts sampling. With NOETHER_BENCH_HEAP_PROFILE set to a
// file name, it also writes a heap profile there at every new peak.
func startSampler() *memSampler {
	s := &memSampler{stop: make(chan struct{})}
	profile := os.Getenv("NOETHER_BENCH_HEAP_PROFILE")
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.heapPeak && profile != "" {
				// Where the peak is: live objects as of the last GC.
				if f, err := os.Create(profile); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
			s.heapPeak = max(s.heapPeak, ms.HeapInuse)
			s.rssPeak = max(s.rssPeak, rssAnon())
			s.scratchPeak = max(s.scratchPeak, scratchBytes())
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *memSampler) Stop() { close(s.stop); s.done.Wait() }

// downloadAll lists every lifecycle with ListPage and nothing else.
func downloadAll(ctx context.Context, c *registry.Client) (stages, pages int, err error) {
	for _, lc := range []string{"draft", "active", "deprecated", "tombstone"} {
		for off := 0; ; {
			p, err := c.ListPage(ctx, lc, 200, off)
			if err != nil {
				return 0, 0, err
			}
			pages++
			stages += len(p.Stages)
			off += len(p.Stages)
			if len(p.Stages) == 0 || !p.HasTotal || off >= p.Total {
				break
			}
		}
	}
	return stages, pages, nil
}

func benchmarkSync(b *testing.B, n int) {
	if testing.Short() {
		b.Skip("long benchmark")
	}
	url := registrytest.StartProcess(b, registrytest.BuildProcess(b),
		"--stages", benchStagesFile(b, n), "--latency", benchLatency.String()).URL
	client, err := registry.New(url, registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ResetTimer()
	var dlTime, syncTime, listTime, pubTime time.Duration
	var heapPeak, rssPeak, rssBase, scratchPeak uint64
	var rep msync.Report
	var dlPages int
	for range b.N {
		t0 := time.Now()
		got, pages, err := downloadAll(ctx, client)
		if err != nil || got != n {
			b.Fatalf("download: %d stages, %v", got, err)
		}
		dlTime += time.Since(t0)
		dlPages = pages

		b.StopTimer()
		m, err := mirror.Create(filepath.Join(b.TempDir(), "bench.db"), mirror.Options{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		rssBase = rssAnon()
		b.StartTimer()

		s := startSampler()
		t0 = time.Now()
		rep, err = msync.Sync(ctx, m, client, msync.Options{})
		syncTime += time.Since(t0)
		listTime += time.Duration(rep.ListingMS) * time.Millisecond
		pubTime += time.Duration(rep.PublishMS) * time.Millisecond
		s.Stop()
		if err != nil || rep.Total != n {
			b.Fatalf("sync: total %d, %v", rep.Total, err)
		}
		heapPeak, rssPeak = max(heapPeak, s.heapPeak), max(rssPeak, s.rssPeak)
		scratchPeak = max(scratchPeak, s.scratchPeak)
		m.Close()
	}
	dlRate := float64(n*b.N) / dlTime.Seconds()
	syncRate := float64(n*b.N) / syncTime.Seconds()
	b.ReportMetric(dlRate, "download-stages/s")
	b.ReportMetric(syncRate, "sync-stages/s")
	b.ReportMetric(syncRate/dlRate, "sync/download")
	b.ReportMetric(listTime.Seconds()/float64(b.N), "listing-s")
	b.ReportMetric(pubTime.Seconds()/float64(b.N), "publish-s")
	b.ReportMetric(float64(rep.Commits), "commits")
	b.ReportMetric(float64(rep.Pages), "pages")
	b.ReportMetric(float64(dlPages), "download-pages")
	b.ReportMetric(float64(heapPeak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(rssPeak)/(1<<20), "peak-rssanon-MB")
	b.ReportMetric(float64(scratchPeak)/(1<<20), "peak-scratch-MB")
	b.ReportMetric(float64(rssBase)/(1<<20), "base-rssanon-MB")
}
