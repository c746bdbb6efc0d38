package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror/feed"
	"github.com/noether-mirror/mirror/store"
)

// Error codes of the envelope's error.code.
const (
	CodeInvalidParam = "INVALID_PARAM"
	CodeNotFound     = "NOT_FOUND"
	CodeReadOnly     = "READ_ONLY"
	CodeUnauthorized = "UNAUTHORIZED"
	CodeUnavailable  = "UNAVAILABLE"
	CodeInternal     = "INTERNAL"
)

// readOnlyMessage answers every write. noether's client reads any error
// text containing "already" as AlreadyExists and any containing NOT_FOUND
// as a successful DELETE (spec §4.6), so it must contain neither.
const readOnlyMessage = "this is a read-only mirror: send writes to the upstream registry"

// maxOffset caps GET /stages' offset so offset+limit cannot overflow in a
// Source; no snapshot holds that many stages, so the answer is the same
// empty page.
const maxOffset = math.MaxInt32

// route is a low-cardinality name for a request path, used in metrics.
type route int

const (
	routeStages route = iota
	routeStage
	routeHealth
	routeMetrics
	routeOther
	routeAtStages
	routeAtStage
	routeAtHealth
	routeFeed
	routeFeedChanges
	numRoutes
)

func (r route) String() string {
	switch r {
	case routeStages:
		return "/stages"
	case routeStage:
		return "/stages/{id}"
	case routeHealth:
		return "/health"
	case routeMetrics:
		return "/metrics"
	case routeAtStages:
		return "/at/{g}/stages"
	case routeAtStage:
		return "/at/{g}/stages/{id}"
	case routeAtHealth:
		return "/at/{g}/health"
	case routeFeed:
		return "/mirror/v1/"
	case routeFeedChanges:
		return "/mirror/v1/changes"
	}
	return "other"
}

// classify maps a path to its route and, for /stages/{id}, the id as sent
// (not yet validated).
func classify(path string) (route, string) {
	switch path {
	case "/stages":
		return routeStages, ""
	case "/health":
		return routeHealth, ""
	case "/metrics":
		return routeMetrics, ""
	case feed.BasePath, strings.TrimSuffix(feed.BasePath, "/"):
		return routeFeed, ""
	}
	if rest, ok := strings.CutPrefix(path, feed.ChangesPrefix); ok && (rest == "" || rest[0] == '/') {
		return routeFeedChanges, rest
	}
	if id, ok := strings.CutPrefix(path, "/stages/"); ok && id != "" && !strings.Contains(id, "/") {
		return routeStage, id
	}
	return routeOther, ""
}

// recorder remembers the status and size of a response for logs and
// metrics.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// request is the per-request state shared by the handlers.
type request struct {
	w   *recorder
	r   *http.Request
	gen uint64 // generation answered from, for the log
	has bool   // whether gen is set
	// pinned marks a /at/G/… request, answered from generation at.
	pinned bool
	at     uint64
	// d caches what is derived from the snapshot answered from; acquire
	// sets it.
	d *derived
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t := parseTarget(r.URL.Path)
	rt := t.route // for the metrics
	req := &request{w: &recorder{ResponseWriter: w}, r: r}
	defer func() {
		dur := time.Since(start)
		status := req.w.status
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.observe(r.Method, rt, status, dur)
		attrs := []any{
			"method", r.Method, "path", r.URL.Path, "status", status,
			"bytes", req.w.bytes, "duration", dur,
		}
		if req.has {
			attrs = append(attrs, "generation", req.gen)
		}
		s.log.Info("request", attrs...)
	}()

	if s.opts.APIKey != "" && !s.authorized(r) {
		s.writeError(req, http.StatusUnauthorized, CodeUnauthorized,
			"invalid or missing X-API-Key: send the key this mirror was started with")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Refused before a pinned generation is resolved: a DELETE must
		// never be answered NOT_FOUND, which noether reads as success.
		msg := readOnlyMessage
		if t.ref != "" {
			msg = pinnedReadOnlyMessage
		}
		req.w.Header().Set("Allow", "GET, HEAD")
		s.writeError(req, http.StatusMethodNotAllowed, CodeReadOnly, msg)
		return
	}
	if t.ref != "" && !s.resolvePinned(req, t) {
		return
	}
	switch rt {
	case routeStages, routeAtStages:
		s.serveList(req)
	case routeStage, routeAtStage:
		s.serveStage(req, t.id)
	case routeHealth, routeAtHealth:
		s.serveHealth(req)
	case routeMetrics:
		s.serveMetrics(req)
	case routeFeed:
		s.serveFeedInfo(req)
	case routeFeedChanges:
		s.serveChanges(req, t.id)
	default:
		pinned := ""
		if s.pins != nil {
			pinned = ", and /at/G/stages, /at/G/stages/{id} and /at/G/health as of generation G"
		}
		s.writeError(req, http.StatusNotFound, CodeNotFound, fmt.Sprintf(
			"no endpoint %s: this mirror serves GET /stages, /stages/{id}, /health, /metrics and its change feed under /mirror/v1/%s",
			quoteTrunc(r.URL.Path), pinned))
	}
}

// authorized compares X-API-Key with the configured key in constant time
// (hashing both first so not even the length leaks).
func (s *Server) authorized(r *http.Request) bool {
	got := sha256.Sum256([]byte(r.Header.Get("X-API-Key")))
	return subtle.ConstantTimeCompare(got[:], s.keyHash[:]) == 1
}

// acquire pins the snapshot to answer req from: the current one, or for
// a pinned request its generation. When it cannot, it answers the
// request itself (503 when there is no snapshot) and returns ok=false.
func (s *Server) acquire(req *request) (Snapshot, Info, bool) {
	if req.pinned {
		return s.acquirePinned(req)
	}
	snap, err := s.src.Acquire()
	if err != nil {
		s.log.Error("no snapshot to answer from", "err", err)
		req.w.Header().Set("Retry-After", "5")
		s.writeError(req, http.StatusServiceUnavailable, CodeUnavailable,
			"the mirror cannot be read right now; retry shortly (the server log has details)")
		return nil, Info{}, false
	}
	info := snap.Info()
	req.gen, req.has = info.Generation, true
	req.d = &s.cur
	return snap, info, true
}

func (s *Server) release(snap Snapshot) {
	if err := snap.Close(); err != nil {
		s.log.Warn("releasing a snapshot", "err", err)
	}
}

// listQuery is GET /stages' parsed query.
type listQuery struct {
	kind          store.LifecycleKind
	limit, offset int
}

// normalized renders q canonically, for the ETag.
func (q listQuery) normalized() string {
	s := fmt.Sprintf("limit=%d&offset=%d", q.limit, q.offset)
	if q.kind != store.LifecycleUnknown {
		s = "lifecycle=" + q.kind.Name() + "&" + s
	}
	return s
}

// paramError is a bad query parameter, reported as 400 INVALID_PARAM.
type paramError struct{ msg string }

func (e *paramError) Error() string { return e.msg }

// parseListQuery parses lifecycle, limit and offset. A parameter given
// with an empty value counts as absent; other parameters are ignored.
func parseListQuery(raw string) (listQuery, error) {
	q := listQuery{limit: DefaultLimit}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, &paramError{fmt.Sprintf("malformed query string: %v", err)}
	}
	get := func(name string) (string, error) {
		v := vals[name]
		switch {
		case len(v) > 1:
			return "", &paramError{fmt.Sprintf("parameter %s is given %d times: give it once", name, len(v))}
		case len(v) == 1:
			return v[0], nil
		}
		return "", nil
	}
	lc, err := get("lifecycle")
	if err != nil {
		return q, err
	}
	if lc != "" {
		k, err := store.ParseLifecycleKind(lc)
		if err != nil {
			return q, &paramError{fmt.Sprintf("invalid lifecycle %s: want draft, active, deprecated or tombstone (or leave it out to list every stage)", quoteTrunc(lc))}
		}
		q.kind = k
	}
	limit, err := get("limit")
	if err != nil {
		return q, err
	}
	if limit != "" {
		n, err := strconv.ParseInt(limit, 10, 64)
		switch {
		case err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(limit, "-"):
			n = MaxLimit
		case err != nil || n < 0:
			return q, &paramError{fmt.Sprintf("invalid limit %s: want a non-negative integer (at most %d stages are returned)", quoteTrunc(limit), MaxLimit)}
		}
		q.limit = int(min(n, MaxLimit))
	}
	offset, err := get("offset")
	if err != nil {
		return q, err
	}
	if offset != "" {
		n, err := strconv.ParseInt(offset, 10, 64)
		switch {
		case err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(offset, "-"):
			n = maxOffset
		case err != nil || n < 0:
			return q, &paramError{fmt.Sprintf("invalid offset %s: want a non-negative integer", quoteTrunc(offset))}
		}
		q.offset = int(min(n, maxOffset))
	}
	return q, nil
}

func (s *Server) serveList(req *request) {
	q, err := parseListQuery(req.r.URL.RawQuery)
	if err != nil {
		s.writeError(req, http.StatusBadRequest, CodeInvalidParam, err.Error())
		return
	}
	snap, info, view, ok := s.acquireView(req)
	if !ok {
		return
	}
	defer s.release(snap)
	etag := snapshotETag(info, etagVariant(view, q.normalized()))
	if s.notModified(req, etag) {
		return
	}
	var raws [][]byte
	var total int
	if view != nil {
		raws, total, err = view.page(req.r.Context(), snap, q.kind, q.offset, q.limit)
	} else {
		raws, total, err = snap.Page(req.r.Context(), q.kind, q.offset, q.limit)
	}
	if err != nil {
		s.internalError(req, "reading a page of stages", err)
		return
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.putBuf(buf)
	buf.Reset()
	buf.WriteString(`{"ok":true,"result":{"stages":[`)
	for i, raw := range raws {
		if !looksLikeObject(raw) {
			s.internalError(req, "reading a page of stages", fmt.Errorf("stage %d of the page at offset %d is not a JSON object", i, q.offset))
			return
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(raw)
	}
	buf.WriteString(`],"total":`)
	buf.Write(strconv.AppendInt(nil, int64(total), 10))
	buf.WriteString(`}}`)
	s.setCacheable(req, etag)
	s.writeBody(req, http.StatusOK, buf.Bytes())
}

// putBuf returns a page buffer to the pool unless it grew unusually large.
func (s *Server) putBuf(b *bytes.Buffer) {
	if b.Cap() <= 16<<20 {
		s.bufs.Put(b)
	}
}

func (s *Server) serveStage(req *request, id string) {
	if !store.ValidID(id) {
		// The noether client puts ids into the path unescaped; something
		// that is not a 64-hex id cannot name a stage.
		s.writeError(req, http.StatusNotFound, CodeNotFound, fmt.Sprintf(
			"no stage with id %s: a stage id is 64 lowercase hex characters", quoteTrunc(id)))
		return
	}
	snap, info, view, ok := s.acquireView(req)
	if !ok {
		return
	}
	defer s.release(snap)
	var raw []byte
	var err error
	if view != nil && !view.has(store.StageID(id)) {
		// Quarantined by the trust policy: answered exactly as an absent
		// stage, so a client cannot tell the two apart.
		err = store.NotFoundError(store.StageID(id))
	} else {
		raw, err = snap.GetRaw(req.r.Context(), store.StageID(id))
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.writeError(req, http.StatusNotFound, CodeNotFound, fmt.Sprintf("stage %s is not in this mirror", id))
		return
	case err != nil:
		s.internalError(req, "reading stage "+id, err)
		return
	case !looksLikeObject(raw):
		s.internalError(req, "reading stage "+id, errors.New("the stored stage is not a JSON object"))
		return
	}
	etag := snapshotETag(info, "")
	if s.notModified(req, etag) {
		return
	}
	body := make([]byte, 0, len(raw)+len(`{"ok":true,"result":}`))
	body = append(body, `{"ok":true,"result":`...)
	body = append(body, raw...)
	body = append(body, '}')
	s.setCacheable(req, etag)
	s.writeBody(req, http.StatusOK, body)
}

// healthResult is GET /health's result: noether's shape plus "mirror".
type healthResult struct {
	Status string      `json:"status"`
	Store  store.Stats `json:"store"`
	Mirror mirrorInfo  `json:"mirror"`
}

type mirrorInfo struct {
	Generation uint64 `json:"generation"`
	Upstream   string `json:"upstream"`
	// LastSync (RFC 3339) and AgeSeconds are null when never synced.
	LastSync   *string `json:"last_sync"`
	AgeSeconds *int64  `json:"age_seconds"`
	Digest     string  `json:"digest"`
	// Quarantined counts the upstream stages held back from serving:
	// those the sync quarantined plus, with a trust policy, Untrusted.
	Quarantined int `json:"quarantined"`
	// Untrusted, present only with a trust policy, counts the snapshot's
	// stages the policy holds back (unsigned or signed by another key).
	Untrusted *int `json:"untrusted,omitempty"`
}

// heldBack is what /health and /at/G/health report as held back from
// serving: the snapshot's quarantine plus, with a trust policy (view),
// the stages it leaves out, which untrusted counts (nil without one).
func heldBack(info Info, view *trustView) (quarantined int, untrusted *int) {
	if view == nil {
		return info.Quarantined, nil
	}
	n := view.untrusted
	return info.Quarantined + n, &n
}

func (s *Server) serveHealth(req *request) {
	snap, info, view, ok := s.acquireView(req)
	if !ok {
		return
	}
	defer s.release(snap)
	if req.pinned {
		s.servePinnedHealth(req, snap, info, view)
		return
	}
	// The body's age changes every second while the content stays the
	// same: a weak validator, and caches must revalidate.
	etag := "W/" + snapshotETag(info, etagVariant(view, "health-"+strconv.FormatInt(info.LastSync.Unix(), 10)))
	req.w.Header().Set("ETag", etag)
	req.w.Header().Set("Cache-Control", "no-cache")
	if s.notModified(req, etag) {
		return
	}
	st, err := servedStats(req.r.Context(), req.d, snap, info, view)
	if err != nil {
		req.w.Header().Del("ETag")
		s.internalError(req, "computing the mirror's stats", err)
		return
	}
	quarantined, untrusted := heldBack(info, view)
	res := healthResult{Status: "ok", Store: st, Mirror: mirrorInfo{
		Generation:  info.Generation,
		Upstream:    info.Upstream,
		Digest:      info.Digest,
		Quarantined: quarantined,
		Untrusted:   untrusted,
	}}
	if !info.LastSync.IsZero() {
		ts := info.LastSync.UTC().Format(time.RFC3339)
		age := int64(max(0, s.opts.Now().Sub(info.LastSync)) / time.Second)
		res.Mirror.LastSync, res.Mirror.AgeSeconds = &ts, &age
	}
	s.writeResult(req, res)
}

// snapshotETag is a strong validator for content derived from one
// snapshot: its generation, a digest prefix and, for lists, the
// normalised query.
func snapshotETag(info Info, variant string) string {
	var b strings.Builder
	b.WriteString(`"g`)
	b.WriteString(strconv.FormatUint(info.Generation, 10))
	if d := info.Digest; d != "" {
		b.WriteByte('-')
		b.WriteString(etagSafe(d[:min(len(d), 16)]))
	}
	if variant != "" {
		b.WriteByte('-')
		b.WriteString(etagSafe(variant))
	}
	b.WriteByte('"')
	return b.String()
}

// etagSafe drops characters an entity tag may not contain.
func etagSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= 0x20 || r == '"' || r >= 0x7f {
			return -1
		}
		return r
	}, s)
}

// notModified answers 304 when If-None-Match matches etag (weak
// comparison, as RFC 9110 §13.1.2 requires for If-None-Match). The caller
// must not write anything else when it returns true.
func (s *Server) notModified(req *request, etag string) bool {
	if !etagMatches(req.r.Header.Values("If-None-Match"), etag) {
		return false
	}
	h := req.w.Header()
	if h.Get("Cache-Control") == "" {
		s.setCacheable(req, etag)
	}
	h.Set("ETag", etag)
	req.w.WriteHeader(http.StatusNotModified)
	return true
}

func etagMatches(headers []string, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for _, h := range headers {
		for part := range strings.SplitSeq(h, ",") {
			p := strings.TrimSpace(part)
			if p == "*" || strings.TrimPrefix(p, "W/") == want {
				return true
			}
		}
	}
	return false
}

// setCacheable marks a read response cacheable, with the strong
// validator etag: immutable for a pinned generation, else for MaxAge (see
// setCacheControl).
func (s *Server) setCacheable(req *request, etag string) {
	req.w.Header().Set("ETag", etag)
	s.setCacheControl(req, req.pinned)
}

// setCacheControl sets how long caches may keep a response. A pinned
// generation's answers never change: a year, and "immutable". Except
// under a trust policy: what /at/G/ serves then also depends on the
// policy, which the operator may change (revoke a key) at a restart, so
// those answers are cached like the root's. Otherwise MaxAge applies,
// "no-cache" when it is negative. With an API key, caches are told the
// answer is private.
func (s *Server) setCacheControl(req *request, immutable bool) {
	h := req.w.Header()
	scope := "public"
	if s.opts.APIKey != "" {
		scope = "private"
	}
	switch {
	case immutable && s.opts.Trust == nil:
		h.Set("Cache-Control", fmt.Sprintf("%s, max-age=%d, immutable", scope, int64(immutableMaxAge/time.Second)))
	case s.opts.MaxAge < 0:
		h.Set("Cache-Control", "no-cache")
	default:
		h.Set("Cache-Control", fmt.Sprintf("%s, max-age=%d", scope, int64(s.opts.MaxAge/time.Second)))
	}
}

// writeResult writes {"ok":true,"result":v}.
func (s *Server) writeResult(req *request, v any) {
	body, err := json.Marshal(struct {
		OK     bool `json:"ok"`
		Result any  `json:"result"`
	}{true, v})
	if err != nil {
		s.internalError(req, "encoding the response", err)
		return
	}
	s.writeBody(req, http.StatusOK, body)
}

// errorBody is the failure envelope.
type errorBody struct {
	OK    bool `json:"ok"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeError writes {"ok":false,"error":{code,message}} with status. Error
// answers are never cached.
func (s *Server) writeError(req *request, status int, code, msg string) {
	var e errorBody
	e.Error.Code, e.Error.Message = code, msg
	body, err := json.Marshal(e)
	if err != nil { // cannot happen: two strings
		body = []byte(`{"ok":false,"error":{"code":"INTERNAL","message":"encoding an error failed"}}`)
	}
	h := req.w.Header()
	h.Del("ETag")
	h.Set("Cache-Control", "no-store")
	s.writeBody(req, status, body)
}

// internalError logs err and answers 500 without leaking its details.
func (s *Server) internalError(req *request, what string, err error) {
	if errors.Is(err, context.Canceled) && req.r.Context().Err() != nil {
		// The client went away; nobody will read the answer.
		s.writeError(req, 499, CodeInternal, "request cancelled")
		return
	}
	s.log.Error(what, "err", err, "path", req.r.URL.Path)
	s.writeError(req, http.StatusInternalServerError, CodeInternal,
		what+" failed; the server log has details (`mirror verify` checks the mirror file)")
}

func (s *Server) writeBody(req *request, status int, body []byte) {
	h := req.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	req.w.WriteHeader(status)
	_, _ = req.w.Write(body) // a write error means the client left
}

// looksLikeObject is a cheap sanity check that raw can be embedded in a
// JSON array as a stage: it starts with '{' and ends with '}' (after
// whitespace). Stage bytes come from a verified mirror; this only guards
// the envelope against a Source bug.
func looksLikeObject(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) >= 2 && t[0] == '{' && t[len(t)-1] == '}'
}

// quoteTrunc quotes s for a message, cut to 80 bytes.
func quoteTrunc(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "…"
	}
	return strconv.Quote(s)
}
