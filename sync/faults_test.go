package sync_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// lastGood captures the published snapshot so that a test can check,
// during and after a failing sync, that readers still see exactly it.
type lastGood struct {
	gen     uint64
	digest  string
	content string
}

func capture(t testing.TB, m *mirror.Mirror) lastGood {
	t.Helper()
	meta := m.Meta()
	c, err := snapshotContent(m)
	if err != nil {
		t.Fatal(err)
	}
	return lastGood{meta.Generation, meta.Digest, c}
}

// check compares what a fresh reader of m's file sees with g.
func (g lastGood) check(t testing.TB, path string) {
	t.Helper()
	if err := g.compare(path); err != nil {
		t.Error(err)
	}
}

// compare is check without a testing.TB, for code that runs off the test
// goroutine (a registry hook): it returns what differs, nil when nothing.
func (g lastGood) compare(path string) error {
	r, err := mirror.Open(path, mirror.Options{})
	if err != nil {
		return fmt.Errorf("open the mirror as a reader: %w", err)
	}
	defer r.Close()
	var errs []error
	meta := r.Meta()
	if meta.Generation != g.gen || meta.Digest != g.digest {
		errs = append(errs, fmt.Errorf("reader sees generation %d digest %.12s, want the last good %d %.12s", meta.Generation, meta.Digest, g.gen, g.digest))
	}
	c, err := snapshotContent(r)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("reader cannot list the snapshot: %w", err))
	case c != g.content:
		errs = append(errs, errors.New("reader sees other content than the last good snapshot"))
	}
	return errors.Join(errs...)
}

// snapshotContent is contentOf returning its error instead of failing a
// test: id → bytes and quarantine keys of m's current snapshot.
func snapshotContent(m *mirror.Mirror) (string, error) {
	snap, err := m.Snapshot()
	if err != nil {
		return "", err
	}
	defer snap.Close()
	var b strings.Builder
	for rec, err := range snap.Records(context.Background(), store.LifecycleUnknown) {
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s %s\n", rec.ID, rec.Raw)
	}
	for q, err := range snap.Quarantined(context.Background()) {
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "Q %s %s\n", q.ID, q.Raw)
	}
	return b.String(), nil
}

// TestSyncFaults runs a second sync against a registry that changed
// (one stage added) and misbehaves. While it runs and after it ends,
// readers see the last good snapshot; a sync that succeeds ends with the
// registry's content, one that fails leaves everything as it was. Each
// case's fault runs on the test goroutine (it may fail the test) and
// returns what the registry's page hook does, if anything: that runs on a
// handler goroutine and only returns an error.
func TestSyncFaults(t *testing.T) {
	type fault func(t testing.TB, srv *registrytest.Server) func(lc string, offset int) error
	cases := []struct {
		name  string
		fault fault
		want  error // nil: the sync succeeds
	}{
		{name: "5xx then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.FailNext(2, 503); return nil }},
		{name: "5xx persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.FailNext(1000, 500); return nil }, want: registry.ErrServer},
		{name: "429 with Retry-After", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.RateLimitNext(2, time.Second)
			return nil
		}},
		{name: "429 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.RateLimitNext(1000, time.Second)
			return nil
		}, want: registry.ErrRateLimited},
		{name: "HTML 502 then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HTMLNext(2); return nil }},
		{name: "HTML 502 persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HTMLNext(1000); return nil }, want: registry.ErrServer},
		{name: "slow pages", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.SlowPages(20 * time.Millisecond)
			return nil
		}},
		{name: "pages slower than the timeout", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.SlowPages(time.Second)
			return nil
		}, want: registry.ErrUnreachable},
		{name: "hung connection then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HangNext(1); return nil }},
		{name: "hung connections", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.HangNext(1000); return nil }, want: registry.ErrUnreachable},
		{name: "truncated bodies then success", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.TruncateNext(2); return nil }},
		{name: "truncated bodies persistent", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error { s.TruncateNext(1000); return nil }, want: registry.ErrBadResponse},
		{name: "bad hash, bad signature, unknown fields", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			s.AddRaw(badHash(t, build(t, "f_hash", "h", store.Active)))
			s.AddRaw(badSig(t, build(t, "f_sig", "s", store.Active)))
			s.AddRaw(build(t, "f_unknown", "u", store.Active, store.ExtraField{Key: "x_new", Value: []byte(`true`)}).Raw)
			return nil
		}},
		{name: "drift", fault: func(t testing.TB, s *registrytest.Server) func(string, int) error {
			remove := removes(s, nthID(t, s, store.LifecycleActive, 0))
			var fired atomic.Bool
			return func(lc string, offset int) error {
				if lc == "active" && offset == 10 && fired.CompareAndSwap(false, true) {
					return remove()
				}
				return nil
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 6)})
			m := newMirror(t)
			mustSync(t, m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
			good := capture(t, m)
			srv.AddRaw(build(t, "f_added", "added upstream", store.Active).Raw)

			action := tc.fault(t, srv)
			var watched atomic.Int64
			var errs hookErrors
			srv.OnPage(func(lc string, offset int) {
				if action != nil {
					errs.add(action(lc, offset))
				}
				watched.Add(1)
				errs.add(good.compare(m.Path()))
			})
			rep, err := msync.Sync(context.Background(), m, newClient(t, srv.URL()), msync.Options{PageSize: 10})
			srv.Close() // release hung requests, and wait for every hook
			errs.check(t)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("sync: %v", err)
				}
				if rep.Generation != good.gen+1 {
					t.Errorf("generation %d, want %d", rep.Generation, good.gen+1)
				}
				assertMirrors(t, m, srv)
			} else {
				if !errors.Is(err, tc.want) {
					t.Fatalf("sync: %v, want %v", err, tc.want)
				}
				if rep.Published {
					t.Errorf("failed sync reports Published")
				}
				good.check(t, m.Path())
			}
			if watched.Load() == 0 && tc.want == nil {
				t.Errorf("the snapshot was never checked during the sync")
			}
		})
	}
}

// echoedKey is the API key the redaction tests present, and find echoed
// back inside stages.
const echoedKey = "sk-echo-7Hq2Zx9-secret"

// The sync engine finds the redactor of a *registry.Client.
var _ interface{ Redact(string) string } = (*registry.Client)(nil)

// echoing returns stages that fail the admission gate with reasons that
// would quote key: it sits in their bytes where a registry echoing the
// key could put it (as the id, the signature_id, the implementation_hash,
// an effect, or a record field that does not decode). They are built on
// the test goroutine.
func echoing(t testing.TB, key string) map[string]json.RawMessage {
	t.Helper()
	s := func(name string) *store.Stage { return build(t, name, "echoes the key", store.Active) }
	set := func(st *store.Stage, field string) json.RawMessage {
		t.Helper()
		re := regexp.MustCompile(`"` + field + `":"[^"]*"`)
		if re.Find(st.Raw) == nil {
			t.Fatalf("no string %q in the stage", field)
		}
		done := false
		return re.ReplaceAllFunc(bytes.Clone(st.Raw), func(m []byte) []byte {
			if done {
				return m
			}
			done = true
			return []byte(`"` + field + `":"` + key + `"`)
		})
	}
	return map[string]json.RawMessage{
		"id":                  set(s("echo_id"), "id"),
		"signature_id":        set(s("echo_sig_id"), "signature_id"),
		"implementation_hash": set(s("echo_hash"), "implementation_hash"),
		"effect":              set(s("echo_effect"), "effect"),
		"undecodable record field": tamper(t, s("echo_record").Raw, `"input":{"kind":"Text"}`,
			`"input":{"kind":"Record","value":{"`+key+`":{"no_kind":true}}}`),
	}
}

// noKey fails the test when text holds key.
func noKey(t *testing.T, what, text, key string) {
	t.Helper()
	if strings.Contains(text, key) {
		t.Errorf("%s holds the API key: %s", what, text)
	}
}

// TestSyncRedactsEchoedKey: a registry that echoes the API key inside
// stages that fail verification or do not decode never gets it into the
// report or the quarantine reasons, which say [REDACTED] instead; the
// quarantine keeps the bytes as received.
func TestSyncRedactsEchoedKey(t *testing.T) {
	t.Parallel()
	bad := echoing(t, echoedKey)
	stages := append([]json.RawMessage(nil), genStages(t, 20, 31)...)
	for _, raw := range bad {
		stages = append(stages, raw)
	}
	srv := newServer(t, registrytest.Options{Stages: stages, APIKey: echoedKey, ReadAuth: true})
	opts := fastOpts()
	opts.APIKey = echoedKey
	c, err := registry.New(srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	m := newMirror(t)
	rep, err := msync.Sync(context.Background(), m, c, msync.Options{PageSize: 10})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if rep.Quarantined != len(bad) {
		t.Errorf("%d quarantined, want %d", rep.Quarantined, len(bad))
	}
	js, _ := json.Marshal(rep)
	noKey(t, "the report", string(js), echoedKey)
	checkQuarantine(t, m, len(bad), echoedKey)
}

// checkQuarantine checks that m quarantines n entries whose bytes hold key
// and whose ids and reasons do not; the reasons say [REDACTED] instead.
func checkQuarantine(t *testing.T, m *mirror.Mirror, n int, key string) {
	t.Helper()
	got := 0
	for q, err := range m.Quarantined(context.Background()) {
		if err != nil {
			t.Fatal(err)
		}
		got++
		noKey(t, "a quarantined stage's id", q.ID, key)
		reasons := strings.Join(q.Reasons, "\n")
		noKey(t, "quarantine reasons of "+q.ID, reasons, key)
		if !strings.Contains(reasons, registry.Redacted) {
			t.Errorf("quarantine reasons of %s do not say %s: %s", q.ID, registry.Redacted, reasons)
		}
		if !bytes.Contains(q.Raw, []byte(key)) {
			t.Errorf("quarantine of %s does not keep the bytes as received", q.ID)
		}
	}
	if got != n {
		t.Errorf("%d quarantine entries, want %d", got, n)
	}
}

// leakyRegistry is a Registry of another kind than *registry.Client that
// refuses to list drafts with an error quoting its secret, and redacts the
// secret (the optional Redact method the engine looks for).
type leakyRegistry struct {
	msync.Registry
	secret string
}

func (l leakyRegistry) ListPage(ctx context.Context, lc string, limit, offset int) (registry.Page, error) {
	if lc == "draft" {
		return registry.Page{}, fmt.Errorf("%w: token %s may not list drafts", registry.ErrUnauthorized, l.secret)
	}
	return l.Registry.ListPage(ctx, lc, limit, offset)
}

func (l leakyRegistry) Redact(s string) string {
	return strings.ReplaceAll(s, l.secret, registry.Redacted)
}

// TestSyncRedactsThroughAnyRegistry: the engine redacts warnings and
// quarantine reasons through the Redact method of any Registry that has
// one; one without it still syncs (nothing to redact with).
func TestSyncRedactsThroughAnyRegistry(t *testing.T) {
	t.Parallel()
	const secret = "tok-Leaky-4242"
	bad := echoing(t, secret)
	stages := append([]json.RawMessage(nil), genStages(t, 20, 32)...)
	for _, raw := range bad {
		stages = append(stages, raw)
	}
	srv := newServer(t, registrytest.Options{Stages: stages})
	m := newMirror(t)
	rep, err := msync.Sync(context.Background(), m, leakyRegistry{newClient(t, srv.URL()), secret}, msync.Options{PageSize: 10})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	warnings := strings.Join(rep.Warnings, "\n")
	if !strings.Contains(warnings, "refused to list draft") || !strings.Contains(warnings, registry.Redacted) {
		t.Errorf("warnings %q, want the drafts' refusal, redacted", rep.Warnings)
	}
	js, _ := json.Marshal(rep)
	noKey(t, "the report", string(js), secret)
	checkQuarantine(t, m, len(bad), secret)

	// Without a Redact method: the same sync works.
	plain := struct{ msync.Registry }{newClient(t, srv.URL())}
	if rep := mustSync(t, newMirror(t), plain, msync.Options{PageSize: 10}); rep.Quarantined != len(bad) {
		t.Errorf("a Registry without Redact: %d quarantined, want %d", rep.Quarantined, len(bad))
	}
}

// TestRedactsKeyInInvalidJSON: a registry that serves a stage that is not
// even JSON, with the key in it, in a page or alone: neither the sync's
// error and report nor GetLive's error quote the key.
func TestRedactsKeyInInvalidJSON(t *testing.T) {
	t.Parallel()
	s := build(t, "echo_json", "d", store.Active)
	broken := append(bytes.Clone(s.Raw[:len(s.Raw)-1]), []byte(`,"debug":"`+echoedKey+`" !!}`)...)
	h, err := registrytest.NewHandler(registrytest.Options{Stages: genStages(t, 10, 33)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/stages/"+string(s.ID):
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"ok":true,"result":` + string(broken) + `}`))
		case r.URL.Path == "/stages" && r.URL.Query().Get("lifecycle") == "active":
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(rec.Code)
			w.Write(bytes.Replace(rec.Body.Bytes(), []byte(`"stages":[`), []byte(`"stages":[`+string(broken)+`,`), 1))
		default:
			h.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	opts := fastOpts()
	opts.APIKey = echoedKey
	c, err := registry.New(srv.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := msync.Sync(context.Background(), newMirror(t), c, msync.Options{PageSize: 10})
	if err == nil {
		t.Fatalf("a page holding invalid JSON synced: %+v", rep)
	}
	noKey(t, "the sync's error", err.Error(), echoedKey)
	js, _ := json.Marshal(rep)
	noKey(t, "the report", string(js), echoedKey)

	ropts := remoteOpts(filepath.Join(t.TempDir(), "m.db"))
	ropts.Registry.APIKey = echoedKey
	ropts.Sync.Lifecycles = []string{"draft", "deprecated"} // pages without the broken stage
	r, err := msync.Connect(context.Background(), srv.URL, echoedKey, ropts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := r.GetLive(context.Background(), s.ID); err == nil {
		t.Fatalf("GetLive of invalid JSON: %v", got)
	} else {
		noKey(t, "GetLive's error", err.Error(), echoedKey)
	}
}

// TestGetLiveRedactsEchoedKey: GetLive of a stage that does not decode or
// fails verification, with the key echoed in its bytes, gives an error
// that says [REDACTED] instead and still matches its sentinel; Put of an
// existing stage, whose registry copy GetLive then refuses, logs no key.
func TestGetLiveRedactsEchoedKey(t *testing.T) {
	t.Parallel()
	good := build(t, "echo_live", "echoes the key", store.Active)
	cases := []struct {
		name string
		raw  json.RawMessage
		want error
	}{
		{"does not decode", tamper(t, good.Raw, `"input":{"kind":"Text"}`,
			`"input":{"kind":"Record","value":{"`+echoedKey+`":{"no_kind":true}}}`), store.ErrMalformed},
		{"fails verification", regexp.MustCompile(`"implementation_hash":"[0-9a-f]+"`).ReplaceAll(bytes.Clone(good.Raw),
			[]byte(`"implementation_hash":"`+echoedKey+`"`)), store.ErrVerification},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if !bytes.Contains(tc.raw, []byte(echoedKey)) {
				t.Fatal("the key is not in the stage")
			}
			srv := newServer(t, registrytest.Options{Stages: genStages(t, 10, 34), APIKey: echoedKey})
			var logs bytes.Buffer
			opts := remoteOpts(filepath.Join(t.TempDir(), "m.db"))
			opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			r, err := msync.Connect(context.Background(), srv.URL(), echoedKey, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			srv.AddRaw(tc.raw) // under good's id
			ctx := context.Background()

			s, err := r.GetLive(ctx, good.ID)
			if err == nil || s != nil {
				t.Fatalf("GetLive of a bad stage: %v, %v", s, err)
			}
			noKey(t, "GetLive's error", err.Error(), echoedKey)
			if !strings.Contains(err.Error(), registry.Redacted) || !strings.Contains(err.Error(), string(good.ID)) {
				t.Errorf("GetLive's error %q does not name the stage and say %s", err, registry.Redacted)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("GetLive's error %v does not match %v", err, tc.want)
			}
			if _, err := r.Get(ctx, good.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused stage was stored: %v", err)
			}

			// Put: the registry already holds good's id, so the mirror
			// caches the registry's copy, which GetLive refuses.
			if _, err := r.Put(ctx, good); !errors.Is(err, store.ErrAlreadyExists) {
				t.Fatalf("Put of an id the registry holds: %v, want ErrAlreadyExists", err)
			}
			noKey(t, "the log", logs.String(), echoedKey)
			if !strings.Contains(logs.String(), "could not cache") || !strings.Contains(logs.String(), registry.Redacted) {
				t.Errorf("the log does not report the refused copy, redacted:\n%s", logs.String())
			}
		})
	}
}
