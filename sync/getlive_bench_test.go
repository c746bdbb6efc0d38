package sync_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// BenchmarkGetLive times RemoteStageStore.GetLive of one stage against an
// in-process fake registry (registrytest.NewServer, loopback, no added
// latency) with a mirror already synced from it at 1k, 10k and 100k
// stages (benchStagesFile's stages; the synced mirror is cached under
// os.TempDir, see benchSyncedMirror, and each run works on a copy). GetLive
// asks the registry for the stage, verifies it and upserts it into the
// mirror, which publishes (durable on return).
//
//   - unchanged: the registry's copy is the one the mirror holds, so the
//     Upsert finds those bytes held and admissible, and writes nothing.
//   - changed: before each op (not timed) the registry's copy gets a new
//     description (bumpDescription), so each GetLive publishes a delta.
//
// Each op is timed, and the benchmark reports p50-ms, p90-ms, p99-ms and
// max-ms over them, with the layer count at the end. Connect's first
// sync (an unchanged sync: 10–30 s at 100k) is not timed.
//
//	go test ./sync -run '^$' -bench BenchmarkGetLive -benchtime 300x -timeout 60m
func BenchmarkGetLive(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { benchGetLive(b, n) })
	}
}

func benchGetLive(b *testing.B, n int) {
	ctx := context.Background()
	raw, err := os.ReadFile(benchStagesFile(b, n))
	if err != nil {
		b.Fatal(err)
	}
	var stages []json.RawMessage
	if err := json.Unmarshal(raw, &stages); err != nil {
		b.Fatal(err)
	}
	raw = nil
	srv, err := registrytest.NewServer(registrytest.Options{Stages: stages})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	path := copyMirror(b, benchSyncedMirror(b, srv, n))
	r, err := msync.Connect(ctx, srv.URL(), "", msync.RemoteOptions{MirrorPath: path})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if rep := r.Status().Report; rep == nil || rep.Changed != 0 || rep.Total != n {
		b.Fatalf("Connect's sync: %+v, want %d stages, nothing changed", rep, n)
	}
	round := 0
	for _, variant := range []string{"unchanged", "changed"} {
		b.Run(variant, func(b *testing.B) {
			rnd := rand.New(rand.NewPCG(5, uint64(n)))
			var all []time.Duration
			for b.Loop() {
				b.StopTimer()
				j := rnd.IntN(len(stages))
				if variant == "changed" {
					round++
					stages[j] = bumpDescription(b, srv, stages[j], round)
				}
				s, err := store.DecodeStage(stages[j])
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				t0 := time.Now()
				got, err := r.GetLive(ctx, s.ID)
				took := time.Since(t0)
				b.StopTimer()
				if err != nil || got == nil {
					b.Fatalf("GetLive(%s): %v, %v", s.ID, got, err)
				}
				all = append(all, took)
				b.StartTimer()
			}
			slices.Sort(all)
			q := func(f float64) float64 {
				return float64(all[int(f*float64(len(all)-1)+0.5)]) / float64(time.Millisecond)
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.9), "p90-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
			b.ReportMetric(float64(r.Mirror().Meta().Layers), "layers")
		})
	}
}

// benchSyncedMirror returns the path of a mirror synced from srv, which serves
// the n stages of benchStagesFile. It is built once and cached in
// os.TempDir()/noether-sync-bench-mirror-v<format>-<n>-<seed>-<size>
// (a 100k sync takes minutes); delete that directory after a format
// change. Benchmarks that write use copyMirror.
func benchSyncedMirror(b *testing.B, srv *registrytest.Server, n int) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("noether-sync-bench-mirror-v%d-%d-%d-%d", mirror.FormatVersion, n, benchSeed, benchSize))
	path := filepath.Join(dir, "mirror.db")
	if m, err := mirror.Open(path, mirror.Options{}); err == nil {
		total := m.Meta().Total
		m.Close()
		if total == n {
			return path
		}
	}
	b.Logf("syncing the %d-stage benchmark mirror into %s", n, dir)
	os.RemoveAll(dir)
	m, err := mirror.Create(path, mirror.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	client, err := registry.New(srv.URL(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := msync.Sync(context.Background(), m, client, msync.Options{}); err != nil {
		b.Fatal(err)
	}
	return path
}

// copyMirror copies the mirror at path into a fresh directory: the
// manifest and deltas are copied, base files (never written once
// published) hard-linked where the file system allows.
func copyMirror(b *testing.B, path string) string {
	b.Helper()
	dst := filepath.Join(b.TempDir(), "mirror.db")
	if err := os.Mkdir(dst+".gens", 0o755); err != nil {
		b.Fatal(err)
	}
	ents, err := os.ReadDir(path + ".gens")
	if err != nil {
		b.Fatal(err)
	}
	copyFile := func(from, to string) {
		raw, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(to, raw, 0o644)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, e := range ents {
		from, to := filepath.Join(path+".gens", e.Name()), filepath.Join(dst+".gens", e.Name())
		if strings.HasSuffix(e.Name(), ".base") && os.Link(from, to) == nil {
			continue
		}
		copyFile(from, to)
	}
	copyFile(path, dst)
	if _, err := os.Stat(path + ".state"); err == nil {
		copyFile(path+".state", dst+".state")
	}
	return dst
}
