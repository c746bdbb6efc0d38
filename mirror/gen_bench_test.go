package mirror

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// Benchmarks of generations: single-stage local edits (each a publish),
// reads of a generation at every layer count the format allows, and GC.
// Like the others they run only with -bench, on copies of the cached
// benchmark mirrors (copyBench); see BENCHMARKS.md for the figures.

// editOps are the local edits BenchmarkLocalEdit times.
var editOps = []string{"Put", "Upsert", "UpdateLifecycle", "Remove"}

// BenchmarkLocalEdit times one Mirror.Put, Upsert, UpdateLifecycle or
// Remove on a copy of the benchmark mirror of n stages, with the default
// options: each is a publish, durable and visible when it returns (a
// delta of the stage and a manifest, fsynced; every Options.MaxLayers
// publishes a delta merging the chain; once the deltas touch more than
// MaxOverlay stages, a compaction into a new base). Put adds a new
// generated stage; Upsert replaces a stage by a copy with new bytes (see
// bumped); UpdateLifecycle moves an Active stage to Tombstone; Remove
// removes a stage. Each op touches a different stage. Preparing the
// stage is not timed.
//
// b.N averages hide the merges and compactions, so each op is timed and
// the benchmark reports percentiles of all ops (p50-ms … max-ms), the
// median of the plain deltas (delta-p50-ms) and of the merges
// (merge-p50-ms), the longest compaction (compact-max-ms), how many of
// each there were, the highest layer count reached, the median size of
// a plain delta file (delta-bytes-p50) and the manifest's size at the
// end. Give a fixed count: a compaction comes once the ops pass
// MaxOverlay (4096 at 10k and 100k stages; at 1k, half the stages, so
// about 1,000 Puts or 333 Removes), and Remove and UpdateLifecycle need
// as many stages as ops:
//
//	go test ./mirror -run '^$' -bench 'BenchmarkLocalEdit/.*/n=1000$' -benchtime 700x
//	go test ./mirror -run '^$' -bench 'BenchmarkLocalEdit/.*/n=(10|100)000$' -benchtime 4500x -timeout 60m
func BenchmarkLocalEdit(b *testing.B) {
	for _, op := range editOps {
		b.Run("op="+op, func(b *testing.B) {
			forSizes(b, func(b *testing.B, n int) { benchLocalEdit(b, n, op, Options{}) })
		})
	}
}

// BenchmarkLocalEditFullHistory is BenchmarkLocalEdit's Put at 100k
// stages once the history is full: the keep policy keeps the last 300
// generations, so from the 300th op on every publish also drops the
// oldest generation and removes what only it read, as every publish
// does once the default policy's 7 days have passed. Give a count well
// past 300:
//
//	go test ./mirror -run '^$' -bench 'BenchmarkLocalEditFullHistory' -benchtime 1500x
func BenchmarkLocalEditFullHistory(b *testing.B) {
	benchLocalEdit(b, 100_000, "Put", Options{Keep: KeepPolicy{Last: 300, Within: -1}})
}

// BenchmarkLocalEditHistory is a single-stage edit's latency against
// the history a mirror keeps. At 1k stages, so that the history sets the
// cost, h generations are made first (not timed; at h=20000 that takes
// a few minutes), every one kept; then each op is timed. Every edit is
// an Upsert of one of the 1k stages with new bytes, so the stage count
// stays 1k, and the history grows from h by one an op. It reports the
// p50 and p90 of the timed ops, the compactions among them (cheap at
// 1k) and the manifest's size at the end.
//
//	go test ./mirror -run '^$' -bench 'BenchmarkLocalEditHistory' -benchtime 1500x -timeout 60m
func BenchmarkLocalEditHistory(b *testing.B) {
	for _, h := range []int{200, 20_000} {
		b.Run(fmt.Sprintf("h=%d", h), func(b *testing.B) { benchLocalEditHistory(b, h) })
	}
}

func benchLocalEditHistory(b *testing.B, h int) {
	d, m := openBenchCopy(b, 1000, Options{Keep: KeepPolicy{Last: math.MaxInt, Within: -1}})
	defer m.Close()
	ctx := context.Background()
	compactions := 0
	upsert := func(i int) time.Duration {
		s := bumped(b, m, d.ids[i%len(d.ids)], i/len(d.ids)+1)
		t0 := time.Now()
		if _, err := m.Upsert(ctx, s); err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		if m.Meta().Layers == 0 {
			compactions++
		}
		return took
	}
	i := 0
	for ; i < h; i++ {
		upsert(i)
	}
	var all []time.Duration
	compactions = 0
	for b.Loop() {
		all = append(all, upsert(i))
		i++
	}
	slices.Sort(all)
	b.ReportMetric(float64(quantile(all, 0.5))/float64(time.Millisecond), "p50-ms")
	b.ReportMetric(float64(quantile(all, 0.9))/float64(time.Millisecond), "p90-ms")
	b.ReportMetric(float64(compactions), "compactions")
	if fi, err := os.Stat(m.Path()); err == nil {
		b.ReportMetric(float64(fi.Size()), "manifest-bytes")
	}
}

// opClass says what a publish wrote.
type opClass int

const (
	opDelta     opClass = iota // a delta over the chain
	opMerge                    // a delta merging the chain (or its folded deltas)
	opCompact                  // a new base
	opUnchanged                // nothing (no new generation)
)

// classify says what the publish between the generations prev and next
// wrote.
func classify(prev, next Meta) opClass {
	switch {
	case next.Generation == prev.Generation:
		return opUnchanged
	case next.Layers == 0:
		return opCompact
	case next.Layers <= prev.Layers: // the chain did not grow: merged
		return opMerge
	}
	return opDelta
}

// openBenchCopy opens a copy of the benchmark mirror of n stages with
// opts.
func openBenchCopy(b *testing.B, n int, opts Options) (*benchData, *Mirror) {
	d := benchMirror(b, n)
	m, err := Open(copyBench(b, d), opts)
	if err != nil {
		b.Fatal(err)
	}
	return d, m
}

func benchLocalEdit(b *testing.B, n int, op string, opts Options) {
	d, m := openBenchCopy(b, n, opts)
	ctx := context.Background()
	path := m.Path()
	defer m.Close()
	key := testKey()
	r := rand.New(rand.NewPCG(3, uint64(n)))
	idPerm, activePerm := r.Perm(len(d.ids)), r.Perm(len(d.actives))
	var (
		all, delta, merge, compact []time.Duration
		deltaBytes                 []int64
		maxLayers                  int
	)
	i := 0
	for b.Loop() {
		b.StopTimer()
		var do func() error
		switch op {
		case "Put":
			s := genStage(b, n+i, benchCodeSize, key)
			do = func() error { _, err := m.Put(ctx, s); return err }
		case "Upsert":
			s := bumped(b, m, d.ids[idPerm[i%len(idPerm)]], i/len(idPerm)+1)
			do = func() error { _, err := m.Upsert(ctx, s); return err }
		case "UpdateLifecycle":
			if i >= len(activePerm) {
				b.Fatalf("%d ops: the mirror has only %d Active stages to move", i+1, len(activePerm))
			}
			id := d.actives[activePerm[i]]
			do = func() error { return m.UpdateLifecycle(ctx, id, store.Tombstone) }
		case "Remove":
			if i >= len(idPerm) {
				b.Fatalf("%d ops: the mirror has only %d stages to remove", i+1, len(idPerm))
			}
			id := d.ids[idPerm[i]]
			do = func() error { return m.Remove(ctx, id) }
		}
		i++
		prev := m.Meta()
		b.StartTimer()
		t0 := time.Now()
		err := do()
		took := time.Since(t0)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		next := m.Meta()
		all = append(all, took)
		maxLayers = max(maxLayers, next.Layers)
		switch classify(prev, next) {
		case opDelta:
			delta = append(delta, took)
			deltaBytes = append(deltaBytes, next.SizeBytes-prev.SizeBytes)
		case opMerge:
			merge = append(merge, took)
		case opCompact:
			compact = append(compact, took)
		case opUnchanged:
			b.Fatalf("op %d (%s) changed nothing", i, op)
		}
		b.StartTimer()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	slices.Sort(all)
	b.ReportMetric(ms(quantile(all, 0.5)), "p50-ms")
	b.ReportMetric(ms(quantile(all, 0.9)), "p90-ms")
	b.ReportMetric(ms(quantile(all, 0.99)), "p99-ms")
	b.ReportMetric(ms(quantile(all, 1)), "max-ms")
	slices.Sort(delta)
	slices.Sort(merge)
	slices.Sort(compact)
	slices.Sort(deltaBytes)
	b.ReportMetric(ms(quantile(delta, 0.5)), "delta-p50-ms")
	b.ReportMetric(ms(quantile(merge, 0.5)), "merge-p50-ms")
	b.ReportMetric(ms(quantile(compact, 1)), "compact-max-ms")
	b.ReportMetric(float64(len(merge)), "merges")
	b.ReportMetric(float64(len(compact)), "compactions")
	b.ReportMetric(float64(maxLayers), "layers-max")
	if len(deltaBytes) > 0 {
		b.ReportMetric(float64(deltaBytes[len(deltaBytes)/2]), "delta-bytes-p50")
	}
	if fi, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(fi.Size()), "manifest-bytes")
	}
}

// quantile returns the q-quantile (0 ≤ q ≤ 1) of sorted ds, 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[int(q*float64(len(ds)-1)+0.5)]
}

// layered is a copy of a benchmark mirror whose current generation has
// deltas over its base.
type layered struct {
	path  string
	base  []store.StageID // live stages the deltas do not touch
	delta []store.StageID // stages the deltas replaced
	live  []store.StageID // every live stage
	names []string        // of the live stages
	sigs  []store.SignatureID
	total int
}

// buildLayered copies the benchmark mirror of d and publishes sh.layers
// deltas over its base that together touch sh.touched distinct stages,
// chosen at random: nine in ten replaced by a copy with new bytes
// (bumped), one in ten removed. Each delta is one local writer's
// publish. With sh.merged, a first publish touches that many other
// stages, more than the default MaxOverlay: the default policy makes it
// a merged delta, which readers do not fold at open.
func buildLayered(b *testing.B, d *benchData, sh layerShape) *layered {
	b.Helper()
	ctx := context.Background()
	path := copyBench(b, d)
	m, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	layers, touched := sh.layers, sh.touched
	r := rand.New(rand.NewPCG(4, uint64(layers*1_000_000+touched)))
	pick := r.Perm(len(d.ids))[:sh.merged+touched]
	removed := map[int]bool{}
	replaced := map[int]bool{}
	publish := func(l, from, to int) {
		w, err := m.BeginLocal(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for k := from; k < to; k++ {
			idx := pick[k]
			if k%10 == 9 {
				removed[idx] = true
				err = w.Remove(ctx, d.ids[idx])
			} else {
				replaced[idx] = true
				_, err = w.Upsert(ctx, bumped(b, m, d.ids[idx], l+1))
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
			b.Fatal(err)
		}
	}
	if sh.merged > 0 {
		publish(layers, touched, touched+sh.merged)
		layers++
	}
	for l := range sh.layers {
		publish(l, l*touched/sh.layers, (l+1)*touched/sh.layers)
	}
	meta := m.Meta()
	if meta.Layers != layers || meta.Overlay != touched+sh.merged {
		b.Fatalf("built %d deltas touching %d stages, want %d and %d", meta.Layers, meta.Overlay, layers, touched+sh.merged)
	}
	out := &layered{path: path, total: meta.Total}
	active := map[store.StageID]store.SignatureID{}
	for j, id := range d.actives {
		active[id] = d.sigs[j]
	}
	for i, id := range d.ids {
		if removed[i] {
			continue
		}
		if replaced[i] {
			out.delta = append(out.delta, id)
		} else {
			out.base = append(out.base, id)
		}
		out.live = append(out.live, id)
		out.names = append(out.names, d.names[i])
		if sig, ok := active[id]; ok {
			out.sigs = append(out.sigs, sig)
		}
	}
	return out
}

// layerShape is a generation BenchmarkLayers reads: a merged delta
// touching merged stages (0: none), then layers deltas touching touched
// stages together.
type layerShape struct{ merged, layers, touched int }

func (sh layerShape) String() string {
	if sh.merged > 0 {
		return fmt.Sprintf("M=%d/L=%d/K=%d", sh.merged, sh.layers, sh.touched)
	}
	return fmt.Sprintf("L=%d/K=%d", sh.layers, sh.touched)
}

// layerShapes are the shapes BenchmarkLayers reads at n stages: a
// compacted base, then 1, 4 and the default MaxLayers of deltas touching
// from 100 stages up to the default MaxOverlay of 4096; and, where the
// default MaxMerged (n/8) passes MaxOverlay, a merged delta and deltas
// that fill 15/16 of it (the removals among the touched stages lower
// MaxMerged a little), alone and under the most folded deltas the
// policy allows (MaxLayers-1, touching 4096).
func layerShapes(n int) []layerShape {
	o := Options{}
	out := []layerShape{{0, 0, 0}}
	for _, l := range []int{1, 4, o.maxLayers()} {
		for _, k := range []int{100, 1000, 4096} {
			out = append(out, layerShape{0, l, k})
		}
	}
	if o.maxMerged(n) > o.maxOverlay(n) {
		full := o.maxMerged(n) * 15 / 16
		out = append(out, layerShape{full, 0, 0}, layerShape{full - 4096, o.maxLayers() - 1, 4096})
	}
	return out
}

// BenchmarkLayers measures reads of a generation made of the benchmark
// mirror's base of n stages (10k, 100k) and L deltas touching K stages
// (buildLayered; L=0 is the compacted base alone). For each shape:
// GetRaw of a random live stage (any), of one the deltas do not touch
// (base), of one they replaced (delta), and of any through a fresh Mirror
// that reads a merged delta on disk, unfolded (unfolded); FindRawByName and
// GetRawBySignature of random live stages; Page of 100 at offset 0 and
// at total-200; ScanRaw of every stage (warm, stages/s); Open and a
// first GetRaw, or a first FindRawByName, which also builds the sorted
// lists of the overlay (the Close after is not timed); and the Go heap a newly opened Mirror holds
// (heap-bytes: HeapAlloc after a GC, with the mirror open, less before;
// heap-bytes/key divides it by K). Building a shape takes a few seconds
// and is not timed; before the point reads, every live stage is read
// once by id, by name and by signature, so that they measure a warm
// mapping (the page cache is warmed too, see warmFiles), as a
// long-running reader sees it; OpenFirstGetRaw measures a fresh one.
//
//	go test ./mirror -run '^$' -bench 'BenchmarkLayers' -benchmem -benchtime 300ms -timeout 60m
func BenchmarkLayers(b *testing.B) {
	for _, n := range benchSizes[1:] {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			d := benchMirror(b, n)
			for _, sh := range layerShapes(n) {
				b.Run(sh.String(), func(b *testing.B) {
					benchLayered(b, buildLayered(b, d, sh), sh.merged+sh.touched)
				})
			}
		})
	}
}

func benchLayered(b *testing.B, ld *layered, touched int) {
	warmFiles(b, ld.path)
	ctx := context.Background()
	m, err := Open(ld.path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	// Touch every page the point reads use once: a fresh mapping faults
	// each page in on first use, which would otherwise dominate short
	// runs at 100k.
	for i, id := range ld.live {
		if _, err := m.GetRaw(ctx, id); err != nil {
			b.Fatal(err)
		}
		if _, err := m.FindRawByName(ctx, ld.names[i]); err != nil {
			b.Fatal(err)
		}
	}
	for _, sig := range ld.sigs {
		if _, err := m.GetRawBySignature(ctx, sig); err != nil {
			b.Fatal(err)
		}
	}
	getRaw := func(ids []store.StageID) func(b *testing.B) {
		return func(b *testing.B) {
			if len(ids) == 0 {
				b.Skip("no such stage")
			}
			r := rand.New(rand.NewPCG(1, 1))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.GetRaw(ctx, ids[r.IntN(len(ids))]); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("GetRaw/any", getRaw(ld.live))
	b.Run("GetRaw/base", getRaw(ld.base))
	b.Run("GetRaw/delta", getRaw(ld.delta))
	b.Run("GetRaw/unfolded", func(b *testing.B) { benchUnfolded(b, ld) })
	b.Run("FindRawByName", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 2))
		b.ReportAllocs()
		for b.Loop() {
			if raws, err := m.FindRawByName(ctx, ld.names[r.IntN(len(ld.names))]); err != nil || len(raws) != 1 {
				b.Fatal(err, len(raws))
			}
		}
	})
	b.Run("GetRawBySignature", func(b *testing.B) {
		r := rand.New(rand.NewPCG(1, 3))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := m.GetRawBySignature(ctx, ld.sigs[r.IntN(len(ld.sigs))]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Ratio", func(b *testing.B) { benchRatio(b, m, ld) })
	for _, off := range []int{0, ld.total - 200} {
		name := "Page/offset=0"
		if off > 0 {
			name = "Page/offset=end"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if raws, _, err := m.Page(ctx, store.LifecycleUnknown, off, 100); err != nil || len(raws) != 100 {
					b.Fatal(err, len(raws))
				}
			}
		})
	}
	b.Run("ScanRaw", func(b *testing.B) {
		count := func() int {
			c := 0
			if err := m.ScanRaw(ctx, store.LifecycleUnknown, func(store.StageID, []byte) error { c++; return nil }); err != nil {
				b.Fatal(err)
			}
			return c
		}
		if c := count(); c != ld.total { // and warm the page cache
			b.Fatalf("ScanRaw saw %d stages, want %d", c, ld.total)
		}
		total := 0
		for b.Loop() {
			total += count()
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "stages/s")
	})
	first := func(read func(m *Mirror) error) func(b *testing.B) {
		return func(b *testing.B) { benchFirstRead(b, ld.path, read) }
	}
	id, name := ld.live[len(ld.live)/2], ld.names[len(ld.names)/2]
	if len(ld.delta) > 0 {
		id = ld.delta[len(ld.delta)/2]
	}
	b.Run("OpenFirstGetRaw", first(func(m *Mirror) error { _, err := m.GetRaw(ctx, id); return err }))
	b.Run("OpenFirstFindRawByName", first(func(m *Mirror) error { _, err := m.FindRawByName(ctx, name); return err }))
	b.Run("Heap", func(b *testing.B) {
		grew := heapOfOpen(b, ld.path, func(*Mirror) error { return nil })
		b.ReportMetric(float64(grew), "heap-bytes")
		if touched > 0 {
			b.ReportMetric(float64(grew)/float64(touched), "heap-bytes/key")
		}
	})
	b.Run("HeapListed", func(b *testing.B) {
		grew := heapOfOpen(b, ld.path, func(m *Mirror) error { // builds the lists
			_, _, err := m.Page(ctx, store.LifecycleUnknown, 0, 1)
			return err
		})
		b.ReportMetric(float64(grew), "heap-bytes")
	})
}

// benchRatio times GetRaw, FindRawByName and GetRawBySignature of a
// random live stage in turn, in one loop, so that the ratios the target
// is stated in (by name and by signature ≤ 1.5× GetRaw) compare reads
// made under the same conditions: separate benchmarks on a shared VM
// drift apart by more than the margin. It reports the mean of each
// (getraw-ns, name-ns, sig-ns) and the ratios (name-x, sig-x).
func benchRatio(b *testing.B, m *Mirror, ld *layered) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 5))
	var get, name, sig time.Duration
	for b.Loop() {
		// Three different stages: a second read of one finds it in cache.
		i, j, k := r.IntN(len(ld.live)), r.IntN(len(ld.names)), r.IntN(len(ld.sigs))
		t0 := time.Now()
		if _, err := m.GetRaw(ctx, ld.live[i]); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if raws, err := m.FindRawByName(ctx, ld.names[j]); err != nil || len(raws) != 1 {
			b.Fatal(err, len(raws))
		}
		t2 := time.Now()
		if _, err := m.GetRawBySignature(ctx, ld.sigs[k]); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		get, name, sig = get+t1.Sub(t0), name+t2.Sub(t1), sig+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(float64(get)/n, "getraw-ns")
	b.ReportMetric(float64(name)/n, "name-ns")
	b.ReportMetric(float64(sig)/n, "sig-ns")
	b.ReportMetric(float64(name)/float64(get), "name-x")
	b.ReportMetric(float64(sig)/float64(get), "sig-x")
}

// benchUnfolded times GetRaw of random live stages through a Mirror that
// read nothing else, so that its merged delta is looked up on disk, not
// folded (m above built its lists while warming up). It skips shapes
// without a merged delta.
func benchUnfolded(b *testing.B, ld *layered) {
	m, err := Open(ld.path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s, err := m.acquire()
	if err != nil {
		b.Fatal(err)
	}
	defer s.release()
	if s.ov == nil || s.ov.deep == nil {
		b.Skip("no merged delta")
	}
	ctx := context.Background()
	for _, id := range ld.live { // fault its mapping in, as for m above
		if _, err := m.GetRaw(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 4))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.GetRaw(ctx, ld.live[r.IntN(len(ld.live))]); err != nil {
			b.Fatal(err)
		}
	}
	if s.ov.allDone.Load() {
		b.Fatal("the reads folded the merged delta")
	}
}

// heapOfOpen returns how much the Go heap grew (after a GC) while a
// Mirror opened at path, after read, was held.
func heapOfOpen(b *testing.B, path string, read func(m *Mirror) error) uint64 {
	var grew uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m, err := Open(path, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := read(m); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		m.Close()
		grew = after.HeapAlloc - before.HeapAlloc
	}
	return grew
}

// BenchmarkGC times Mirror.GC collecting a history of 40 generations
// made by Puts on a copy of the benchmark mirror of n stages (default
// options: a merge every 8 deltas), keeping only the current one
// (KeepPolicy{Last: 1, Within: -1}). It reports the data files and bytes
// removed and the generations dropped; the 40 Puts are not timed.
//
//	go test ./mirror -run '^$' -bench BenchmarkGC -benchtime 3x
func BenchmarkGC(b *testing.B) {
	for _, n := range benchSizes[1:] {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			d := benchMirror(b, n)
			ctx := context.Background()
			key := testKey()
			var res GCResult
			for b.Loop() {
				b.StopTimer()
				path := copyBench(b, d)
				m, err := Open(path, Options{})
				if err != nil {
					b.Fatal(err)
				}
				for i := range 40 {
					if _, err := m.Put(ctx, genStage(b, n+i, benchCodeSize, key)); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				res, err = m.GC(ctx, &KeepPolicy{Last: 1, Within: -1})
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				m.Close()
				os.RemoveAll(filepath.Dir(path))
				b.StartTimer()
			}
			b.ReportMetric(float64(len(res.Dropped)), "generations-dropped")
			b.ReportMetric(float64(res.Files), "files-removed")
			b.ReportMetric(float64(res.Bytes)/(1<<20), "MiB-freed")
		})
	}
}

// BenchmarkOpenHistory times Open and a first GetRaw (the Close after is
// not timed) of a copy of the benchmark mirror of n stages that keeps H
// generations, made by local edits of one stage each and kept by the
// default policy (H=168: a week of hourly syncs that each changed
// something). Building a history is not timed (about 10 ms an edit).
//
//	go test ./mirror -run '^$' -bench 'BenchmarkOpenHistory' -benchmem -benchtime 200x
func BenchmarkOpenHistory(b *testing.B) {
	for _, n := range benchSizes[1:] {
		for _, h := range []int{2, 30, 168} {
			b.Run(fmt.Sprintf("n=%d/H=%d", n, h), func(b *testing.B) { benchOpenHistory(b, n, h) })
		}
	}
}

func benchOpenHistory(b *testing.B, n, h int) {
	d, m := openBenchCopy(b, n, Options{})
	ctx := context.Background()
	path := m.Path()
	key := testKey()
	for i := 0; ; i++ {
		gens, err := m.Generations(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(gens) >= h {
			break
		}
		if _, err := m.Put(ctx, genStage(b, n+i, benchCodeSize, key)); err != nil {
			b.Fatal(err)
		}
	}
	m.Close()
	warmFiles(b, path)
	id := d.ids[len(d.ids)/2]
	benchFirstRead(b, path, func(m *Mirror) error { _, err := m.GetRaw(ctx, id); return err })
}

// BenchmarkWriteCycle measures what a mirror of n stages writes over one
// compaction cycle with the default options. Starting from the
// compacted benchmark mirror, each publish replaces `changed` stages by
// copies with new bytes (a local writer's Upserts, other stages each
// time: what a sync of that many changed stages publishes) until a
// publish compacts. It reports the publishes of the cycle and how many
// merged the chain, and the bytes of the files each publish created or
// replaced (a delta, a merged delta or a base, and the manifest):
// averaged over the cycle (cycle-MiB/publish and, of the mirror's size
// after the compaction, cycle-%/publish), the median publish, and the
// compaction. Preparing the stages is not timed, nor counted. The
// policy=overlay runs compact once the deltas touch MaxOverlay keys
// (MaxMerged at its least), as every publish did before merged deltas;
// policy=layers=16 doubles MaxLayers (fewer merges of the chain, twice
// the files for a reader to open).
//
//	go test ./mirror -run '^$' -bench 'BenchmarkWriteCycle' -benchtime 1x -timeout 60m
func BenchmarkWriteCycle(b *testing.B) {
	for _, p := range []struct {
		name string
		opts Options
	}{{"default", Options{}}, {"overlay", Options{MaxMerged: 1}}, {"layers=16", Options{MaxLayers: 16}}} {
		for _, changed := range []int{100, 1000} {
			b.Run(fmt.Sprintf("policy=%s/n=100000/changed=%d", p.name, changed), func(b *testing.B) {
				benchWriteCycle(b, 100_000, changed, p.opts)
			})
		}
	}
}

func benchWriteCycle(b *testing.B, n, changed int, opts Options) {
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		d := benchMirror(b, n)
		m, err := Open(copyBench(b, d), opts)
		if err != nil {
			b.Fatal(err)
		}
		perm := rand.New(rand.NewPCG(5, uint64(changed))).Perm(len(d.ids))
		var written []int64
		var compacted int64
		merges := 0
		for round := 1; compacted == 0; round++ {
			if round*changed > len(perm) {
				b.Fatalf("no compaction after %d publishes", round-1)
			}
			var ss []*store.Stage
			for _, i := range perm[(round-1)*changed : round*changed] {
				ss = append(ss, bumped(b, m, d.ids[i], round))
			}
			files := listFiles(b, m.Path())
			prev := m.Meta()
			b.StartTimer()
			w, err := m.BeginLocal(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, s := range ss {
				if _, err := w.Upsert(ctx, s); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := w.Publish(ctx, PublishInfo{}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			bytes := files.grown(b, m.Path())
			written = append(written, bytes)
			switch classify(prev, m.Meta()) {
			case opMerge:
				merges++
			case opCompact:
				compacted = bytes
			}
		}
		size := m.Meta().SizeBytes
		m.Close()
		var total int64
		for _, w := range written {
			total += w
		}
		avg := float64(total) / float64(len(written))
		slices.Sort(written)
		b.ReportMetric(float64(len(written)), "publishes")
		b.ReportMetric(float64(merges), "merges")
		b.ReportMetric(avg/(1<<20), "cycle-MiB/publish")
		b.ReportMetric(100*avg/float64(size), "cycle-%/publish")
		b.ReportMetric(float64(written[len(written)/2])/(1<<20), "p50-MiB/publish")
		b.ReportMetric(float64(compacted)/(1<<20), "compaction-MiB")
		b.ReportMetric(float64(size)/(1<<20), "mirror-MiB")
		b.StartTimer()
	}
}

// fileSet is the files of a mirror: PATH and every file in PATH.gens.
type fileSet map[string]os.FileInfo

// listFiles lists the files of the mirror at path.
func listFiles(b *testing.B, path string) fileSet {
	b.Helper()
	out := fileSet{}
	names := []string{path}
	ents, err := os.ReadDir(gensDir(path))
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range ents {
		names = append(names, filepath.Join(gensDir(path), e.Name()))
	}
	for _, p := range names {
		if fi, err := os.Stat(p); err == nil {
			out[p] = fi
		}
	}
	return out
}

// grown returns the bytes of the files of the mirror at path that are
// new or replaced (another file by that name) since fs was listed.
func (fs fileSet) grown(b *testing.B, path string) int64 {
	var n int64
	for p, fi := range listFiles(b, path) {
		if old, ok := fs[p]; !ok || !os.SameFile(old, fi) {
			n += fi.Size()
		}
	}
	return n
}
