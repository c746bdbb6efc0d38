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
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
