package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/store/storetest"
)

// memSnapshot is an in-memory Snapshot built from raw stages.
type memSnapshot struct {
	info   Info
	raw    map[store.StageID][]byte
	byKind map[store.LifecycleKind][][]byte // id order; LifecycleUnknown: all
	stages []*store.Stage                   // id order

	statsCalls atomic.Int64
	// block, when non-nil, makes Page wait for it to be closed.
	block chan struct{}
	// waiting is closed when a Page call first waits for block: a request
	// (or a trust view build) is then in flight, holding the snapshot.
	waiting     chan struct{}
	waitingOnce sync.Once
	// pageErr, when non-nil, is returned by Page.
	pageErr error
}

func newMemSnapshot(t testing.TB, info Info, raws [][]byte) *memSnapshot {
	t.Helper()
	s := &memSnapshot{info: info, raw: map[store.StageID][]byte{}, byKind: map[store.LifecycleKind][][]byte{},
		waiting: make(chan struct{})}
	for _, raw := range raws {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatalf("fixture stage does not decode: %v", err)
		}
		if _, dup := s.raw[st.ID]; dup {
			t.Fatalf("duplicate fixture id %s", st.ID)
		}
		s.raw[st.ID] = raw
		s.stages = append(s.stages, st)
	}
	slices.SortFunc(s.stages, func(a, b *store.Stage) int { return cmp.Compare(a.ID, b.ID) })
	for _, st := range s.stages {
		s.byKind[store.LifecycleUnknown] = append(s.byKind[store.LifecycleUnknown], st.Raw)
		if st.Lifecycle.Kind != store.LifecycleUnknown {
			s.byKind[st.Lifecycle.Kind] = append(s.byKind[st.Lifecycle.Kind], st.Raw)
		}
	}
	return s
}

// ids returns the ids of kind k in id order.
func (s *memSnapshot) ids(k store.LifecycleKind) []store.StageID {
	var out []store.StageID
	for _, st := range s.stages {
		if k == store.LifecycleUnknown || st.Lifecycle.Kind == k {
			out = append(out, st.ID)
		}
	}
	return out
}

func (s *memSnapshot) computeStats() store.Stats {
	var st store.Stats
	for _, stage := range s.stages {
		st.Add(stage)
	}
	return st
}

// memSource serves memSnapshots, counting pinned handles.
type memSource struct {
	cur        atomic.Pointer[memSnapshot]
	open       atomic.Int64
	acquireErr atomic.Pointer[error]
}

func newMemSource(s *memSnapshot) *memSource {
	src := &memSource{}
	src.cur.Store(s)
	return src
}

func (m *memSource) publish(s *memSnapshot) { m.cur.Store(s) }

func (m *memSource) Acquire() (Snapshot, error) {
	if e := m.acquireErr.Load(); e != nil {
		return nil, *e
	}
	m.open.Add(1)
	return &memHandle{memSnapshot: m.cur.Load(), src: m}, nil
}

// memHandle is one pinned reference to a memSnapshot.
type memHandle struct {
	*memSnapshot
	src    *memSource
	closed atomic.Bool
}

func (h *memHandle) Info() Info { return h.info }

func (h *memHandle) Page(ctx context.Context, k store.LifecycleKind, offset, limit int) ([][]byte, int, error) {
	if h.closed.Load() {
		return nil, 0, errors.New("Page on a closed snapshot")
	}
	if h.block != nil {
		h.waitingOnce.Do(func() { close(h.waiting) })
		select {
		case <-h.block:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if h.pageErr != nil {
		return nil, 0, h.pageErr
	}
	all := h.byKind[k]
	if offset >= len(all) {
		return nil, len(all), nil
	}
	return all[offset:min(len(all), offset+limit)], len(all), nil
}

func (h *memHandle) GetRaw(_ context.Context, id store.StageID) ([]byte, error) {
	if h.closed.Load() {
		return nil, errors.New("GetRaw on a closed snapshot")
	}
	raw, ok := h.raw[id]
	if !ok {
		return nil, store.NotFoundError(id)
	}
	return raw, nil
}

func (h *memHandle) Stats(context.Context) (store.Stats, error) {
	h.statsCalls.Add(1)
	return h.computeStats(), nil
}

func (h *memHandle) Close() error {
	if h.closed.Swap(true) {
		return errors.New("snapshot closed twice")
	}
	h.src.open.Add(-1)
	return nil
}

// fixtureRaws returns the 85 stdlib stages' exact bytes.
func fixtureRaws(t testing.TB) [][]byte {
	t.Helper()
	data, err := os.ReadFile("../../../../testdata/noether-stdlib-stages.json")
	if err != nil {
		t.Fatal(err)
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(elems))
	for i, e := range elems {
		out[i] = e
	}
	return out
}

// mixedRaws is the fixture with a few stages moved to other lifecycles
// (Stage.WithLifecycle rewrites only the lifecycle bytes).
func mixedRaws(t testing.TB) [][]byte {
	t.Helper()
	raws := fixtureRaws(t)
	var succ store.StageID
	for i, raw := range raws {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		var l store.Lifecycle
		switch {
		case i == 0:
			succ = st.ID
			continue
		case i%10 == 1:
			l = store.Draft
		case i%10 == 2:
			l = store.Deprecated(succ)
		case i%20 == 3:
			l = store.Tombstone
		default:
			continue
		}
		st2, err := st.WithLifecycle(l)
		if err != nil {
			t.Fatal(err)
		}
		raws[i] = st2.Raw
	}
	return raws
}

// genRaws makes n generated stages: active ones, then every tenth of the
// rest in another lifecycle.
func genRaws(t testing.TB, seed int64, active, others int) [][]byte {
	t.Helper()
	g := storetest.NewGen(seed)
	out := make([][]byte, 0, active+others)
	for range active {
		out = append(out, g.Stage(storetest.WithEffects(`{"effect":"Cost","cents":5}`, `{"effect":"Pure"}`)).Raw)
	}
	lcs := []store.Lifecycle{store.Draft, store.Tombstone, store.Deprecated(g.ID())}
	for i := range others {
		out = append(out, g.Stage(storetest.WithLifecycle(lcs[i%len(lcs)])).Raw)
	}
	return out
}

func testInfo(gen uint64) Info {
	return Info{
		Generation:  gen,
		Upstream:    "https://registry.example.org",
		Digest:      fmt.Sprintf("%064x", gen*0x1234567),
		Quarantined: 2,
	}
}

// awaitTimeout bounds every wait for a condition: generous, because the
// tests wait for an event, not for time to pass, and a loaded machine
// may take a while to get there.
const awaitTimeout = 30 * time.Second

// await blocks until ch is closed, failing the test if it is not within
// awaitTimeout.
func await(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(awaitTimeout):
		t.Fatalf("timed out after %s waiting for %s", awaitTimeout, what)
	}
}

// eventually polls cond until it holds, failing the test if it does not
// within awaitTimeout. For conditions nothing signals (a log line).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(awaitTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s", awaitTimeout, what)
		}
	}
}

// notifyListener is a net.Listener that closes closed once it has been
// closed itself: the moment a server stops accepting.
type notifyListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func newNotifyListener(t testing.TB) *notifyListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &notifyListener{Listener: ln, closed: make(chan struct{})}
}

func (l *notifyListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// memHistory is a memSource that keeps past generations: a History that
// resolves refs as mirror.Mirror.Resolve does.
type memHistory struct {
	*memSource
	mu     sync.Mutex
	gens   map[uint64]*memSnapshot
	oldest uint64 // generations below it were collected

	opens atomic.Int64 // AcquireAt calls that pinned a generation
	// gate, when non-nil, makes AcquireAt wait for it to be closed.
	gate chan struct{}
	// historyErr, when non-nil, is returned by Resolve and AcquireAt.
	historyErr atomic.Pointer[error]
}

// newMemHistory keeps snaps (in increasing generation order); the last
// is the current one.
func newMemHistory(snaps ...*memSnapshot) *memHistory {
	h := &memHistory{memSource: newMemSource(snaps[len(snaps)-1]), gens: map[uint64]*memSnapshot{}}
	for _, s := range snaps {
		h.gens[s.info.Generation] = s
	}
	h.oldest = snaps[0].info.Generation
	return h
}

// publish makes s the current generation, keeping the others.
func (h *memHistory) publish(s *memSnapshot) {
	h.mu.Lock()
	h.gens[s.info.Generation] = s
	h.mu.Unlock()
	h.memSource.publish(s)
}

// collect drops every generation below g, as a keep policy would.
func (h *memHistory) collect(g uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n := range h.gens {
		if n < g {
			delete(h.gens, n)
		}
	}
	h.oldest = g
}

func (h *memHistory) Resolve(ctx context.Context, ref string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if e := h.historyErr.Load(); e != nil {
		return 0, *e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	newest := h.cur.Load().info.Generation
	if n, err := strconv.ParseUint(ref, 10, 64); err == nil {
		if _, ok := h.gens[n]; ok {
			return n, nil
		}
		if n < h.oldest {
			return 0, fmt.Errorf("%w: generation %d was collected; the oldest kept is %d", mirror.ErrGenerationGone, n, h.oldest)
		}
		if len(ref) < 4 {
			return 0, fmt.Errorf("%w: no generation %d; kept %d to %d", mirror.ErrNoGeneration, n, h.oldest, newest)
		}
	}
	ref = strings.ToLower(ref)
	if len(ref) < 4 {
		return 0, fmt.Errorf("%w: %q is too short", mirror.ErrNoGeneration, ref)
	}
	var found uint64
	var ok bool
	for n, s := range h.gens {
		if strings.HasPrefix(s.info.Digest, ref) && (!ok || n > found) {
			found, ok = n, true
		}
	}
	if !ok {
		return 0, fmt.Errorf("%w: no generation %q", mirror.ErrNoGeneration, ref)
	}
	return found, nil
}

func (h *memHistory) AcquireAt(ctx context.Context, gen uint64) (Snapshot, error) {
	if e := h.historyErr.Load(); e != nil {
		return nil, *e
	}
	if h.gate != nil {
		<-h.gate
	}
	h.mu.Lock()
	s, ok := h.gens[gen]
	h.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: generation %d was collected meanwhile", mirror.ErrGenerationGone, gen)
	}
	h.opens.Add(1)
	h.open.Add(1)
	return &memHandle{memSnapshot: s, src: h.memSource}, nil
}

func (h *memHistory) Kept(context.Context) (uint64, uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.oldest, h.cur.Load().info.Generation, nil
}

// historyFixture is generations 3 to 6 of a registry, 1 and 2 collected:
// 3 holds the stdlib stages with mixed lifecycles, 4 drops ten of them,
// 5 adds generated stages, 6 (current) turns every draft active.
func historyFixture(t testing.TB) (*memHistory, []*memSnapshot) {
	t.Helper()
	mixed := mixedRaws(t)
	g3 := mixed
	g4 := slices.Clone(mixed[10:])
	g5 := append(slices.Clone(g4), genRaws(t, 5, 120, 30)...)
	var g6 [][]byte
	for _, raw := range g5 {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		if st.Lifecycle.Kind == store.LifecycleDraft {
			if st, err = st.WithLifecycle(store.Active); err != nil {
				t.Fatal(err)
			}
		}
		g6 = append(g6, st.Raw)
	}
	// Digests with distinct prefixes; 5's is all digits, so /at/1234/
	// names it by digest although 1234 reads as a number.
	digests := []string{"c0ffee", "beef40", "123456", "d06e60"}
	var snaps []*memSnapshot
	for i, raws := range [][][]byte{g3, g4, g5, g6} {
		info := testInfo(uint64(3 + i))
		info.Digest = digests[i] + strings.Repeat(strconv.Itoa(i), 64-len(digests[i]))
		info.Published = fixedNow.Add(time.Duration(i-4) * time.Hour)
		snaps = append(snaps, newMemSnapshot(t, info, raws))
	}
	return newMemHistory(snaps...), snaps
}
