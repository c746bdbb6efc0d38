package sync_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
// mirror writes, with 0, 7, 100 and 1,000 stages changed upstream, in
// two ways:
//
//   - written-MiB/sync is write_bytes of /proc/self/io: page-cache pages
//     dirtied and direct writes. An upper bound: it also counts the pages
//     of the sync's scratch files (mirror.Scratch, unlinked) and of the
//     staging file PATH.next, which the publish removes, so the kernel
//     drops them unwritten when the sync ends within its writeback delay
//     (30 s by default).
//   - durable-MiB/sync is the size of the mirror's own files that the
//     sync created or replaced: new files in PATH.gens (a delta, or a new
//     base), and PATH and PATH.state when their inode changed (both are
//     written to a temporary file and renamed). It lists the files and
//     their sizes before and after each sync.
//
// compactions/sync is the fraction of syncs whose publish wrote a new
// base file (a compaction) instead of a delta, and layers-after the
// generation's delta count after the last sync. The percentages are of
// the generation's size after the sync (Meta.SizeBytes: base plus
// deltas). The registry runs in-process; it writes nothing. Each
// iteration changes the descriptions of `changed` stages (ids and
// signatures stay valid; each round different stages, so the overlay
// grows from one sync to the next) and syncs once. Run with
// -benchtime=1x or a few x; see sync/BENCHMARKS.md:
//
//	go test ./sync -run '^$' -bench 'BenchmarkSyncWrites(10k|100k)' -benchtime 1x -count 3 -timeout 60m
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
			var written, durable, size int64
			compactions, layers := 0, 0
			for b.Loop() {
				b.StopTimer()
				round++
				for i := range changed {
					j := (i*7919 + round*104729) % len(stages)
					stages[j] = bumpDescription(b, srv, stages[j], round)
				}
				files := durableFiles(b, m.Path())
				before := writeBytes(b)
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
				meta := m.Meta()
				size, layers = meta.SizeBytes, meta.Layers
				bytes, newBase := files.since(b, m.Path())
				durable += bytes
				if newBase {
					compactions++
				}
				b.StartTimer()
			}
			perSync := float64(written) / float64(b.N)
			b.ReportMetric(perSync/(1<<20), "written-MiB/sync")
			b.ReportMetric(100*perSync/float64(size), "written-%-of-mirror")
			perSync = float64(durable) / float64(b.N)
			b.ReportMetric(perSync/(1<<20), "durable-MiB/sync")
			b.ReportMetric(100*perSync/float64(size), "durable-%-of-mirror")
			b.ReportMetric(float64(compactions)/float64(b.N), "compactions/sync")
			b.ReportMetric(float64(layers), "layers-after")
			b.ReportMetric(float64(size)/(1<<20), "mirror-MiB")
		})
	}
}

// mirrorFiles are the mirror's own durable files by path: PATH,
// PATH.state and every file in PATH.gens.
type mirrorFiles map[string]os.FileInfo

// durableFiles lists the mirror's durable files at path.
func durableFiles(b *testing.B, path string) mirrorFiles {
	b.Helper()
	out := mirrorFiles{}
	add := func(p string) {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err != nil {
			b.Fatal(err)
		}
		out[p] = fi
	}
	add(path)
	add(path + ".state")
	ents, err := os.ReadDir(path + ".gens")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		add(filepath.Join(path+".gens", e.Name()))
	}
	return out
}

// since returns the bytes of the mirror's durable files at path that are
// new or replaced (another file: os.SameFile) since fs was listed, and whether one
// of them is a base file.
func (fs mirrorFiles) since(b *testing.B, path string) (bytes int64, newBase bool) {
	for p, fi := range durableFiles(b, path) {
		if old, ok := fs[p]; ok && os.SameFile(old, fi) {
			continue
		}
		bytes += fi.Size()
		newBase = newBase || strings.HasSuffix(p, ".base")
	}
	return bytes, newBase
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
