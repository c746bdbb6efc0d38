package registrytest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// reply is a decoded response.
type reply struct {
	status int
	header http.Header
	body   []byte
	ok     bool
	result json.RawMessage
	code   string
	msg    string
}

func call(t *testing.T, method, url string, body []byte, hdr map[string]string) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: b}
	var env struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  struct{ Code, Message string }
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s %s: %d body is not a JSON envelope: %q", method, url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, url, ct)
	}
	r.ok, r.result, r.code, r.msg = env.OK, env.Result, env.Error.Code, env.Error.Message
	return r
}

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func stdlib(t *testing.T) []json.RawMessage {
	t.Helper()
	ss, err := StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

type pageResult struct {
	Stages []json.RawMessage `json:"stages"`
	Total  int               `json:"total"`
}

func page(t *testing.T, r reply) pageResult {
	t.Helper()
	if r.status != 200 || !r.ok {
		t.Fatalf("page: %d %s %s", r.status, r.code, r.msg)
	}
	var p pageResult
	if err := json.Unmarshal(r.result, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListStages(t *testing.T) {
	fixture := stdlib(t)
	s := newServer(t, Options{Stages: fixture})
	u := s.URL() + "/stages"

	p := page(t, call(t, "GET", u, nil, nil))
	if len(p.Stages) != DefaultLimit || p.Total != 85 {
		t.Errorf("default page: %d stages, total %d", len(p.Stages), p.Total)
	}
	for i, raw := range p.Stages {
		if !bytes.Equal(raw, fixture[i]) {
			t.Fatalf("stage %d bytes differ from the fixture (order or bytes)", i)
		}
	}
	p = page(t, call(t, "GET", u+"?limit=50&offset=50", nil, nil))
	if len(p.Stages) != 35 || !bytes.Equal(p.Stages[0], fixture[50]) {
		t.Errorf("second page: %d stages", len(p.Stages))
	}
	if p = page(t, call(t, "GET", u+"?limit=100000", nil, nil)); len(p.Stages) != 85 {
		t.Errorf("limit over max: %d stages", len(p.Stages))
	}
	if p = page(t, call(t, "GET", u+"?offset=1000", nil, nil)); len(p.Stages) != 0 || p.Total != 85 {
		t.Errorf("offset past the end: %d stages, total %d", len(p.Stages), p.Total)
	}
	if p = page(t, call(t, "GET", u+"?lifecycle=active&limit=200&offset=0", nil, nil)); len(p.Stages) != 85 || p.Total != 85 {
		t.Errorf("active: %d stages, total %d", len(p.Stages), p.Total)
	}
	if p = page(t, call(t, "GET", u+"?lifecycle=draft", nil, nil)); len(p.Stages) != 0 || p.Total != 0 {
		t.Errorf("draft: %d stages, total %d", len(p.Stages), p.Total)
	}

	big := newServer(t, Options{Generate: 300, StageSize: 200})
	if p = page(t, call(t, "GET", big.URL()+"/stages?limit=1000", nil, nil)); len(p.Stages) != MaxLimit || p.Total != 300 {
		t.Errorf("capped page: %d stages, total %d", len(p.Stages), p.Total)
	}
	counts := map[string]int{}
	for _, lc := range []string{"draft", "active", "deprecated", "tombstone"} {
		p = page(t, call(t, "GET", big.URL()+"/stages?limit=200&lifecycle="+lc, nil, nil))
		counts[lc] = p.Total
		for _, raw := range p.Stages {
			st, err := store.DecodeStage(raw)
			if err != nil || st.Lifecycle.Kind.Name() != lc {
				t.Errorf("lifecycle=%s served a %v stage (%v)", lc, st.Lifecycle, err)
			}
		}
		if len(p.Stages) != min(p.Total, 200) {
			t.Errorf("lifecycle=%s: %d stages of %d", lc, len(p.Stages), p.Total)
		}
	}
	if counts["draft"]+counts["active"]+counts["deprecated"]+counts["tombstone"] != 300 || counts["draft"] == 0 || counts["tombstone"] == 0 {
		t.Errorf("per-lifecycle totals %v", counts)
	}

	for _, q := range []string{"lifecycle=Active", "lifecycle=all", "limit=0", "limit=-5", "limit=x", "offset=-1", "offset=1.5", "limit="} {
		r := call(t, "GET", u+"?"+q, nil, nil)
		if r.status != 400 || r.ok || r.code != "INVALID_PARAM" {
			t.Errorf("?%s: %d %s", q, r.status, r.code)
		}
	}
}

func TestInsertionOrderAndMutators(t *testing.T) {
	gen, err := GenerateStages(5, 3, 100)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Options{Stages: gen[:3]})
	s.AddRaw(gen[3])
	s.AddRaw(json.RawMessage(`{"id":"not-a-stage","lifecycle":"Active"}`))
	s.AddRaw(json.RawMessage(`42`))
	st0, _ := store.DecodeStage(gen[0])
	if !s.Remove(st0.ID) || s.Remove(st0.ID) {
		t.Error("Remove did not report presence correctly")
	}
	p := page(t, call(t, "GET", s.URL()+"/stages", nil, nil))
	want := []string{string(gen[1]), string(gen[2]), string(gen[3]), `{"id":"not-a-stage","lifecycle":"Active"}`, `42`}
	if len(p.Stages) != len(want) || p.Total != len(want) {
		t.Fatalf("listing has %d stages, total %d; want %d", len(p.Stages), p.Total, len(want))
	}
	for i := range want {
		if string(p.Stages[i]) != want[i] {
			t.Errorf("position %d = %.60s…, want %.60s…", i, p.Stages[i], want[i])
		}
	}
	if p := page(t, call(t, "GET", s.URL()+"/stages?lifecycle=active&limit=200", nil, nil)); p.Total < 2 {
		t.Errorf("loose lifecycle of undecodable bytes not counted: total %d", p.Total)
	}
	// AddRaw with a held id replaces in place.
	st2, _ := store.DecodeStage(gen[2])
	tampered := bytes.Replace(gen[2], []byte(`"description":"`), []byte(`"description":"EVIL `), 1)
	s.AddRaw(tampered)
	if got, _ := s.Stage(st2.ID); !bytes.Equal(got, tampered) {
		t.Error("AddRaw did not replace the held stage")
	}
	if snap := s.Snapshot(); len(snap) != 5 || !bytes.Equal(snap[1], tampered) {
		t.Error("replacement moved the stage")
	}
	// SetLifecycle rewrites only the lifecycle.
	st1, _ := store.DecodeStage(gen[1])
	if err := s.SetLifecycle(st1.ID, store.Tombstone); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Stage(st1.ID)
	if want := bytes.Replace(gen[1], []byte(`"lifecycle":"`+lcWire(st1.Lifecycle)+`"`), []byte(`"lifecycle":"Tombstone"`), 1); !bytes.Equal(got, want) {
		t.Errorf("SetLifecycle bytes:\n%s\nwant\n%s", got, want)
	}
	if err := s.SetLifecycle(st0.ID, store.Active); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetLifecycle on a removed stage: %v", err)
	}
	if s.Len() != 5 {
		t.Errorf("Len = %d", s.Len())
	}
}

func lcWire(l store.Lifecycle) string {
	b, _ := l.WireJSON()
	return strings.Trim(string(b), `"`)
}

func TestGetStageEndpoint(t *testing.T) {
	fixture := stdlib(t)
	s := newServer(t, Options{Stages: fixture})
	st, _ := store.DecodeStage(fixture[7])
	r := call(t, "GET", s.URL()+"/stages/"+string(st.ID), nil, nil)
	if r.status != 200 || !r.ok || !bytes.Equal(r.result, fixture[7]) {
		t.Errorf("GET stage: %d, result %.80s", r.status, r.result)
	}
	for _, id := range []string{strings.Repeat("0", 64), "abc", string(st.ID)[:10]} {
		r := call(t, "GET", s.URL()+"/stages/"+id, nil, nil)
		if r.status != 404 || r.ok || r.code != "NOT_FOUND" {
			t.Errorf("GET %s: %d %s", id, r.status, r.code)
		}
	}
}

// genKey is a test signing key.
func genKey() ed25519.PrivateKey { return GeneratedKey(99) }

func build(t *testing.T, name, desc string, lc store.Lifecycle, code string) *store.Stage {
	t.Helper()
	s, err := store.BuildStage(store.StageSpec{
		Name: name, Description: desc,
		Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Number"}`),
		Effects:            []store.Effect{{Kind: store.EffectPure}},
		ImplementationCode: code, ImplementationLanguage: "python",
		Examples:  []store.Example{{Input: json.RawMessage(`"a"`), Output: json.RawMessage(`1`)}},
		Lifecycle: lc,
	}, genKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutStageEndpoint(t *testing.T) {
	s := newServer(t, Options{Stages: stdlib(t), APIKey: "k"})
	auth := map[string]string{"X-API-Key": "k"}
	u := s.URL() + "/stages"

	v1 := build(t, "my_len", "length", store.Active, "def execute(x): return len(x)")
	r := call(t, "POST", u, v1.Raw, auth)
	if r.status != 200 || !r.ok || string(r.result) != `{"id":"`+string(v1.ID)+`","is_new":true}` {
		t.Fatalf("new stage: %d %s %s", r.status, r.result, r.msg)
	}
	if got, ok := s.Stage(v1.ID); !ok || !bytes.Equal(got, v1.Raw) {
		t.Error("stored bytes differ from the submitted ones")
	}
	if r = call(t, "POST", u, v1.Raw, auth); !r.ok || string(r.result) != `{"id":"`+string(v1.ID)+`","is_new":false}` {
		t.Errorf("existing stage: %s", r.result)
	}
	if r = call(t, "POST", u, v1.Raw, nil); r.status != 401 || r.code != "UNAUTHORIZED" {
		t.Errorf("no key: %d %s", r.status, r.code)
	}

	// A second Active version of the same interface deprecates the first.
	v2 := build(t, "my_len", "length, faster", store.Active, "def execute(x): return x.__len__()")
	if v2.SignatureID != v1.SignatureID {
		t.Fatal("test stages should share a signature")
	}
	if r = call(t, "POST", u, v2.Raw, auth); !r.ok {
		t.Fatalf("v2: %s", r.msg)
	}
	got, _ := s.Stage(v1.ID)
	old, _ := store.DecodeStage(got)
	if old.Lifecycle != store.Deprecated(v2.ID) {
		t.Errorf("v1 lifecycle = %v, want deprecated to v2", old.Lifecycle)
	}
	// A Draft of the same interface does not.
	v3 := build(t, "my_len", "length, draft", store.Draft, "def execute(x): return 0")
	if r = call(t, "POST", u, v3.Raw, auth); !r.ok {
		t.Fatal(r.msg)
	}
	if got, _ := s.Stage(v2.ID); !bytes.Equal(got, v2.Raw) {
		t.Error("a Draft insert changed the Active stage")
	}

	other := build(t, "other", "x", store.Active, "pass")
	badID := bytes.Replace(v1.Raw, []byte(v1.ID), []byte(other.ID), 1)
	unsignedEmpty, err := store.BuildStage(store.StageSpec{Name: "e", Description: "  ", Input: json.RawMessage(`{"kind":"Any"}`), Output: json.RawMessage(`{"kind":"Any"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := v1.Ed25519Signature
	flipped := sig[:10] + map[bool]string{true: "0", false: "1"}[sig[10] != '0'] + sig[11:]
	badSig := bytes.Replace(v1.Raw, []byte(sig), []byte(flipped), 1)
	halfSigned := bytes.Replace(v1.Raw, []byte(`"`+sig+`"`), []byte(`null`), 1)
	tests := []struct {
		name   string
		body   []byte
		status int
		code   string
		msg    string
	}{
		{"id mismatch", badID, 400, "VALIDATION_FAILED", fmt.Sprintf("content hash mismatch: stage.id=%s computed=%s", other.ID, v1.ID)},
		{"bad signature", badSig, 400, "VALIDATION_FAILED", "Ed25519 signature verification failed"},
		{"half signed", halfSigned, 400, "VALIDATION_FAILED", "exactly one of ed25519_signature / signer_public_key"},
		{"empty description", unsignedEmpty.Raw, 400, "VALIDATION_FAILED", `validation failed: ["stage description must not be empty"]`},
		{"not json", []byte(`{"id":`), 400, "PARSE_ERROR", "invalid stage JSON"},
		{"missing fields", []byte(`{"id":"x"}`), 400, "PARSE_ERROR", "missing required field"},
	}
	for _, tt := range tests {
		r := call(t, "POST", u, tt.body, auth)
		if r.status != tt.status || r.ok || r.code != tt.code || !strings.Contains(r.msg, tt.msg) {
			t.Errorf("%s: %d %s %q, want %d %s containing %q", tt.name, r.status, r.code, r.msg, tt.status, tt.code, tt.msg)
		}
	}
	if s.Len() != 85+3 {
		t.Errorf("rejected stages were stored: %d stages", s.Len())
	}
}

func TestPatchAndDeleteEndpoints(t *testing.T) {
	s := newServer(t, Options{})
	mem := store.NewMemoryStore()
	ctx := context.Background()
	a1 := build(t, "a", "a1", store.Draft, "1")
	a2 := build(t, "a", "a2", store.Active, "2")
	b := build(t, "b", "b", store.Active, "3")
	for _, st := range []*store.Stage{a1, a2, b} {
		if r := call(t, "POST", s.URL()+"/stages", st.Raw, nil); !r.ok {
			t.Fatal(r.msg)
		}
		if _, err := mem.Put(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	patch := func(id store.StageID, body string) reply {
		return call(t, "PATCH", s.URL()+"/stages/"+string(id)+"/lifecycle", []byte(body), nil)
	}
	missing := store.StageID(strings.Repeat("e", 64))
	steps := []struct {
		id     store.StageID
		l      store.Lifecycle
		status int
		code   string
		memErr error
	}{
		{a1.ID, store.Active, 200, "", nil},                                          // draft → active; a2 auto-deprecated to a1
		{a1.ID, store.Active, 409, "INVALID_TRANSITION", store.ErrInvalidTransition}, // active → active
		{a2.ID, store.Active, 409, "INVALID_TRANSITION", store.ErrInvalidTransition}, // deprecated → *
		{b.ID, store.Deprecated(missing), 400, "INVALID_SUCCESSOR", store.ErrInvalidSuccessor},
		{missing, store.Tombstone, 404, "NOT_FOUND", store.ErrNotFound},
		{b.ID, store.Deprecated(a1.ID), 200, "", nil},
		{a1.ID, store.Tombstone, 200, "", nil},
		{a1.ID, store.Draft, 409, "INVALID_TRANSITION", store.ErrInvalidTransition},
	}
	for i, st := range steps {
		body := `{"lifecycle":"` + st.l.Kind.Name() + `"}`
		if st.l.Kind == store.LifecycleDeprecated {
			body = `{"lifecycle":"deprecated","successor_id":"` + string(st.l.Successor) + `"}`
		}
		r := patch(st.id, body)
		if r.status != st.status || r.code != st.code || r.ok != (st.status == 200) {
			t.Errorf("step %d: %d %s %q, want %d %s", i, r.status, r.code, r.msg, st.status, st.code)
		}
		if err := mem.UpdateLifecycle(ctx, st.id, st.l); !errors.Is(err, st.memErr) || (st.memErr == nil) != (err == nil) {
			t.Errorf("step %d: MemoryStore says %v, want %v", i, err, st.memErr)
		}
	}
	if r := patch(a1.ID, `{"lifecycle":"deprecated","successor_id":"`+string(a1.ID)+`"}`); r.status != 409 {
		t.Errorf("tombstone → deprecated: %d", r.status)
	}
	// The fake and MemoryStore agree on every lifecycle, and the fake
	// changed only lifecycle bytes.
	for _, st := range []*store.Stage{a1, a2, b} {
		raw, _ := s.Stage(st.ID)
		got, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := mem.Get(ctx, st.ID)
		if got.Lifecycle != want.Lifecycle || !bytes.Equal(raw, want.Raw) {
			t.Errorf("%s: fake %v, MemoryStore %v", st.Name, got.Lifecycle, want.Lifecycle)
		}
	}
	for _, body := range []string{`nope`, `{}`, `{"lifecycle":"Active"}`, `{"lifecycle":"deprecated"}`} {
		r := patch(b.ID, body)
		if r.status != 400 || r.ok {
			t.Errorf("PATCH %s: %d %s", body, r.status, r.code)
		}
	}

	del := func(id store.StageID) reply { return call(t, "DELETE", s.URL()+"/stages/"+string(id), nil, nil) }
	if r := del(b.ID); r.status != 200 || !r.ok {
		t.Errorf("DELETE: %d %s", r.status, r.msg)
	}
	if r := del(b.ID); r.status != 404 || r.code != "NOT_FOUND" {
		t.Errorf("DELETE again: %d %s", r.status, r.code)
	}
	if _, ok := s.Stage(b.ID); ok {
		t.Error("deleted stage still served")
	}
}

func TestHealthEndpoint(t *testing.T) {
	fixture := stdlib(t)
	s := newServer(t, Options{Stages: fixture, Generate: 40, StageSize: 100})
	mem := store.NewMemoryStore()
	ctx := context.Background()
	for _, raw := range s.Snapshot() {
		st, err := store.DecodeStage(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mem.Upsert(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	want, _ := mem.Stats(ctx)
	r := call(t, "GET", s.URL()+"/health", nil, nil)
	var h struct {
		Status string      `json:"status"`
		Store  store.Stats `json:"store"`
	}
	if err := json.Unmarshal(r.result, &h); err != nil || h.Status != "ok" {
		t.Fatalf("health: %s (%v)", r.result, err)
	}
	if h.Store.Total != 125 || fmt.Sprint(h.Store.ByLifecycle) != fmt.Sprint(want.ByLifecycle) || fmt.Sprint(h.Store.ByEffect) != fmt.Sprint(want.ByEffect) {
		t.Errorf("health stats %+v, MemoryStore %+v", h.Store, want)
	}
	empty := newServer(t, Options{})
	if r := call(t, "GET", empty.URL()+"/health", nil, nil); string(r.result) != `{"status":"ok","store":{"total_stages":0,"by_lifecycle":{},"by_effect":{}}}` {
		t.Errorf("empty health: %s", r.result)
	}
}

func TestAuth(t *testing.T) {
	fixture := stdlib(t)
	key := map[string]string{"X-API-Key": "secret"}
	wrong := map[string]string{"X-API-Key": "nope"}
	open := newServer(t, Options{Stages: fixture, APIKey: "secret", DraftsNeedAuth: true})
	closed := newServer(t, Options{Stages: fixture, APIKey: "secret", ReadAuth: true})
	tests := []struct {
		s      *Server
		method string
		path   string
		hdr    map[string]string
		status int
	}{
		{open, "GET", "/stages", nil, 200},
		{open, "GET", "/health", nil, 200},
		{open, "GET", "/stages?lifecycle=draft", nil, 401},
		{open, "GET", "/stages?lifecycle=draft", wrong, 401},
		{open, "GET", "/stages?lifecycle=draft", key, 200},
		{open, "DELETE", "/stages/" + strings.Repeat("0", 64), nil, 401},
		{open, "DELETE", "/stages/" + strings.Repeat("0", 64), wrong, 401},
		{open, "DELETE", "/stages/" + strings.Repeat("0", 64), key, 404},
		{closed, "GET", "/stages", nil, 401},
		{closed, "GET", "/health", wrong, 401},
		{closed, "GET", "/health", key, 200},
	}
	for _, tt := range tests {
		r := call(t, tt.method, tt.s.URL()+tt.path, nil, tt.hdr)
		if r.status != tt.status {
			t.Errorf("%s %s %v: %d, want %d", tt.method, tt.path, tt.hdr, r.status, tt.status)
		}
		if tt.status == 401 && r.code != "UNAUTHORIZED" {
			t.Errorf("401 code %q", r.code)
		}
	}
	if got := open.LastHeaders().Get("X-API-Key"); got != "secret" {
		t.Errorf("LastHeaders X-API-Key = %q", got)
	}
	nokey := newServer(t, Options{Stages: fixture, DraftsNeedAuth: true})
	if r := call(t, "GET", nokey.URL()+"/stages?lifecycle=draft", nil, key); r.status != 401 {
		t.Errorf("drafts without a configured key: %d", r.status)
	}
}

func TestRoutingAlwaysJSON(t *testing.T) {
	s := newServer(t, Options{})
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 404},
		{"GET", "/nope", 404},
		{"PUT", "/stages", 405},
		{"POST", "/health", 405},
		{"GET", "/stages/" + strings.Repeat("a", 64) + "/lifecycle", 405},
		{"GET", "/stages/a/b/c", 404},
		{"GET", "/stages/", 200},
	} {
		r := call(t, c.method, s.URL()+c.path, nil, nil)
		if r.status != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, r.status, c.status)
		}
	}
}

func TestDuplicateInitialStages(t *testing.T) {
	fixture := stdlib(t)
	if _, err := NewHandler(Options{Stages: append(fixture[:3:3], fixture[1])}); err == nil || !strings.Contains(err.Error(), "already held") {
		t.Errorf("duplicate initial stage: %v", err)
	}
}

func rawGet(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestFaultSwitches(t *testing.T) {
	s := newServer(t, Options{Stages: stdlib(t)})
	u := s.URL() + "/health"

	s.FailNext(2, 503)
	for i := range 2 {
		if r := call(t, "GET", u, nil, nil); r.status != 503 || r.ok || r.code != "STORE_ERROR" {
			t.Errorf("FailNext #%d: %d %s", i, r.status, r.code)
		}
	}
	if r := call(t, "GET", u, nil, nil); r.status != 200 {
		t.Errorf("after FailNext: %d", r.status)
	}
	s.FailNext(1, 404) // not a 5xx: becomes 500
	if r := call(t, "GET", u, nil, nil); r.status != 500 {
		t.Errorf("FailNext(404): %d", r.status)
	}

	s.RateLimitNext(1, 1500*time.Millisecond)
	if r := call(t, "GET", u, nil, nil); r.status != 429 || r.code != "RATE_LIMITED" || r.header.Get("Retry-After") != "2" {
		t.Errorf("RateLimitNext: %d %s Retry-After %q", r.status, r.code, r.header.Get("Retry-After"))
	}

	s.HTMLNext(1)
	resp, body, err := rawGet(t, u)
	if err != nil || resp.StatusCode != 502 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !bytes.Contains(body, []byte("<title>502 Bad Gateway</title>")) {
		t.Errorf("HTMLNext: %v %v %q", err, resp, body)
	}

	s.TruncateNext(1)
	resp, body, err = rawGet(t, s.URL()+"/stages")
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("TruncateNext: err = %v", err)
	}
	if resp == nil || resp.StatusCode != 200 || resp.ContentLength <= int64(len(body)) || len(body) == 0 || json.Valid(body) {
		t.Errorf("TruncateNext: %d of %d bytes, valid JSON %v", len(body), resp.ContentLength, json.Valid(body))
	}
	if r := call(t, "GET", s.URL()+"/stages", nil, nil); r.status != 200 {
		t.Errorf("after truncation: %d", r.status)
	}

	// Hang: the request blocks until the client gives up.
	s.HangNext(1)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	start := time.Now()
	if _, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("HangNext: err = %v", err)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("HangNext returned after %v", d)
	}

	// Counted faults apply in order and clear with n ≤ 0.
	s.FailNext(5, 500)
	s.FailNext(0, 500)
	s.HTMLNext(3)
	s.HTMLNext(-1)
	if r := call(t, "GET", u, nil, nil); r.status != 200 {
		t.Errorf("cleared faults still fire: %d", r.status)
	}
}

func TestLatency(t *testing.T) {
	s := newServer(t, Options{Stages: stdlib(t)})
	s.SetLatency(30 * time.Millisecond)
	s.SlowPages(50 * time.Millisecond)
	timed := func(path string) time.Duration {
		start := time.Now()
		call(t, "GET", s.URL()+path, nil, nil)
		return time.Since(start)
	}
	if d := timed("/health"); d < 30*time.Millisecond {
		t.Errorf("health took %v with 30ms latency", d)
	}
	if d := timed("/stages"); d < 80*time.Millisecond {
		t.Errorf("page took %v with 30+50ms latency", d)
	}
	s.SetLatency(0)
	s.SlowPages(0)
	s.SetLatency(time.Hour)
	// A long delay ends when the client gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/health", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Error("request with an hour of latency succeeded")
	}
	s.SetLatency(0)
}

func TestCloseReleasesHangs(t *testing.T) {
	s, err := NewServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.HangNext(3)
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			resp, err := http.Get(s.URL() + "/health")
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		}()
	}
	for s.Requests() < 3 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on hanging requests")
	}
	for range 3 {
		<-errs
	}
}

func TestOnPageAndCounters(t *testing.T) {
	fixture := stdlib(t)
	s := newServer(t, Options{Stages: fixture})
	var calls atomic.Int32
	s.OnPage(func(lifecycle string, offset int) {
		calls.Add(1)
		if offset == 0 && lifecycle == "active" {
			// Drift: delete the first stage between pages 1 and 2.
			st, _ := store.DecodeStage(fixture[0])
			s.Remove(st.ID)
		}
	})
	p1 := page(t, call(t, "GET", s.URL()+"/stages?lifecycle=active&limit=50&offset=0", nil, nil))
	p2 := page(t, call(t, "GET", s.URL()+"/stages?lifecycle=active&limit=50&offset=50", nil, nil))
	if p1.Total != 85 || len(p1.Stages) != 50 || !bytes.Equal(p1.Stages[0], fixture[0]) {
		t.Errorf("page 1 saw the drift: total %d", p1.Total)
	}
	if p2.Total != 84 || len(p2.Stages) != 34 || !bytes.Equal(p2.Stages[0], fixture[51]) {
		t.Errorf("page 2: total %d, %d stages; want 84, 34 starting at fixture[51] (fixture[50] skipped)", p2.Total, len(p2.Stages))
	}
	call(t, "GET", s.URL()+"/health", nil, map[string]string{"User-Agent": "probe/1"})
	if calls.Load() != 2 || s.PageRequests() != 2 || s.Requests() != 3 {
		t.Errorf("hook calls %d, page requests %d, requests %d", calls.Load(), s.PageRequests(), s.Requests())
	}
	if ua := s.LastHeaders().Get("User-Agent"); ua != "probe/1" {
		t.Errorf("LastHeaders User-Agent = %q", ua)
	}
	s.OnPage(nil)
	call(t, "GET", s.URL()+"/stages", nil, nil)
	if calls.Load() != 2 {
		t.Error("hook still called after OnPage(nil)")
	}
}

// TestEchoKeyNext: each status gets its kind of echo, every one of them
// carries the presented key in headers and body (raw and escaped), and
// the switch runs out after n requests.
func TestEchoKeyNext(t *testing.T) {
	const key = "sk-echo/1 x&y"
	s := newServer(t, Options{Stages: stdlib(t)})
	q, p := url.QueryEscape(key), url.PathEscape(key)
	noFollow := &http.Client{Transport: &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer noFollow.CloseIdleConnections()
	for _, tt := range []struct {
		status, want int
		// json: the body is an error envelope; location: the redirect.
		json     bool
		location string
	}{
		{status: 401, want: 401, json: true},
		{status: 403, want: 403, json: true},
		{status: 429, want: 429, json: true},
		{status: 503, want: 503, json: true},
		{status: 302, want: 302, location: "http://login.invalid/sso?key=" + q + "&next=" + p},
		{status: 200, want: 200},
		{status: 999, want: 401, json: true},
	} {
		s.EchoKeyNext(1, tt.status)
		req, _ := http.NewRequest("GET", s.URL()+"/stages", nil)
		req.Header.Set("X-API-Key", key)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatalf("status %d: %v", tt.status, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("EchoKeyNext(1, %d): status %d, want %d", tt.status, resp.StatusCode, tt.want)
		}
		for _, h := range []string{"WWW-Authenticate", "X-Debug"} {
			if !strings.Contains(resp.Header.Get(h), key) {
				t.Errorf("status %d: %s %q does not echo the key", tt.status, h, resp.Header.Get(h))
			}
		}
		if got := resp.Header.Get("Location"); got != tt.location {
			t.Errorf("status %d: Location %q, want %q", tt.status, got, tt.location)
		}
		text := string(body)
		if tt.json {
			var env struct {
				OK    bool
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &env); err != nil || env.OK || env.Error.Code == "" {
				t.Errorf("status %d: body %q is not an error envelope (%v)", tt.status, body, err)
			}
			text = env.Error.Message
		} else if tt.status == 200 && json.Valid(body) {
			t.Errorf("status 200: body %q should be malformed JSON", body)
		}
		for _, form := range []string{key, q, p, "Bearer " + key} {
			if tt.status == 200 {
				form = strings.ReplaceAll(form, "&", `\u0026`) // as encoding/json writes it
			}
			if !strings.Contains(text, form) {
				t.Errorf("status %d: body %q lacks %q", tt.status, text, form)
			}
		}
	}
	if r := call(t, "GET", s.URL()+"/health", nil, map[string]string{"X-API-Key": key}); r.status != 200 || bytes.Contains(r.body, []byte(key)) {
		t.Errorf("after the echo ran out: %d %q", r.status, r.body)
	}
	s.EchoKeyNext(5, 401)
	s.EchoKeyNext(0, 401)
	if r := call(t, "GET", s.URL()+"/health", nil, nil); r.status != 200 {
		t.Errorf("EchoKeyNext(0) did not clear it: %d", r.status)
	}
}
