package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/store"
)

// History is a Source that keeps past generations, so the server can
// answer /at/G/… from any of them. FromMirror's Source implements it.
// Implementations must be safe for concurrent use.
//
// A generation's content never changes, and two snapshots of one
// generation must answer every Snapshot method alike, Info's Generation,
// Digest, Quarantined and Published included: the server marks what it
// answers under /at/G/ immutable. (Upstream and LastSync may change, as a
// sync that finds nothing new refreshes them; pinned answers leave them
// out.)
type History interface {
	Source
	// Resolve returns the number of the kept generation ref names: a
	// generation number or a digest prefix, as mirror.Mirror.Resolve
	// reads it. A collected generation is an error wrapping
	// mirror.ErrGenerationGone; any other ref naming no kept generation
	// one wrapping mirror.ErrNoGeneration. Other errors mean the history
	// could not be read.
	Resolve(ctx context.Context, ref string) (uint64, error)
	// AcquireAt pins generation gen, as Acquire pins the current one; it
	// fails as Resolve does when gen is not kept (or was collected since).
	AcquireAt(ctx context.Context, gen uint64) (Snapshot, error)
	// Kept returns the oldest and the newest generation kept.
	Kept(ctx context.Context) (oldest, newest uint64, err error)
}

// Pinned answers carry this Cache-Control max-age: a year, the most
// RFC 9111 caches honour, with "immutable".
const immutableMaxAge = 365 * 24 * time.Hour

// CodeRedirect is the error code of a 307 answer sending a client from a
// digest-prefix (or otherwise non-canonical) /at/G/ to the generation's
// number. Clients that follow redirects never see it.
const CodeRedirect = "REDIRECT"

// pinnedReadOnlyMessage answers writes under /at/G/. Like
// readOnlyMessage, it contains neither "already" nor NOT_FOUND, and it
// quotes nothing from the request (a generation ref could spell either).
const pinnedReadOnlyMessage = "a generation pinned under /at/ is read-only, as is this mirror: send writes to the upstream registry"

// isNotKept reports whether err says a generation is not (or no longer)
// kept.
func isNotKept(err error) bool {
	return errors.Is(err, mirror.ErrGenerationGone) || errors.Is(err, mirror.ErrNoGeneration)
}

// target is a request path, parsed: its route, the id of /stages/{id}
// and, for /at/{ref}/…, the generation reference and the path after it.
type target struct {
	route route
	id    string
	ref   string // "" unless the path is /at/{ref}/…
	rest  string // the path after /at/{ref}: "/stages", …
}

// parseTarget splits /at/{ref}/… off path and classifies the rest. A
// pinned path whose rest is no read endpoint (metrics included: they
// describe the server, not a generation) is routeOther with ref set.
func parseTarget(path string) target {
	after, ok := strings.CutPrefix(path, "/at/")
	if !ok {
		rt, id := classify(path)
		return target{route: rt, id: id}
	}
	ref, rest := after, ""
	if i := strings.IndexByte(after, '/'); i >= 0 {
		ref, rest = after[:i], after[i:]
	}
	if ref == "" {
		return target{route: routeOther}
	}
	t := target{route: routeOther, ref: ref, rest: rest}
	switch rt, id := classify(rest); rt {
	case routeStages:
		t.route = routeAtStages
	case routeStage:
		t.route, t.id = routeAtStage, id
	case routeHealth:
		t.route = routeAtHealth
	}
	return t
}

// resolvePinned resolves a /at/{ref}/… request's generation and records
// it in req. It answers the request itself (and returns false) when ref
// names no kept generation (404), when the source keeps no history
// (404), when ref is not the generation's canonical number (307 to it),
// or when the history cannot be read (503).
func (s *Server) resolvePinned(req *request, t target) bool {
	if t.route == routeOther {
		s.writeError(req, http.StatusNotFound, CodeNotFound, fmt.Sprintf(
			"no endpoint %s: a pinned generation serves GET /at/G/stages, /at/G/stages/{id} and /at/G/health",
			quoteTrunc(req.r.URL.Path)))
		return false
	}
	if s.pins == nil {
		s.writeError(req, http.StatusNotFound, CodeNotFound,
			"this server keeps no past generations, so it serves no /at/G/ paths: use /stages, /stages/{id} and /health")
		return false
	}
	gen, err := s.pins.src.Resolve(req.r.Context(), t.ref)
	switch {
	case isNotKept(err):
		if n, perr := strconv.ParseUint(t.ref, 10, 64); perr == nil && errors.Is(err, mirror.ErrGenerationGone) {
			s.pins.forget(n)
		}
		s.generationNotFound(req, t.ref, err)
		return false
	case err != nil:
		s.historyUnavailable(req, err)
		return false
	}
	if canon := strconv.FormatUint(gen, 10); canon != t.ref {
		s.redirectPinned(req, t, canon)
		return false
	}
	req.pinned, req.at = true, gen
	req.gen, req.has = gen, true
	return true
}

// acquirePinned pins the generation resolvePinned recorded, from the
// cache of open generations. Like acquire, it answers the request itself
// and returns ok=false when it cannot.
func (s *Server) acquirePinned(req *request) (Snapshot, Info, bool) {
	ctx := req.r.Context()
	snap, d, miss, err := s.pins.acquire(ctx, req.at)
	switch {
	case isNotKept(err):
		// Collected between Resolve and the open.
		s.pins.forget(req.at)
		s.generationNotFound(req, strconv.FormatUint(req.at, 10), err)
		return nil, Info{}, false
	case err != nil:
		s.historyUnavailable(req, err)
		return nil, Info{}, false
	}
	if miss {
		s.pins.sweep(ctx)
	}
	req.d = d
	return snap, snap.Info(), true
}

// historyUnavailable answers 503 when the mirror's history cannot be
// read, logging why, or 499 when the client has left.
func (s *Server) historyUnavailable(req *request, err error) {
	if errors.Is(err, context.Canceled) && req.r.Context().Err() != nil {
		s.writeError(req, 499, CodeInternal, "request cancelled")
		return
	}
	s.log.Error("reading the mirror's generations", "err", err, "path", req.r.URL.Path)
	req.w.Header().Set("Retry-After", "5")
	s.writeError(req, http.StatusServiceUnavailable, CodeUnavailable,
		"the mirror's generations cannot be read right now; retry shortly (the server log has details)")
}

// generationNotFound answers 404 NOT_FOUND for a ref that names no kept
// generation, saying which generations are kept. The library's error is
// not passed on: it names the mirror's file and operator commands.
func (s *Server) generationNotFound(req *request, ref string, err error) {
	oldest, newest, kerr := s.pins.src.Kept(req.r.Context())
	if kerr != nil {
		s.log.Warn("reading the mirror's kept generations", "err", kerr)
	}
	s.writeError(req, http.StatusNotFound, CodeNotFound,
		notKeptMessage(ref, errors.Is(err, mirror.ErrGenerationGone), oldest, newest, kerr == nil))
}

// notKeptMessage explains why ref names no kept generation. gone says
// the source reported it collected; oldest and newest are the kept
// range when known.
func notKeptMessage(ref string, gone bool, oldest, newest uint64, known bool) string {
	kept := ""
	if known {
		kept = fmt.Sprintf("; this mirror keeps generations %d to %d", oldest, newest)
	}
	n, err := strconv.ParseUint(ref, 10, 64)
	number := err == nil
	switch {
	case gone && number && known:
		return fmt.Sprintf("generation %d was collected by the mirror's keep policy; the oldest generation kept is %d (the newest %d): pin a kept one", n, oldest, newest)
	case gone:
		return fmt.Sprintf("generation %s was collected by the mirror's keep policy%s", quoteTrunc(ref), kept)
	case number && known && n > newest:
		return fmt.Sprintf("generation %d does not exist yet: the newest is %d (the oldest kept %d)", n, newest, oldest)
	case number:
		return fmt.Sprintf("generation %d is not kept%s", n, kept)
	case isHexPrefix(ref):
		return fmt.Sprintf("no kept generation's digest starts with %s%s (/at/G/health shows generation G's digest)", quoteTrunc(ref), kept)
	}
	return fmt.Sprintf("%s is not a generation: give a generation number or at least 4 hex digits of a generation's digest%s", quoteTrunc(ref), kept)
}

// isHexPrefix reports whether ref could be a digest prefix: at least 4
// hex digits.
func isHexPrefix(ref string) bool {
	if len(ref) < 4 {
		return false
	}
	for _, c := range strings.ToLower(ref) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// redirectPinned answers 307 to the same endpoint under /at/{canon}/,
// keeping the query. Where a digest prefix (or a number spelled with
// leading zeros) leads can change: a later generation may share the
// prefix, and the newest of those wins. So the redirect is cached like
// the root's answers, never as immutable. The Location is relative, so
// it holds behind a path prefix (http.StripPrefix, a proxy).
func (s *Server) redirectPinned(req *request, t target, canon string) {
	loc := url.URL{
		Path:     strings.Repeat("../", strings.Count(t.rest, "/")) + canon + t.rest,
		RawQuery: req.r.URL.RawQuery,
	}
	var e errorBody
	e.Error.Code = CodeRedirect
	e.Error.Message = fmt.Sprintf("generation %s is generation %s, served at %s: follow the Location header",
		quoteTrunc(t.ref), canon, loc.String())
	body, err := json.Marshal(e)
	if err != nil { // cannot happen: two strings
		s.internalError(req, "encoding a redirect", err)
		return
	}
	h := req.w.Header()
	h.Set("Location", loc.String())
	s.setCacheControl(req, false)
	s.writeBody(req, http.StatusTemporaryRedirect, body)
}

// pinnedHealthResult is GET /at/G/health's result: noether's shape plus a
// "mirror" object holding only what never changes for a generation.
type pinnedHealthResult struct {
	Status string           `json:"status"`
	Store  store.Stats      `json:"store"`
	Mirror pinnedMirrorInfo `json:"mirror"`
}

type pinnedMirrorInfo struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
	// Published (RFC 3339) is when the generation was published; null
	// when the source does not say.
	Published *string `json:"published"`
	// Quarantined and Untrusted are as in /health.
	Quarantined int  `json:"quarantined"`
	Untrusted   *int `json:"untrusted,omitempty"`
	// Pinned is always true: the answer is frozen at Generation.
	Pinned bool `json:"pinned"`
}

// servePinnedHealth answers GET /at/G/health from snap. Unlike /health
// it reports no age, last sync or upstream: those change while the
// generation does not, and this answer is cached as immutable.
func (s *Server) servePinnedHealth(req *request, snap Snapshot, info Info, view *trustView) {
	etag := snapshotETag(info, etagVariant(view, "health"))
	if s.notModified(req, etag) {
		return
	}
	st, err := servedStats(req.r.Context(), req.d, snap, info, view)
	if err != nil {
		s.internalError(req, "computing the generation's stats", err)
		return
	}
	quarantined, untrusted := heldBack(info, view)
	res := pinnedHealthResult{Status: "ok", Store: st, Mirror: pinnedMirrorInfo{
		Generation:  info.Generation,
		Digest:      info.Digest,
		Quarantined: quarantined,
		Untrusted:   untrusted,
		Pinned:      true,
	}}
	if !info.Published.IsZero() {
		ts := info.Published.UTC().Format(time.RFC3339)
		res.Mirror.Published = &ts
	}
	s.setCacheable(req, etag)
	s.writeResult(req, res)
}

// ReleasePinned closes the generations the server keeps open for /at/G/
// requests (those in use close when their last request ends). The
// Server stays usable: a later request opens its generation again. Serve
// calls it when it returns; call it after the last request when using
// Handler without Serve, before closing the Source.
func (s *Server) ReleasePinned() {
	if s.pins != nil {
		s.pins.flush()
	}
}
