package mirror

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

// Benchmarks run only with -bench. The mirror for each size is generated
// once (realistic ~5 KB signed stages: ~4 KB implementation_code, three
// examples, tags) and cached under os.TempDir()/noether-mirror-bench, so
// reruns start at once. Remove that directory after changing the format.

var benchSizes = []int{1_000, 10_000, 100_000}

// benchCodeSize is the implementation_code size of generated stages.
const benchCodeSize = 4000

type benchData struct {
	path     string
	ids      []store.StageID
	names    []string
	sigs     []store.SignatureID // of Active stages
	actives  []store.StageID     // ids of the Active stages
	rawBytes int64
}

var (
	benchMu    sync.Mutex
	benchCache = map[int]*benchData{}
	memCache   = map[int]*store.MemoryStore{}
)

// benchMirror returns the cached mirror of n stages, building it if needed.
func benchMirror(b *testing.B, n int) *benchData {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if d := benchCache[n]; d != nil {
		return d
	}
	dir := filepath.Join(os.TempDir(), "noether-mirror-bench", fmt.Sprintf("v%d-page%d-code%d-n%d", FormatVersion, pageSize, benchCodeSize, n))
	path := filepath.Join(dir, "mirror.db")
	m, err := Open(path, Options{})
	if err == nil && m.Meta().Total != n {
		m.Close()
		err = fmt.Errorf("cached mirror holds %d stages", m.Meta().Total)
	}
	if err != nil {
		b.Logf("building the %d-stage benchmark mirror in %s (%v)", n, dir, err)
		os.RemoveAll(dir)
		if m, err = Create(path, Options{}); err != nil {
			b.Fatal(err)
		}
		w, err := m.BeginSync(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		key := testKey()
		page := make([]*store.Stage, 0, 500)
		for i := range n {
			page = append(page, genStage(b, i, benchCodeSize, key))
			if len(page) == cap(page) || i == n-1 {
				if err := w.PutBatch(entries(page), nil); err != nil {
					b.Fatal(err)
				}
				page = page[:0]
			}
		}
		if _, err := w.Publish(context.Background(), PublishInfo{Upstream: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	defer m.Close()
	d := &benchData{path: path}
	for r, err := range m.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			b.Fatal(err)
		}
		d.ids = append(d.ids, r.ID)
		d.names = append(d.names, r.Name)
		if r.Lifecycle.Kind == store.LifecycleActive {
			d.sigs = append(d.sigs, r.SignatureID)
			d.actives = append(d.actives, r.ID)
		}
		d.rawBytes += int64(len(r.Raw))
	}
	warmFiles(b, path)
	benchCache[n] = d
	return d
}

// warmFiles reads the mirror's files at path once, sequentially, so that
// benchmarks measure reads from the page cache, as a mirror in use is
// read: a base file is written with O_DIRECT and read through a
// MADV_RANDOM mapping, so cold reads would fault it in from the disk a
// page at a time.
func warmFiles(b *testing.B, path string) {
	b.Helper()
	names := []string{path}
	ents, err := os.ReadDir(path + ".gens")
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		names = append(names, filepath.Join(path+".gens", e.Name()))
	}
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			b.Fatal(err)
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// benchMemory returns a MemoryStore holding the same stages, built once
// per benchmark run: a 100k-stage MemoryStore is about 1.5 GB of live heap,
// and kept alive it would slow every later benchmark's garbage collection.
func benchMemory(b *testing.B, n int) *store.MemoryStore {
	d := benchMirror(b, n)
	benchMu.Lock()
	defer benchMu.Unlock()
	if ms := memCache[n]; ms != nil {
		return ms
	}
	m, err := Open(d.path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ms := store.NewMemoryStore()
	for _, e := range decodedEntries(b, m) {
		ms.Upsert(context.Background(), e.stage)
	}
	memCache[n] = ms
	return ms
}

// decodedEntries decodes every record of m, with its stored report.
func decodedEntries(b *testing.B, m *Mirror) []Entry {
	var es []Entry
	for r, err := range m.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			b.Fatal(err)
		}
		st, err := r.Decode()
		if err != nil {
			b.Fatal(err)
		}
		es = append(es, forced(st, r.Report))
	}
	return es
}

func openBench(b *testing.B, d *benchData) *Mirror {
	m, err := Open(d.path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func forSizes(b *testing.B, fn func(b *testing.B, n int)) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) { fn(b, n) })
	}
}

// BenchmarkOpenFirstGetRaw times Open and one GetRaw, what a CLI
// invocation does before its first answer; the Close after is not timed.
func BenchmarkOpenFirstGetRaw(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		ctx := context.Background()
		id := d.ids[len(d.ids)/2]
		benchFirstRead(b, d.path, func(m *Mirror) error { _, err := m.GetRaw(ctx, id); return err })
	})
}

// benchFirstRead times Open of the mirror at path and read, what a
// process does before its first answer; the Close after is not timed.
func benchFirstRead(b *testing.B, path string, read func(m *Mirror) error) {
	b.ReportAllocs()
	for b.Loop() {
		m, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := read(m); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m.Close()
		b.StartTimer()
	}
}

func BenchmarkGetRaw(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		ctx := context.Background()
		b.Run("mirror", func(b *testing.B) {
			m := openBench(b, d)
			r := rand.New(rand.NewPCG(1, 1))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.GetRaw(ctx, d.ids[r.IntN(len(d.ids))]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("memory", func(b *testing.B) {
			ms := benchMemory(b, n)
			r := rand.New(rand.NewPCG(1, 1))
			b.ReportAllocs()
			for b.Loop() {
				s, err := ms.Get(ctx, d.ids[r.IntN(len(d.ids))])
				if err != nil || len(s.Raw) == 0 {
					b.Fatal(err)
				}
			}
		})
		benchMu.Lock()
		delete(memCache, n)
		benchMu.Unlock()
		runtime.GC()
	})
}

func BenchmarkFindRawByName(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 2))
		b.ReportAllocs()
		for b.Loop() {
			if raws, err := m.FindRawByName(ctx, d.names[r.IntN(len(d.names))]); err != nil || len(raws) != 1 {
				b.Fatal(err, len(raws))
			}
		}
	})
}

func BenchmarkGetRawBySignature(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 3))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.GetRawBySignature(ctx, d.sigs[r.IntN(len(d.sigs))]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetDecoded is Get (raw read plus JSON decode), for contrast.
func BenchmarkGetDecoded(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 4))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.Get(ctx, d.ids[r.IntN(len(d.ids))]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRecords iterates every record (no JSON decoding), warm.
func BenchmarkRecords(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		count := func() int {
			c := 0
			for _, err := range m.Records(ctx, store.LifecycleUnknown) {
				if err != nil {
					b.Fatal(err)
				}
				c++
			}
			return c
		}
		count() // warm the page cache
		total := 0
		for b.Loop() {
			total += count()
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "stages/s")
	})
}

// BenchmarkScanRaw iterates every record's raw bytes without copying
// (no JSON decoding), warm: the raw-iteration figure.
func BenchmarkScanRaw(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		count := func() int {
			c := 0
			err := m.ScanRaw(ctx, store.LifecycleUnknown, func(_ store.StageID, raw []byte) error {
				c += min(len(raw), 1)
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		count() // warm the page cache
		total := 0
		for b.Loop() {
			total += count()
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "stages/s")
	})
}

// BenchmarkPage reads 100 stages at the start and at the end of the
// listing: the cost must not depend on the offset.
func BenchmarkPage(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		ctx := context.Background()
		for _, off := range []int{0, n - 200} {
			b.Run(fmt.Sprintf("offset=%d", off), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if raws, _, err := m.Page(ctx, store.LifecycleUnknown, off, 100); err != nil || len(raws) != 100 {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkFileSize reports the size of the benchmark mirror's current
// generation (Meta.SizeBytes: its base file, compacted, no deltas) over
// the raw JSON size. The manifest at PATH (24 KiB) and the kept empty
// generation 0 are not counted.
//
//	go test ./mirror -run '^$' -bench BenchmarkFileSize -benchtime 1x
func BenchmarkFileSize(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		m := openBench(b, d)
		meta := m.Meta()
		if meta.Layers != 0 {
			b.Fatalf("the benchmark mirror has %d deltas; want a compacted base", meta.Layers)
		}
		for b.Loop() {
		}
		size := float64(meta.SizeBytes)
		b.ReportMetric(size/float64(d.rawBytes), "size-ratio")
		b.ReportMetric(size/float64(n), "file-bytes/stage")
		b.ReportMetric(float64(d.rawBytes)/float64(n), "json-bytes/stage")
	})
}

// BenchmarkHeap reports the Go heap in use after Open and 10,000 random
// GetRaw calls: the mirror is memory-mapped, so it must not grow with n.
func BenchmarkHeap(b *testing.B) {
	forSizes(b, func(b *testing.B, n int) {
		d := benchMirror(b, n)
		ids := d.ids
		d2 := &benchData{path: d.path}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var after runtime.MemStats
		for b.Loop() {
			m, err := Open(d2.path, Options{})
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 5))
			for range 10_000 {
				if _, err := m.GetRaw(context.Background(), ids[r.IntN(len(ids))]); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			m.Close()
		}
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse)), "heap-growth-bytes")
		b.ReportMetric(float64(after.HeapInuse), "heap-inuse-bytes")
	})
}

// BenchmarkPublish times a publish that compacts: on a copy of the
// benchmark mirror of n stages opened with Options{MaxOverlay: 1}, one
// Put is published as a delta; then a local writer upserts one more
// stage, and its Publish, past MaxOverlay, writes a fresh base of all n
// stages instead of a delta. That is what every compaction does: stage
// each retained stage of the current generation (base and overlay),
// compile the staging file into a new base with the full check, count
// the changes against the old generation, write the manifest. Only
// Publish is timed. The bbolt-transactions variant sets
// Options.BoltTransactions. It writes a base file (640 MB at 100k) per
// iteration and deletes it after.
//
//	go test ./mirror -run '^$' -bench 'BenchmarkPublish$' -benchtime 3x
func BenchmarkPublish(b *testing.B) {
	for _, c := range []struct {
		n  int
		tx bool
	}{{10_000, false}, {10_000, true}, {100_000, false}} {
		name := fmt.Sprintf("n=%d", c.n)
		if c.tx {
			name += "/bbolt-transactions"
		}
		b.Run(name, func(b *testing.B) { benchCompact(b, c.n, c.tx) })
	}
}

func benchCompact(b *testing.B, n int, tx bool) {
	d := benchMirror(b, n)
	ctx := context.Background()
	key := testKey()
	var size int64
	round := 0
	for b.Loop() {
		b.StopTimer()
		round++
		path := copyBench(b, d)
		m, err := Open(path, Options{MaxOverlay: 1, BoltTransactions: tx})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Put(ctx, genStage(b, n+round, benchCodeSize, key)); err != nil {
			b.Fatal(err)
		}
		if l := m.Meta().Layers; l != 1 {
			b.Fatalf("after one Put the generation has %d deltas, want 1", l)
		}
		w, err := m.BeginLocal(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Upsert(ctx, bumped(b, m, d.ids[1], round)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		meta := m.Meta()
		if meta.Layers != 0 {
			b.Fatalf("the publish wrote a delta (%d layers), not a base", meta.Layers)
		}
		size = meta.SizeBytes
		m.Close()
		os.RemoveAll(filepath.Dir(path))
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "stages/s")
	b.ReportMetric(float64(size)/(1<<20), "base-MiB")
}

// BenchmarkPublishLog times Publish of a sync's staging log holding every
// stage of the benchmark mirror, staged in a shuffled order in pages of
// 200 (staging is not timed).
func BenchmarkPublishLog(b *testing.B) {
	for _, n := range benchSizes[1:] {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			d := benchMirror(b, n)
			es := decodedEntries(b, openBench(b, d))
			rand.New(rand.NewPCG(1, 1)).Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
			for b.Loop() {
				b.StopTimer()
				m, err := Create(filepath.Join(b.TempDir(), "m.db"), Options{})
				if err != nil {
					b.Fatal(err)
				}
				w, err := m.BeginSync(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for i := 0; i < len(es); i += 200 {
					if err := w.PutBatch(es[i:min(i+200, len(es))], nil); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				if _, err := w.Publish(context.Background(), PublishInfo{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				m.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "stages/s")
		})
	}
}

// copyBench makes a copy of the benchmark mirror of d in a fresh
// directory, for benchmarks that write. The manifest and any delta are
// copied; base files are hard links (copied where linking fails): a base
// is never written after it is published, since a compaction writes a
// new file, so a 100k-stage copy costs no 640 MB of I/O.
func copyBench(b *testing.B, d *benchData) string {
	b.Helper()
	dst := filepath.Join(b.TempDir(), "mirror.db")
	if err := os.Mkdir(dst+".gens", 0o755); err != nil {
		b.Fatal(err)
	}
	ents, err := os.ReadDir(d.path + ".gens")
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
		from, to := filepath.Join(d.path+".gens", e.Name()), filepath.Join(dst+".gens", e.Name())
		if strings.HasSuffix(e.Name(), ".base") && os.Link(from, to) == nil {
			continue
		}
		copyFile(from, to)
	}
	copyFile(d.path, dst)
	return dst
}

// bumped returns stage id as m holds it now with "r<round> " put before
// its description: new bytes, and still the same valid id and
// signature (the description is not signed).
func bumped(b *testing.B, m *Mirror, id store.StageID, round int) *store.Stage {
	b.Helper()
	raw, err := m.GetRaw(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	mark := []byte(`"description":"`)
	i := bytes.Index(raw, mark)
	if i < 0 {
		b.Fatalf("stage %s has no description", id)
	}
	out := append(append(append([]byte{}, raw[:i+len(mark)]...), fmt.Sprintf("r%d ", round)...), raw[i+len(mark):]...)
	s, err := store.DecodeStage(out)
	if err != nil {
		b.Fatal(err)
	}
	return s
}
