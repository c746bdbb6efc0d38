package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// publishMirror syncs raws (plus quarantined bad entries) into the mirror
// at path as one sync would, and returns the result.
func publishMirror(t testing.TB, m *mirror.Mirror, raws [][]byte, quarantined int, at time.Time) mirror.PublishResult {
	t.Helper()
	ctx := context.Background()
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]mirror.Entry, 0, 1000)
	flush := func() {
		if err := w.PutBatch(batch, nil); err != nil {
			_ = w.Abort(false)
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for _, raw := range raws {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		e := w.AdmitStage(st)
		if !e.Admitted() {
			_ = w.Abort(false)
			t.Fatalf("the gate refused test stage %s: %v", st, e.Err())
		}
		batch = append(batch, e)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	for i := range quarantined {
		batch = append(batch, w.Admit(fmt.Appendf(nil, `{"broken":%d}`, i)))
	}
	flush()
	res, err := w.Publish(ctx, mirror.PublishInfo{Upstream: "https://registry.example.org", SyncTime: at})
	if err != nil {
		_ = w.Abort(false)
		t.Fatal(err)
	}
	return res
}

func TestFromMirror(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mirror.db")
	m, err := mirror.Create(path, mirror.Options{ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	raws := mixedRaws(t)
	syncedAt := fixedNow.Add(-10 * time.Minute)
	res := publishMirror(t, m, raws, 2, syncedAt)
	ref := newMemSnapshot(t, Info{}, raws)

	h := newTestServer(t, FromMirror(m), Options{}).Handler()
	for _, kind := range append(store.AllLifecycleKinds(), store.LifecycleUnknown) {
		q := "/stages?limit=200"
		if kind != store.LifecycleUnknown {
			q += "&lifecycle=" + kind.Name()
		}
		rec := do(t, h, "GET", q)
		if got, want := rec.Body.String(), listBody(ref.byKind[kind], len(ref.byKind[kind])); got != want {
			t.Fatalf("%s: mirror page differs from the source bytes:\n got %.200s\nwant %.200s", q, got, want)
		}
	}
	for _, st := range ref.stages {
		rec := do(t, h, "GET", "/stages/"+string(st.ID))
		if rec.Body.String() != `{"ok":true,"result":`+string(st.Raw)+`}` {
			t.Fatalf("stage %s differs", st.ID)
		}
	}
	wantError(t, do(t, h, "GET", "/stages/"+strings.Repeat("e", 64)), 404, CodeNotFound)

	var health struct {
		Store  store.Stats
		Mirror struct {
			Generation  uint64
			Upstream    string
			LastSync    string `json:"last_sync"`
			AgeSeconds  int64  `json:"age_seconds"`
			Digest      string
			Quarantined int
		}
	}
	if err := json.Unmarshal(decodeEnvelope(t, do(t, h, "GET", "/health")).Result, &health); err != nil {
		t.Fatal(err)
	}
	wantStats := ref.computeStats()
	gotJSON, _ := json.Marshal(health.Store)
	wantJSON, _ := json.Marshal(wantStats)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("stats\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if health.Mirror.Generation != res.Generation || health.Mirror.Digest != res.Digest ||
		health.Mirror.Quarantined != 2 || health.Mirror.Upstream != "https://registry.example.org" ||
		health.Mirror.LastSync != syncedAt.UTC().Format(time.RFC3339) || health.Mirror.AgeSeconds != 600 {
		t.Errorf("mirror info %+v (published %+v)", health.Mirror, res)
	}

	// A new snapshot is served without a restart, and answering goes on
	// while it is being written.
	etag := do(t, h, "GET", "/stages?lifecycle=active").Header().Get("ETag")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rec := do(t, h, "GET", "/stages?lifecycle=active&limit=200")
			if rec.Code != 200 {
				select {
				case errs <- fmt.Sprintf("during a sync: %d %s", rec.Code, rec.Body):
				default:
				}
				return
			}
		}
	}()
	more := append(fixtureRaws(t)[:40], signedRaws(t, 3, 25)...)
	res2 := publishMirror(t, m, more, 0, fixedNow)
	close(stop)
	wg.Wait()
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	ref2 := newMemSnapshot(t, Info{}, more)
	rec := do(t, h, "GET", "/stages?lifecycle=active", "If-None-Match", etag)
	if rec.Code != 200 || rec.Header().Get("ETag") == etag {
		t.Fatalf("new snapshot not served: %d etag %s", rec.Code, rec.Header().Get("ETag"))
	}
	if got, want := rec.Body.String(), listBody(ref2.byKind[store.LifecycleActive][:50], len(ref2.byKind[store.LifecycleActive])); got != want {
		t.Fatalf("after the second sync: %.200s", got)
	}
	if !strings.Contains(do(t, h, "GET", "/health").Body.String(), fmt.Sprintf(`"generation":%d`, res2.Generation)) {
		t.Error("health still reports the old generation")
	}
}

// benchMirrorData is a 100k-stage mirror file, built once per test binary
// in a directory TestMain removes.
var benchMirrorData struct {
	once sync.Once
	dir  string
	m    *mirror.Mirror
	ids  []store.StageID
}

// signedRaws is n valid generated stages signed by the fake registry's
// key for seed: what a mirror's admission gate lets in.
func signedRaws(t testing.TB, seed int64, n int) [][]byte {
	t.Helper()
	raws, err := registrytest.GenerateStages(n, seed, 300)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(raws))
	for i, r := range raws {
		out[i] = r
	}
	return out
}

func benchMirror(b *testing.B) (*mirror.Mirror, []store.StageID) {
	benchMirrorData.once.Do(func() {
		dir, err := os.MkdirTemp("", "server-bench-")
		if err != nil {
			b.Fatal(err)
		}
		benchMirrorData.dir = dir
		m, err := mirror.Create(filepath.Join(dir, "mirror.db"), mirror.Options{})
		if err != nil {
			b.Fatal(err)
		}
		raws := signedRaws(b, 7, benchStages)
		publishMirror(b, m, raws, 0, time.Now())
		benchMirrorData.m = m
		benchMirrorData.ids = newMemSnapshot(b, Info{}, raws).ids(store.LifecycleUnknown)
	})
	if benchMirrorData.m == nil {
		b.Fatal("building the benchmark mirror failed")
	}
	return benchMirrorData.m, benchMirrorData.ids
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchMirrorData.m != nil {
		_ = benchMirrorData.m.Close()
	}
	if benchMirrorData.dir != "" {
		_ = os.RemoveAll(benchMirrorData.dir)
	}
	os.Exit(code)
}

func BenchmarkMirrorListPage(b *testing.B) {
	m, _ := benchMirror(b)
	benchListPage(b, FromMirror(m), benchStages)
}

func BenchmarkMirrorGetStage(b *testing.B) {
	m, ids := benchMirror(b)
	benchGetStage(b, FromMirror(m), ids)
}
