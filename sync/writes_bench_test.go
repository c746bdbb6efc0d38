package sync_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// BenchmarkSyncWrites measures the bytes a sync of an already synced
// mirror writes (write_bytes of /proc/self/io: page-cache pages dirtied
// and direct writes), with 0, 7, 100 and 1,000 stages changed upstream,
// and whether it rewrote the snapshot file. write_bytes is an upper
// bound: it also counts the pages of the sync's scratch files
// (mirror.Scratch), which are unlinked, so the kernel drops them unwritten
// when the sync ends before its writeback delay (30 s by default). The registry runs in-process; it writes
// nothing. Each iteration changes the descriptions of `changed` stages
// (ids and signatures stay valid) and syncs once. Run with -benchtime=1x
// or a few x; see sync/BENCHMARKS.md.
func BenchmarkSyncWrites10k(b *testing.B)  { benchmarkSyncWrites(b, 10_000) }
func BenchmarkSyncWrites100k(b *testing.B) { benchmarkSyncWrites(b, 100_000) }

func benchmarkSyncWrites(b *testing.B, n int) {
	if _, err := os.Stat("/proc/self/io"); err != nil {
		b.Skip("needs /proc/self/io (Linux)")
	}
	raw, err := os.ReadFile(benchStagesFile(b, n))
	if err != nil {
		b.Fatal(err)
	}
	var stages []json.RawMessage
	if err := json.Unmarshal(raw, &stages); err != nil {
		b.Fatal(err)
	}
	srv, err := registrytest.NewServer(registrytest.Options{Stages: stages})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	dir := b.TempDir()
	m, err := mirror.Create(filepath.Join(dir, "mirror.db"), mirror.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	client := newClient(b, srv.URL())
	if _, err := msync.Sync(context.Background(), m, client, msync.Options{}); err != nil {
		b.Fatal(err)
	}
	round := 0
	for _, changed := range []int{0, 7, 100, 1000} {
		b.Run(fmt.Sprintf("changed=%d", changed), func(b *testing.B) {
			var written, size int64
			rewritten := 0
			for b.Loop() {
				b.StopTimer()
				round++
				for i := range changed {
					j := (i*7919 + round*104729) % len(stages)
					stages[j] = bumpDescription(b, srv, stages[j], round)
				}
				before := writeBytes(b)
				fi, err := os.Stat(m.Path())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				rep, err := msync.Sync(context.Background(), m, client, msync.Options{})
				b.StopTimer()
				written += writeBytes(b) - before
				if err != nil {
					b.Fatal(err)
				}
				if rep.Changed != changed {
					b.Fatalf("report says %d changed, want %d", rep.Changed, changed)
				}
				size = m.Meta().SizeBytes
				if now, err := os.Stat(m.Path()); err != nil || !os.SameFile(fi, now) {
					rewritten++
				}
				b.StartTimer()
			}
			perSync := float64(written) / float64(b.N)
			b.ReportMetric(perSync/(1<<20), "written-MiB/sync")
			b.ReportMetric(100*perSync/float64(size), "written-%-of-file")
			b.ReportMetric(float64(rewritten)/float64(b.N), "snapshot-rewrites/sync")
		})
	}
}

// bumpDescription replaces stage raw on srv by a copy whose description
// says round: new bytes, the same valid id and signature.
func bumpDescription(b *testing.B, srv *registrytest.Server, raw json.RawMessage, round int) json.RawMessage {
	b.Helper()
	s, err := store.DecodeStage(raw)
	if err != nil {
		b.Fatal(err)
	}
	mark := []byte(`"description":"`)
	i := bytes.Index(raw, mark)
	if i < 0 {
		b.Fatal("stage has no description")
	}
	out := append(append(append([]byte{}, raw[:i+len(mark)]...), fmt.Sprintf("r%d ", round)...), raw[i+len(mark):]...)
	srv.Remove(s.ID)
	srv.AddRaw(out)
	return out
}

// writeBytes is this process's write_bytes so far.
func writeBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}
