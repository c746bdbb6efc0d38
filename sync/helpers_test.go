package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// fastOpts makes the registry client fail and retry quickly in tests.
func fastOpts() registry.Options {
	return registry.Options{
		BaseBackoff:    time.Millisecond,
		MaxBackoff:     5 * time.Millisecond,
		MaxRetryAfter:  20 * time.Millisecond,
		RequestTimeout: 200 * time.Millisecond,
		MaxAttempts:    4,
	}
}

func newClient(t testing.TB, url string) *registry.Client {
	t.Helper()
	c, err := registry.New(url, fastOpts())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newServer(t testing.TB, opts registrytest.Options) *registrytest.Server {
	t.Helper()
	srv, err := registrytest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func newMirror(t testing.TB) *mirror.Mirror {
	t.Helper()
	return newMirrorWith(t, mirror.Options{})
}

// newMirrorWith is newMirror with these options.
func newMirrorWith(t testing.TB, opts mirror.Options) *mirror.Mirror {
	t.Helper()
	m, err := mirror.Create(filepath.Join(t.TempDir(), "mirror.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var (
	genMu    gosync.Mutex
	genCache = map[[2]int][]json.RawMessage{}
)

// genStages returns n small generated stages (every lifecycle appears
// from n = 10 on: 10% deprecated, 4% draft, 4% tombstone, rest active).
// Results are cached; callers must not modify the bytes.
func genStages(t testing.TB, n, seed int) []json.RawMessage {
	t.Helper()
	genMu.Lock()
	defer genMu.Unlock()
	k := [2]int{n, seed}
	if s, ok := genCache[k]; ok {
		return s
	}
	s, err := registrytest.GenerateStages(n, int64(seed), 120)
	if err != nil {
		t.Fatal(err)
	}
	genCache[k] = s
	return s
}

// testKey signs the stages the tests build by hand.
var testKey = registrytest.GeneratedKey(77)

// build mints a valid stage named name.
func build(t testing.TB, name, desc string, l store.Lifecycle, extra ...store.ExtraField) *store.Stage {
	t.Helper()
	s, err := store.BuildStage(store.StageSpec{
		Name: name, Description: desc,
		Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Number"}`),
		Effects:            []store.Effect{{Kind: store.EffectPure}},
		ImplementationCode: "def execute(x):\n    return len(x)\n", ImplementationLanguage: "python",
		Examples:  []store.Example{{Input: json.RawMessage(`"ab"`), Output: json.RawMessage(`2`)}},
		Lifecycle: l, Extra: extra,
	}, testKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tamper returns raw with old replaced by new once (the caller makes sure
// old occurs).
func tamper(t testing.TB, raw []byte, old, new string) json.RawMessage {
	t.Helper()
	if !bytes.Contains(raw, []byte(old)) {
		t.Fatalf("tamper: %q not in stage", old)
	}
	return bytes.Replace(bytes.Clone(raw), []byte(old), []byte(new), 1)
}

// badHash gives s's bytes with implementation_code changed: the
// implementation_hash no longer matches.
func badHash(t testing.TB, s *store.Stage) json.RawMessage {
	return tamper(t, s.Raw, "return len(x)", "return len(y)")
}

// badSig gives s's bytes with one hex digit of the Ed25519 signature
// flipped.
func badSig(t testing.TB, s *store.Stage) json.RawMessage {
	t.Helper()
	i := bytes.Index(s.Raw, []byte(`"ed25519_signature":"`))
	if i < 0 {
		t.Fatal("stage is unsigned")
	}
	raw := bytes.Clone(s.Raw)
	j := i + len(`"ed25519_signature":"`) + 3
	if raw[j] == '0' {
		raw[j] = '1'
	} else {
		raw[j] = '0'
	}
	return raw
}

func idOf(t testing.TB, raw []byte) store.StageID {
	t.Helper()
	s, err := store.DecodeStage(raw)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return s.ID
}

// lifecycleIDs returns the ids of the registry's stages of kind k, in
// listing order.
func lifecycleIDs(t testing.TB, srv *registrytest.Server, k store.LifecycleKind) []store.StageID {
	t.Helper()
	var out []store.StageID
	for _, raw := range srv.Snapshot() {
		s, err := store.DecodeStage(raw)
		if err == nil && s.Lifecycle.Kind == k {
			out = append(out, s.ID)
		}
	}
	return out
}

// assertMirrors checks that m's published snapshot is exactly the
// registry's current state: every stage that verifies is served with
// identical bytes, every one that does not is quarantined (and not
// served), and nothing else is there.
func assertMirrors(t testing.TB, m *mirror.Mirror, srv *registrytest.Server) {
	t.Helper()
	ctx := context.Background()
	want := map[store.StageID][]byte{}
	wantQ := map[string]bool{}
	for _, raw := range srv.Snapshot() {
		s, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatalf("registry holds undecodable bytes; assertMirrors does not handle them")
		}
		if !store.Verify(s).OK() {
			wantQ[string(s.ID)] = true
			continue
		}
		want[s.ID] = raw
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	got := 0
	for rec, err := range snap.Records(ctx, store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		got++
		w, ok := want[rec.ID]
		switch {
		case !ok:
			t.Errorf("mirror serves %s, which the registry does not hold as a good stage", rec.ID)
		case !bytes.Equal(w, rec.Raw):
			t.Errorf("mirror's bytes of %s differ from the registry's:\n got %.120s\nwant %.120s", rec.ID, rec.Raw, w)
		}
	}
	if got != len(want) {
		t.Errorf("mirror serves %d stages, registry has %d good ones", got, len(want))
	}
	gotQ := map[string]bool{}
	for q, err := range snap.Quarantined(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		gotQ[q.ID] = true
		if !wantQ[q.ID] {
			t.Errorf("mirror quarantines %s, which the registry does not hold as a bad stage", q.ID)
		}
	}
	for id := range wantQ {
		if !gotQ[id] {
			t.Errorf("bad stage %s is not quarantined", id)
		}
		if _, err := snap.Get(ctx, store.StageID(id)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(quarantined %s) = %v, want ErrNotFound", id, err)
		}
	}
	if meta := snap.Meta(); meta.Total != len(want) || meta.Quarantined != len(wantQ) {
		t.Errorf("meta: total %d quarantined %d, want %d and %d", meta.Total, meta.Quarantined, len(want), len(wantQ))
	}
}

// contentOf lists a snapshot's content: id → bytes and quarantine keys.
func contentOf(t testing.TB, m *mirror.Mirror) string {
	t.Helper()
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var b strings.Builder
	for rec, err := range snap.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s\n", rec.ID, rec.Raw)
	}
	for q, err := range snap.Quarantined(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "Q %s %s\n", q.ID, q.Raw)
	}
	return b.String()
}

// recorder is a Registry that records every ListPage call.
type recorder struct {
	msync.Registry
	mu    gosync.Mutex
	calls []string
}

func (r *recorder) ListPage(ctx context.Context, lc string, limit, offset int) (registry.Page, error) {
	r.mu.Lock()
	r.calls = append(r.calls, fmt.Sprintf("%s/%d/%d", lc, limit, offset))
	r.mu.Unlock()
	return r.Registry.ListPage(ctx, lc, limit, offset)
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func mustSync(t testing.TB, m *mirror.Mirror, reg msync.Registry, opts msync.Options) msync.Report {
	t.Helper()
	rep, err := msync.Sync(context.Background(), m, reg, opts)
	if err != nil {
		t.Fatalf("sync: %v (report %+v)", err, rep)
	}
	return rep
}
