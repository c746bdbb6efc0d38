package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// countingHistory wraps a History and counts the snapshots it has handed
// out that are not closed yet.
type countingHistory struct {
	History
	open atomic.Int64
}

func (c *countingHistory) Acquire() (Snapshot, error) {
	return c.count(c.History.Acquire())
}

func (c *countingHistory) AcquireAt(ctx context.Context, gen uint64) (Snapshot, error) {
	return c.count(c.History.AcquireAt(ctx, gen))
}

func (c *countingHistory) count(sn Snapshot, err error) (Snapshot, error) {
	if err != nil {
		return nil, err
	}
	c.open.Add(1)
	return &countedSnapshot{Snapshot: sn, c: c}, nil
}

type countedSnapshot struct {
	Snapshot
	c *countingHistory
}

func (s *countedSnapshot) Close() error {
	s.c.open.Add(-1)
	return s.Snapshot.Close()
}

// withLifecycle returns raw with its lifecycle set to l.
func withLifecycle(t testing.TB, raw []byte, l store.Lifecycle) []byte {
	t.Helper()
	st, err := store.DecodeStage(raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err = st.WithLifecycle(l)
	if err != nil {
		t.Fatal(err)
	}
	return st.Raw
}

// revised returns raw with another description: the same id (the
// description is not hashed), other bytes.
func revised(t testing.TB, raw []byte, n int) []byte {
	t.Helper()
	out := bytes.Replace(raw, []byte(`"description":"`), fmt.Appendf(nil, `"description":"(revision %d) `, n), 1)
	if bytes.Equal(out, raw) {
		t.Fatal("fixture stage has no description to revise")
	}
	return out
}

// historyGenerations returns the stage sets of four generations of a
// registry, each changing the one before: stages removed, stages added,
// lifecycles changed (active to tombstone, draft to active), and stages
// whose bytes changed under the same id. Removed stages come back too.
func historyGenerations(t testing.TB) [][][]byte {
	t.Helper()
	base := signedRaws(t, 11, 340)
	more := signedRaws(t, 12, 120)
	kind := func(raw []byte) store.LifecycleKind {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		return st.Lifecycle.Kind
	}
	change := func(prev [][]byte, from, to int, rev int) [][]byte {
		out := slices.Clone(prev)
		for i := from; i < to && i < len(out); i++ {
			switch k := kind(out[i]); {
			case i%4 == 0 && k == store.LifecycleActive:
				out[i] = withLifecycle(t, out[i], store.Tombstone)
			case k == store.LifecycleDraft:
				out[i] = withLifecycle(t, out[i], store.Active)
			case i%4 == 1:
				out[i] = revised(t, out[i], rev)
			}
		}
		return out
	}
	g1 := base                                                                     // 340
	g2 := append(change(g1[40:], 100, 220, 2), more[:80]...)                       // −40, +80: 380
	g3 := append(change(g2[30:], 200, 300, 3), append(more[80:], base[:10]...)...) // −30, +40, 10 back: 400
	g4 := change(slices.Delete(slices.Clone(g3), 250, 300), 0, 90, 4)              // −50: 350
	return [][][]byte{g1, g2, g3, g4}
}

// pageAll pages GET {base}/stages{query}&limit=200&offset=N to the end
// and returns every stage's bytes in order.
func pageAll(t *testing.T, base, query string) [][]byte {
	t.Helper()
	var out [][]byte
	for offset := 0; ; {
		resp, err := http.Get(fmt.Sprintf("%s/stages?%slimit=200&offset=%d", base, query, offset))
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			OK     bool `json:"ok"`
			Result struct {
				Stages []json.RawMessage `json:"stages"`
				Total  int               `json:"total"`
			} `json:"result"`
		}
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || !env.OK {
			t.Fatalf("%s page at %d: %v ok=%v", base, offset, err, env.OK)
		}
		for _, r := range env.Result.Stages {
			out = append(out, r)
		}
		offset += len(env.Result.Stages)
		if len(env.Result.Stages) == 0 || offset >= env.Result.Total {
			return out
		}
	}
}

// mirrorFDs counts this process's open files under dir (Linux only).
func mirrorFDs(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir) {
			n++
		}
	}
	return n
}

// TestPinnedMirrorHistory serves a real mirror of four generations and
// pages /at/G/ exactly as noether's client pages its registry, for every
// G: each sees generation G's active stages, not the current ones. Every
// lifecycle's listing, by number and by digest prefix, is G's byte for
// byte. A generation collected while cached is 404 at once, and nothing
// stays open.
func TestPinnedMirrorHistory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m, err := mirror.Create(filepath.Join(dir, "mirror.db"), mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sets := historyGenerations(t)
	var gens []uint64
	refs := map[uint64]*memSnapshot{}
	for i, raws := range sets {
		res := publishMirror(t, m, raws, i%2, fixedNow.Add(time.Duration(i)*time.Hour))
		gens = append(gens, res.Generation)
		refs[res.Generation] = newMemSnapshot(t, Info{}, raws)
	}
	cur := gens[len(gens)-1]
	fdsBefore := mirrorFDs(t, dir)

	src := &countingHistory{History: FromMirror(m).(History)}
	s := newTestServer(t, src, Options{PinnedGenerations: 2})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	activeOf := func(g uint64) []store.StageID { return refs[g].ids(store.LifecycleActive) }
	for _, g := range gens {
		base := srv.URL + "/at/" + strconv.FormatUint(g, 10)
		seen, pages := replayNoetherRefresh(t, base)
		want := activeOf(g)
		if len(seen) != len(want) {
			t.Fatalf("/at/%d: noether saw %d active stages, want %d", g, len(seen), len(want))
		}
		for _, id := range want {
			if seen[id] != 1 {
				t.Fatalf("/at/%d: stage %s seen %d times", g, id, seen[id])
			}
		}
		if wantPages := (len(want) + 199) / 200; pages != wantPages || pages < 2 {
			t.Errorf("/at/%d: %d pages, want %d (and more than one)", g, pages, wantPages)
		}
		if g != cur && slices.Equal(want, activeOf(cur)) {
			t.Fatalf("fixture: generation %d's active stages are the current ones", g)
		}
		var health struct {
			Result struct {
				Store  json.RawMessage `json:"store"`
				Mirror struct {
					Generation uint64 `json:"generation"`
				} `json:"mirror"`
			} `json:"result"`
		}
		resp, err := http.Get(base + "/health")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&health)
		resp.Body.Close()
		if err != nil || health.Result.Mirror.Generation != g || string(health.Result.Store) != statsJSON(t, refs[g].computeStats()) {
			t.Errorf("/at/%d/health: %v, generation %d, store %s", g, err, health.Result.Mirror.Generation, health.Result.Store)
		}
		for _, k := range append(store.AllLifecycleKinds(), store.LifecycleUnknown) {
			q := ""
			if k != store.LifecycleUnknown {
				q = "lifecycle=" + k.Name() + "&"
			}
			got, want := pageAll(t, base, q), refs[g].byKind[k]
			if len(got) != len(want) {
				t.Fatalf("/at/%d/stages?%s: %d stages, want %d", g, q, len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("/at/%d/stages?%s: stage %d differs from the generation's bytes", g, q, i)
				}
			}
		}
	}
	// The fixture changed what it says it changed.
	g1, g4 := refs[gens[0]], refs[cur]
	var removed, changed string
	for _, st := range g1.stages {
		raw4, ok := g4.raw[st.ID]
		switch {
		case !ok && removed == "":
			removed = string(st.ID)
		case ok && changed == "" && !bytes.Equal(raw4, st.Raw) && bytes.Contains(raw4, []byte("(revision")):
			changed = string(st.ID)
		}
	}
	if removed == "" || changed == "" {
		t.Fatal("fixture: no stage removed or revised between the first and the last generation")
	}
	for _, tt := range []struct {
		path string
		code int
		raw  []byte
	}{
		{fmt.Sprintf("/at/%d/stages/%s", gens[0], removed), 200, g1.raw[store.StageID(removed)]},
		{"/stages/" + removed, 404, nil},
		{fmt.Sprintf("/at/%d/stages/%s", gens[0], changed), 200, g1.raw[store.StageID(changed)]},
		{fmt.Sprintf("/at/%d/stages/%s", cur, changed), 200, g4.raw[store.StageID(changed)]},
	} {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ Result json.RawMessage }
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tt.code || (tt.raw != nil && !bytes.Equal(env.Result, tt.raw)) {
			t.Errorf("%s: %d %v %.100s", tt.path, resp.StatusCode, err, env.Result)
		}
	}

	// By digest prefix: redirected to the number, and the same listing.
	kept, err := m.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != len(gens)+1 { // and the empty generation Create made
		t.Fatalf("the mirror keeps %d generations, want %d", len(kept), len(gens)+1)
	}
	g2 := kept[2]
	seen, _ := replayNoetherRefresh(t, srv.URL+"/at/"+g2.Digest[:10])
	if want := activeOf(g2.Generation); len(seen) != len(want) {
		t.Errorf("/at/%s: %d active stages, want generation %d's %d", g2.Digest[:10], len(seen), g2.Generation, len(want))
	}

	// Collect all but the last two: a cached generation is 404 at once,
	// and the message names the oldest kept.
	if n := s.pins.len(); n == 0 {
		t.Fatal("nothing cached")
	}
	res, err := m.GC(ctx, &mirror.KeepPolicy{Last: 2, Within: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Oldest != gens[2] {
		t.Fatalf("GC kept from %d, want %d", res.Oldest, gens[2])
	}
	for _, g := range []uint64{gens[1], gens[0]} {
		resp, err := http.Get(fmt.Sprintf("%s/at/%d/stages?lifecycle=active&limit=200&offset=0", srv.URL, g))
		if err != nil {
			t.Fatal(err)
		}
		var env envelope
		err = json.NewDecoder(resp.Body).Decode(&env)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 404 || env.Error == nil || env.Error.Code != CodeNotFound ||
			!strings.Contains(env.Error.Message, fmt.Sprintf("generation %d was collected", g)) ||
			!strings.Contains(env.Error.Message, fmt.Sprintf("oldest generation kept is %d", gens[2])) {
			t.Errorf("/at/%d after GC: %d %v %+v", g, resp.StatusCode, err, env.Error)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("/at/%d after GC: Cache-Control %q", g, cc)
		}
	}
	// The survivors still answer, and the cache closed what it dropped.
	replayNoetherRefresh(t, fmt.Sprintf("%s/at/%d", srv.URL, gens[2]))
	if n, c := src.open.Load(), s.pins.len(); n != int64(c) || c > 2 {
		t.Errorf("%d snapshots open for %d cached generations", n, c)
	}
	srv.Close()
	http.DefaultClient.CloseIdleConnections()
	s.ReleasePinned()
	if n := src.open.Load(); n != 0 {
		t.Errorf("%d snapshots open after ReleasePinned", n)
	}
	if n := mirrorFDs(t, dir); n != fdsBefore {
		t.Errorf("%d files under the mirror open, %d before serving", n, fdsBefore)
	}
}

// TestPinnedCollectedByAnotherProcess: the server's mirror handle reads
// the manifest at most every reload interval; a generation another
// process collected meanwhile still resolves, but its files are gone.
// That is a 404 NOT_FOUND like any collected generation, not a 503.
func TestPinnedCollectedByAnotherProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "mirror.db")
	writer, err := mirror.Create(path, mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	raws := fixtureRaws(t)
	var gens []uint64
	for i := range 3 {
		gens = append(gens, publishMirror(t, writer, raws[i*20:(i+1)*20+20], 0, fixedNow).Generation)
	}
	reader, err := mirror.Open(path, mirror.Options{ReloadInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	s := newTestServer(t, FromMirror(reader), Options{})
	defer s.ReleasePinned()
	h := s.Handler()
	if _, err := writer.GC(ctx, &mirror.KeepPolicy{Last: 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	msg := wantError(t, do(t, h, "GET", fmt.Sprintf("/at/%d/stages", gens[1])), 404, CodeNotFound)
	if want := fmt.Sprintf("oldest generation kept is %d", gens[2]); !strings.Contains(msg, want) {
		t.Errorf("message %q lacks %q", msg, want)
	}
	if rec := do(t, h, "GET", fmt.Sprintf("/at/%d/stages", gens[2])); rec.Code != 200 {
		t.Errorf("the kept generation: %d %s", rec.Code, rec.Body)
	}
}
