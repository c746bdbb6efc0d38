// Package registrytest is an in-process fake noether registry that follows
// spec §4 (envelope, endpoints, error codes, validation on POST, lifecycle
// rules) and adds fault switches — 5xx, 429 with Retry-After, HTML 502,
// latency, hanging and truncated responses, answers that echo the API key
// back, injected raw stages, drift between pages — for testing the
// mirror's sync engine and client. Tests use NewServer (loopback
// httptest); cmd/fakeregistry serves NewHandler as a process.
package registrytest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// Listing limits (spec §4.3).
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Options configures a fake registry.
type Options struct {
	// Stages are the initial stages, kept byte for byte, in this order.
	// Bytes that do not decode are kept too (listed, never found by id
	// unless an "id" string can be read from them).
	Stages []json.RawMessage
	// Generate adds this many GenerateStages stages after Stages.
	Generate int
	// Seed seeds GenerateStages (signing key and names); 0 means 1.
	Seed int64
	// StageSize is the approximate size of a generated stage's
	// implementation_code; default 5000.
	StageSize int
	// APIKey, when set, is required as X-API-Key for POST, PATCH and
	// DELETE (401 UNAUTHORIZED otherwise).
	APIKey string
	// ReadAuth makes GET requests need the key too.
	ReadAuth bool
	// DraftsNeedAuth makes GET /stages?lifecycle=draft answer 401 without
	// the key (always, when APIKey is empty): a lifecycle the server
	// refuses to list anonymously.
	DraftsNeedAuth bool
	// Logger receives a debug line per request; nil discards.
	Logger *slog.Logger
}

// entry is one stored stage. st is nil when raw does not decode.
type entry struct {
	key string // the id, or "#n" for bytes without one
	raw []byte
	st  *store.Stage
}

// lifecycleKind returns the entry's lifecycle kind, read loosely when the
// stage does not decode.
func (e *entry) lifecycleKind() store.LifecycleKind {
	if e.st != nil {
		return e.st.Lifecycle.Kind
	}
	var v struct {
		Lifecycle json.RawMessage `json:"lifecycle"`
	}
	if json.Unmarshal(e.raw, &v) != nil {
		return store.LifecycleUnknown
	}
	var s string
	if json.Unmarshal(v.Lifecycle, &s) == nil {
		k, _ := store.ParseLifecycleKind(strings.ToLower(s))
		return k
	}
	var o map[string]json.RawMessage
	if json.Unmarshal(v.Lifecycle, &o) == nil {
		if _, ok := o["Deprecated"]; ok {
			return store.LifecycleDeprecated
		}
	}
	return store.LifecycleUnknown
}

// Handler is the fake registry as an http.Handler. It is safe for
// concurrent use; every fault switch and mutator may be called while
// requests are being served. Call Close to release hanging requests.
type Handler struct {
	log            *slog.Logger
	apiKey         string
	readAuth       bool
	draftsNeedAuth bool

	mu    sync.Mutex
	order []*entry // insertion order
	byKey map[string]*entry
	// byKind is order split by lifecycle kind, so that a page costs
	// O(limit) rather than a walk over every stage (20 ms at 100k, mostly
	// cache misses, which made the fake registry compete with the client
	// it serves for CPU); nil when stale. Every mutation clears it.
	byKind  map[store.LifecycleKind][]*entry
	nextRaw int
	faults  faults
	hookMu  sync.Mutex // serializes onPage calls
	onPage  func(lifecycle string, offset int)
	lastHdr http.Header

	requests     atomic.Int64
	pageRequests atomic.Int64
	done         chan struct{}
	closeOnce    sync.Once
}

// NewHandler builds a fake registry holding opts.Stages and
// opts.Generate generated stages. Two initial stages with the same id are
// an error.
func NewHandler(opts Options) (*Handler, error) {
	h := &Handler{
		log:            opts.Logger,
		apiKey:         opts.APIKey,
		readAuth:       opts.ReadAuth,
		draftsNeedAuth: opts.DraftsNeedAuth,
		byKey:          map[string]*entry{},
		done:           make(chan struct{}),
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	initial := opts.Stages
	if opts.Generate > 0 {
		seed := opts.Seed
		if seed == 0 {
			seed = 1
		}
		gen, err := GenerateStages(opts.Generate, seed, opts.StageSize)
		if err != nil {
			return nil, err
		}
		initial = append(append([]json.RawMessage(nil), initial...), gen...)
	}
	for i, raw := range initial {
		e := h.newEntry(raw)
		if _, dup := h.byKey[e.key]; dup {
			return nil, fmt.Errorf("fake registry: initial stage %d has id %s, already held by an earlier stage", i, e.key)
		}
		h.order = append(h.order, e)
		h.byKey[e.key] = e
	}
	return h, nil
}

// newEntry wraps a copy of raw. Callers hold mu or own h exclusively.
func (h *Handler) newEntry(raw []byte) *entry {
	raw = bytes.Clone(bytes.TrimSpace(raw))
	e := &entry{raw: raw}
	if st, err := store.DecodeStage(raw); err == nil {
		e.st = st
		e.key = string(st.ID)
		return e
	}
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(raw, &v) == nil && v.ID != "" {
		e.key = v.ID
		return e
	}
	h.nextRaw++
	e.key = "#" + strconv.Itoa(h.nextRaw)
	return e
}

// Close releases every request held by HangNext or a latency wait. The
// handler keeps answering afterwards, without delays or hangs.
func (h *Handler) Close() { h.closeOnce.Do(func() { close(h.done) }) }

// Requests returns the number of requests received so far.
func (h *Handler) Requests() int64 { return h.requests.Load() }

// PageRequests returns the number of GET /stages requests received.
func (h *Handler) PageRequests() int64 { return h.pageRequests.Load() }

// LastHeaders returns a copy of the most recent request's headers.
func (h *Handler) LastHeaders() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastHdr.Clone()
}

// Len returns the number of stages held.
func (h *Handler) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// Stage returns the current bytes of the stage with id, or false.
func (h *Handler) Stage(id store.StageID) (json.RawMessage, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.byKey[string(id)]
	if !ok {
		return nil, false
	}
	return bytes.Clone(e.raw), true
}

// Snapshot returns every stage's bytes in listing order.
func (h *Handler) Snapshot() []json.RawMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]json.RawMessage, len(h.order))
	for i, e := range h.order {
		out[i] = bytes.Clone(e.raw)
	}
	return out
}

// AddRaw stores raw exactly as given, bypassing validation and the
// Active-per-signature invariant (like noether's inject_raw_for_testing):
// a bad hash, a bad signature, unknown fields, a newer effect, even
// invalid JSON (which then breaks every page it appears on). A stage with
// an id already held replaces it in place; otherwise it is appended.
func (h *Handler) AddRaw(raw json.RawMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.newEntry(raw)
	h.byKind = nil
	if old, ok := h.byKey[e.key]; ok {
		*old = *e
		return
	}
	h.order = append(h.order, e)
	h.byKey[e.key] = e
}

// Remove deletes the stage with id and reports whether it was there.
func (h *Handler) Remove(id store.StageID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.removeLocked(string(id))
}

func (h *Handler) removeLocked(key string) bool {
	e, ok := h.byKey[key]
	if !ok {
		return false
	}
	delete(h.byKey, key)
	h.byKind = nil
	for i, o := range h.order {
		if o == e {
			h.order = append(h.order[:i:i], h.order[i+1:]...)
			break
		}
	}
	return true
}

// SetLifecycle rewrites a stage's lifecycle bytes directly, with no
// transition check and no invariant (an out-of-band server change).
func (h *Handler) SetLifecycle(id store.StageID, l store.Lifecycle) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.byKey[string(id)]
	if !ok {
		return store.NotFoundError(id)
	}
	if e.st == nil {
		return fmt.Errorf("fake registry: stage %s does not decode; its lifecycle cannot be rewritten", id)
	}
	st, err := e.st.WithLifecycle(l)
	if err != nil {
		return err
	}
	e.st, e.raw = st, st.Raw
	h.byKind = nil
	return nil
}

// OnPage sets a hook called for every GET /stages page, after the page's
// stages were chosen and before the response is written, so whatever the
// hook changes is visible to the client's next request but not to this
// page. The hook runs without the handler's lock and may call any method.
// nil removes it.
func (h *Handler) OnPage(f func(lifecycle string, offset int)) {
	h.mu.Lock()
	h.onPage = f
	h.mu.Unlock()
}

// ServeHTTP routes a request. Every answer is a JSON envelope unless a
// fault switch says otherwise.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	isPage := r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/stages"
	if isPage {
		h.pageRequests.Add(1)
	}
	h.mu.Lock()
	h.lastHdr = r.Header.Clone()
	f := h.faults.take(isPage)
	h.mu.Unlock()
	h.log.LogAttrs(r.Context(), slog.LevelDebug, "fake registry request",
		slog.String("method", r.Method), slog.String("url", r.URL.String()))

	if !h.wait(r.Context(), f.delay) {
		return
	}
	switch {
	case f.hang:
		select {
		case <-r.Context().Done():
		case <-h.done:
		}
		return
	case f.failStatus != 0:
		writeError(w, f.failStatus, "STORE_ERROR", "injected failure")
		return
	case f.rateLimit:
		w.Header().Set("Retry-After", retryAfterValue(f.retryAfter))
		writeError(w, http.StatusTooManyRequests, "RATE_LIMITED", "too many requests")
		return
	case f.html:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, badGatewayHTML)
		return
	case f.echoStatus != 0:
		echoKey(w, r, f.echoStatus)
		return
	}
	if f.truncate {
		tw := &bufferedWriter{header: http.Header{}}
		h.route(tw, r)
		tw.truncateTo(w)
		return
	}
	h.route(w, r)
}

const badGatewayHTML = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"

// retryAfterValue renders d as whole seconds, rounding up.
func retryAfterValue(d time.Duration) string {
	s := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(max(s, 0)), 10)
}

// wait sleeps d unless the request or the handler ends first; it reports
// whether to go on.
func (h *Handler) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-h.done:
		return true
	case <-ctx.Done():
		return false
	}
}

func (h *Handler) route(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path != "/" {
		path = strings.TrimSuffix(path, "/")
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if (write || h.readAuth) && !h.authorized(r) {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid or missing X-API-Key")
		return
	}
	switch {
	case path == "/health":
		h.onlyMethods(w, r, map[string]http.HandlerFunc{http.MethodGet: h.health})
	case path == "/stages":
		h.onlyMethods(w, r, map[string]http.HandlerFunc{http.MethodGet: h.list, http.MethodPost: h.put})
	case strings.HasPrefix(path, "/stages/") && strings.HasSuffix(path, "/lifecycle") && strings.Count(path, "/") == 3:
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/stages/"), "/lifecycle")
		h.onlyMethods(w, r, map[string]http.HandlerFunc{http.MethodPatch: func(w http.ResponseWriter, r *http.Request) { h.patch(w, r, id) }})
	case strings.HasPrefix(path, "/stages/") && strings.Count(path, "/") == 2:
		id := strings.TrimPrefix(path, "/stages/")
		h.onlyMethods(w, r, map[string]http.HandlerFunc{
			http.MethodGet:    func(w http.ResponseWriter, r *http.Request) { h.get(w, id) },
			http.MethodDelete: func(w http.ResponseWriter, r *http.Request) { h.delete(w, id) },
		})
	default:
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (h *Handler) onlyMethods(w http.ResponseWriter, r *http.Request, m map[string]http.HandlerFunc) {
	if f, ok := m[r.Method]; ok {
		f(w, r)
		return
	}
	writeError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", r.Method+" is not allowed on "+r.URL.Path)
}

func (h *Handler) authorized(r *http.Request) bool {
	if h.apiKey == "" {
		return true
	}
	got := r.Header.Get("X-API-Key")
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.apiKey)) == 1
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lifecycle := q.Get("lifecycle")
	var kind store.LifecycleKind
	if lifecycle != "" {
		k, err := store.ParseLifecycleKind(lifecycle)
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_PARAM", "lifecycle: "+err.Error())
			return
		}
		kind = k
	}
	limit, ok := intParam(w, q, "limit", DefaultLimit, 1)
	if !ok {
		return
	}
	limit = min(limit, MaxLimit)
	offset, ok := intParam(w, q, "offset", 0, 0)
	if !ok {
		return
	}
	if kind == store.LifecycleDraft && h.draftsNeedAuth && (h.apiKey == "" || !h.authorized(r)) {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "listing draft stages needs a valid X-API-Key")
		return
	}

	h.mu.Lock()
	listed := h.order
	if kind != store.LifecycleUnknown {
		if h.byKind == nil {
			h.byKind = map[store.LifecycleKind][]*entry{}
			for _, e := range h.order {
				k := e.lifecycleKind()
				h.byKind[k] = append(h.byKind[k], e)
			}
		}
		listed = h.byKind[kind]
	}
	total := len(listed)
	var page [][]byte
	for _, e := range listed[min(offset, total):min(offset+limit, total)] {
		page = append(page, e.raw) // entries' bytes are never modified in place
	}
	hook := h.onPage
	h.mu.Unlock()
	if hook != nil {
		// Clients may request pages in parallel; hooks run one at a time
		// so that test code needs no locking of its own.
		h.hookMu.Lock()
		hook(lifecycle, offset)
		h.hookMu.Unlock()
	}

	var b bytes.Buffer
	b.WriteString(`{"ok":true,"result":{"stages":[`)
	for i, raw := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(raw)
	}
	fmt.Fprintf(&b, `],"total":%d}}`, total)
	writeBody(w, http.StatusOK, b.Bytes())
}

// intParam parses a non-negative integer query parameter ≥ least.
func intParam(w http.ResponseWriter, q map[string][]string, name string, def, least int) (int, bool) {
	vals, present := q[name]
	if !present {
		return def, true
	}
	v := ""
	if len(vals) > 0 {
		v = vals[0]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		writeError(w, http.StatusBadRequest, "INVALID_PARAM", fmt.Sprintf("%s: %q is not an integer ≥ %d", name, v, least))
		return 0, false
	}
	return n, true
}

func (h *Handler) get(w http.ResponseWriter, id string) {
	h.mu.Lock()
	e, ok := h.byKey[id]
	var raw []byte
	if ok && store.ValidID(id) {
		raw = e.raw
	}
	h.mu.Unlock()
	if raw == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("stage %s not found", id))
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"ok":true,"result":`)
	b.Write(raw)
	b.WriteString(`}`)
	writeBody(w, http.StatusOK, b.Bytes())
}

func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	h.mu.Lock()
	st := store.Stats{ByLifecycle: map[string]int{}, ByEffect: map[string]int{}}
	for _, e := range h.order {
		if e.st != nil {
			st.Add(e.st)
			continue
		}
		st.Total++
		if k := e.lifecycleKind(); k != store.LifecycleUnknown {
			st.ByLifecycle[k.Name()]++
		}
	}
	h.mu.Unlock()
	writeResult(w, http.StatusOK, map[string]any{"status": "ok", "store": st})
}

func (h *Handler) delete(w http.ResponseWriter, id string) {
	h.mu.Lock()
	ok := store.ValidID(id) && h.removeLocked(id)
	h.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("stage %s not found", id))
		return
	}
	writeResult(w, http.StatusOK, map[string]any{"id": id, "removed": true})
}

// put validates a stage like the real registry (spec §4.3) and stores it.
func (h *Handler) put(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, store.MaxStageBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "PARSE_ERROR", "cannot read the request body: "+err.Error())
		return
	}
	if len(body) > store.MaxStageBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", fmt.Sprintf("stage is over %d bytes", store.MaxStageBytes))
		return
	}
	st, err := store.DecodeStage(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "PARSE_ERROR", "invalid stage JSON: "+err.Error())
		return
	}
	var problems []string
	if computed, _, err := store.ComputeIDs(st.Name, st.Signature); err != nil {
		problems = append(problems, "cannot compute the stage id: "+err.Error())
	} else if computed != st.ID {
		problems = append(problems, fmt.Sprintf("content hash mismatch: stage.id=%s computed=%s", st.ID, computed))
	}
	if c := store.Verify(st).Check(store.CheckEd25519); c.Status == store.CheckFail {
		if st.Ed25519Signature == "" || st.SignerPublicKey == "" {
			problems = append(problems, "malformed: exactly one of ed25519_signature / signer_public_key is set")
		} else {
			problems = append(problems, "Ed25519 signature verification failed — stage may have been tampered with")
		}
	}
	if strings.TrimSpace(st.Description) == "" {
		problems = append(problems, "stage description must not be empty")
	}
	if len(problems) > 0 {
		quoted := make([]string, len(problems))
		for i, p := range problems {
			quoted[i] = strconv.Quote(p)
		}
		writeError(w, http.StatusBadRequest, "VALIDATION_FAILED", "validation failed: ["+strings.Join(quoted, ", ")+"]")
		return
	}

	h.mu.Lock()
	_, exists := h.byKey[string(st.ID)]
	if !exists {
		e := &entry{key: string(st.ID), raw: st.Raw, st: st}
		h.order = append(h.order, e)
		h.byKey[e.key] = e
		h.byKind = nil
		if st.Lifecycle.Kind == store.LifecycleActive {
			h.enforceInvariantLocked(st)
		}
	}
	h.mu.Unlock()
	writeResult(w, http.StatusOK, map[string]any{"id": st.ID, "is_new": !exists})
}

// enforceInvariantLocked deprecates every other Active stage sharing
// winner's signature_id, pointing them at winner (spec §3.3).
func (h *Handler) enforceInvariantLocked(winner *store.Stage) {
	if winner.SignatureID == "" {
		return
	}
	for _, e := range h.order {
		if e.st == nil || e.st.ID == winner.ID || e.st.SignatureID != winner.SignatureID || e.st.Lifecycle.Kind != store.LifecycleActive {
			continue
		}
		st, err := e.st.WithLifecycle(store.Deprecated(winner.ID))
		if err != nil {
			h.log.Error("fake registry: cannot auto-deprecate", "id", e.key, "error", err)
			continue
		}
		e.st, e.raw = st, st.Raw
		h.byKind = nil
		h.log.Warn("auto-deprecated Active stage: another Active stage shares its signature_id",
			"deprecated", e.key, "successor", winner.ID)
	}
}

// patch applies PATCH /stages/{id}/lifecycle with MemoryStore's checks in
// MemoryStore's order: existence, transition, successor.
func (h *Handler) patch(w http.ResponseWriter, r *http.Request, id string) {
	var req struct {
		Lifecycle   *string `json:"lifecycle"`
		SuccessorID *string `json:"successor_id"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil || json.Unmarshal(body, &req) != nil {
		writeError(w, http.StatusBadRequest, "PARSE_ERROR", `body must be {"lifecycle": "...", "successor_id": "..."}`)
		return
	}
	if req.Lifecycle == nil {
		writeError(w, http.StatusBadRequest, "MISSING_PARAM", `missing "lifecycle"`)
		return
	}
	kind, err := store.ParseLifecycleKind(*req.Lifecycle)
	if err != nil {
		writeError(w, http.StatusBadRequest, "INVALID_PARAM", err.Error())
		return
	}
	to := store.Lifecycle{Kind: kind}
	if kind == store.LifecycleDeprecated {
		if req.SuccessorID == nil || *req.SuccessorID == "" {
			writeError(w, http.StatusBadRequest, "MISSING_PARAM", `"deprecated" needs "successor_id"`)
			return
		}
		to.Successor = store.StageID(*req.SuccessorID)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.byKey[id]
	if !ok || !store.ValidID(id) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", store.NotFoundError(store.StageID(id)).Error())
		return
	}
	if e.st == nil {
		writeError(w, http.StatusInternalServerError, "STORE_ERROR", "stored stage does not decode")
		return
	}
	if err := store.ValidateTransition(e.st.Lifecycle, to); err != nil {
		// noether's Display doubles the prefix (spec §3.4).
		writeError(w, http.StatusConflict, "INVALID_TRANSITION",
			fmt.Sprintf("invalid lifecycle transition: invalid lifecycle transition: %s → %s", e.st.Lifecycle, to))
		return
	}
	if kind == store.LifecycleDeprecated {
		if _, ok := h.byKey[string(to.Successor)]; !ok {
			writeError(w, http.StatusBadRequest, "INVALID_SUCCESSOR", store.InvalidSuccessorError(to.Successor).Error())
			return
		}
	}
	st, err := e.st.WithLifecycle(to)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "STORE_ERROR", err.Error())
		return
	}
	e.st, e.raw = st, st.Raw
	h.byKind = nil
	if kind == store.LifecycleActive {
		h.enforceInvariantLocked(st)
	}
	writeResult(w, http.StatusOK, map[string]any{"id": id, "lifecycle": kind.Name()})
}

// writeResult writes {"ok":true,"result":v}.
func writeResult(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(map[string]any{"ok": true, "result": v})
	if err != nil {
		writeError(w, http.StatusInternalServerError, "STORE_ERROR", err.Error())
		return
	}
	writeBody(w, status, b)
}

// writeError writes {"ok":false,"error":{"code","message"}}.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b, _ := json.Marshal(map[string]any{"ok": false, "error": map[string]string{"code": code, "message": message}})
	writeBody(w, status, b)
}

func writeBody(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
