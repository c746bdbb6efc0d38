package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/feed"
)

// Feeder is a History that also serves change feeds: what turns one kept
// generation into another, for mirrors that sync from this one (see
// package mirror/feed). FromMirror's Source implements it.
// Implementations must be safe for concurrent use.
type Feeder interface {
	History
	// OpenChanges prepares the change stream from generation from (0:
	// from nothing, the whole content) to to. It fails as AcquireAt does
	// when either is not kept. The caller closes the stream.
	OpenChanges(ctx context.Context, from, to uint64) (ChangeStream, error)
}

// ChangeStream is one prepared change stream, pinning its generations
// until Close.
type ChangeStream interface {
	// Digest is the content digest of the generation the stream leads
	// to: part of its ETag, so a cache never revalidates a stream of a
	// rebuilt mirror whose generation numbers repeat.
	Digest() string
	// WriteTo writes the stream in the mirror/feed format.
	WriteTo(ctx context.Context, w io.Writer) error
	Close() error
}

// Bounds of GET /mirror/v1/?wait=D.
const (
	maxFeedWait  = 60 * time.Second
	feedWaitPoll = 250 * time.Millisecond
	// feedWriteIdle is how long a change stream's client may stall
	// before the write is cut off; each write extends the deadline, so a
	// large feed is not cut by the server's WriteTimeout.
	feedWriteIdle = 2 * time.Minute
)

// feeder returns the source as a Feeder, or answers 404 itself and
// returns nil: no history, or a trust policy (a feed carries every stage
// the mirror holds, which the policy would hide).
func (s *Server) feeder(req *request) Feeder {
	f, ok := s.src.(Feeder)
	switch {
	case s.opts.Trust != nil:
		s.writeError(req, http.StatusNotFound, CodeNotFound,
			"this mirror serves no change feed: it was started with --trusted-keys, and a feed would carry the stages that hides; downstream mirrors list its stages instead")
		return nil
	case !ok:
		s.writeError(req, http.StatusNotFound, CodeNotFound,
			"this server keeps no generations, so it serves no change feed: downstream mirrors list its stages instead")
		return nil
	}
	if r, ok := f.(interface{ FeedReady() error }); ok {
		if err := r.FeedReady(); err != nil {
			s.writeError(req, http.StatusNotFound, CodeNotFound, "this mirror serves no change feed yet: "+err.Error())
			return nil
		}
	}
	return f
}

// FeedReady reports why m cannot serve a change feed: a format-1 mirror
// has no content digest to prove a feed against until a sync upgrades it.
// Every later format (generations) has one.
func (s mirrorSource) FeedReady() error {
	if v := s.m.Meta().FormatVersion; v < 2 {
		return fmt.Errorf("it is a format-%d mirror, whose digest is not a content digest; its next sync upgrades it, and downstream mirrors list its stages until then", v)
	}
	return nil
}

// serveFeedInfo answers GET /mirror/v1/: the feed's Capabilities. With
// ?since=G&wait=D it first waits (at most D, capped at a minute) for a
// generation other than G.
func (s *Server) serveFeedInfo(req *request) {
	f := s.feeder(req)
	if f == nil {
		return
	}
	q := req.r.URL.Query()
	if w := q.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		since, serr := strconv.ParseUint(q.Get("since"), 10, 64)
		if err != nil || d < 0 || serr != nil {
			s.writeError(req, http.StatusBadRequest, CodeInvalidParam,
				"wait needs a duration (like 30s) and since a generation number: /mirror/v1/?since=G&wait=30s")
			return
		}
		s.waitForNewer(req.r.Context(), since, min(d, maxFeedWait))
	}
	snap, info, ok := s.acquire(req)
	if !ok {
		return
	}
	defer s.release(snap)
	oldest, _, err := f.Kept(req.r.Context())
	if err != nil {
		s.historyUnavailable(req, err)
		return
	}
	etag := snapshotETag(info, "feed-"+strconv.FormatUint(oldest, 10))
	req.w.Header().Set("ETag", etag)
	req.w.Header().Set("Cache-Control", "no-cache")
	if s.notModified(req, etag) {
		return
	}
	st, err := snapTotal(req.r.Context(), req.d, snap, info)
	if err != nil {
		s.internalError(req, "counting the mirror's stages", err)
		return
	}
	s.writeResult(req, feed.Capabilities{
		Mirror: feed.Software, FeedVersion: feed.Version,
		Generation: info.Generation, Digest: info.Digest, Oldest: oldest,
		Total: st, Published: info.Published,
		Changes: feed.ChangesPrefix + "/{from}/{to}",
	})
}

// snapTotal is the number of stages of the snapshot info describes, from
// the cached stats.
func snapTotal(ctx context.Context, d *derived, snap Snapshot, info Info) (int, error) {
	st, err := d.statsFor(ctx, snap, info)
	return st.Total, err
}

// waitForNewer returns once the current generation is not since, after
// d, or when ctx is done.
func (s *Server) waitForNewer(ctx context.Context, since uint64, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(feedWaitPoll)
	defer tick.Stop()
	for {
		snap, err := s.src.Acquire()
		if err == nil {
			gen := snap.Info().Generation
			s.release(snap)
			if gen != since {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// serveChanges answers GET /mirror/v1/changes/{from}/{to} with the
// change stream, immutable; and GET /mirror/v1/changes?since=G with a
// redirect to the stream from G to the current generation.
func (s *Server) serveChanges(req *request, rest string) {
	f := s.feeder(req)
	if f == nil {
		return
	}
	if rest == "" {
		s.redirectChanges(req)
		return
	}
	from, to, ok := parseFeedPair(rest)
	if !ok {
		s.writeError(req, http.StatusBadRequest, CodeInvalidParam, fmt.Sprintf(
			"%s is no change feed: ask for %s/{from}/{to} with two generation numbers, from ≤ to (from 0: the whole content)",
			quoteTrunc(req.r.URL.Path), feed.ChangesPrefix))
		return
	}
	req.gen, req.has = to, true
	cs, err := f.OpenChanges(req.r.Context(), from, to)
	switch {
	case isNotKept(err):
		ref := strconv.FormatUint(to, 10)
		if _, gerr := f.Resolve(req.r.Context(), strconv.FormatUint(from, 10)); from != 0 && gerr != nil {
			ref = strconv.FormatUint(from, 10)
		}
		s.generationNotFound(req, ref, err) // s.pins is set: f is a History
		return
	case err != nil:
		s.historyUnavailable(req, err)
		return
	}
	defer cs.Close()
	etag := fmt.Sprintf(`"feed-%d-%d-%s"`, from, to, etagSafe(cs.Digest()[:min(len(cs.Digest()), 16)]))
	h := req.w.Header()
	h.Set("ETag", etag)
	s.setCacheControl(req, true)
	if s.notModified(req, etag) {
		return
	}
	h.Set("Content-Type", feed.ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	if req.r.Method == http.MethodHead {
		req.w.WriteHeader(http.StatusOK)
		return
	}
	w := &idleWriter{w: req.w, rc: http.NewResponseController(req.w)}
	if err := cs.WriteTo(req.r.Context(), w); err != nil {
		// Headers are gone: the client sees a stream without its
		// trailer, which it refuses.
		if !errors.Is(err, context.Canceled) {
			s.log.Error("writing a change feed", "from", from, "to", to, "err", err)
		}
		panic(http.ErrAbortHandler) // tells the client the body is incomplete
	}
}

// redirectChanges answers ?since=G with 307 to the stream from G to the
// current generation. The redirect is not cached: the current
// generation moves.
func (s *Server) redirectChanges(req *request) {
	since, err := strconv.ParseUint(req.r.URL.Query().Get("since"), 10, 64)
	if err != nil {
		s.writeError(req, http.StatusBadRequest, CodeInvalidParam,
			"ask for "+feed.ChangesPrefix+"?since=G with a generation number (0: the whole content)")
		return
	}
	snap, info, ok := s.acquire(req)
	if !ok {
		return
	}
	s.release(snap)
	if since > info.Generation {
		s.writeError(req, http.StatusNotFound, CodeNotFound, fmt.Sprintf(
			"generation %d is newer than this mirror's current generation %d", since, info.Generation))
		return
	}
	h := req.w.Header()
	h.Set("Location", feed.ChangesPath(since, info.Generation))
	h.Set("Cache-Control", "no-store")
	req.w.WriteHeader(http.StatusTemporaryRedirect)
}

// parseFeedPair reads "/{from}/{to}" in canonical decimal, from ≤ to.
func parseFeedPair(rest string) (from, to uint64, ok bool) {
	a, b, found := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	if !found || !strings.HasPrefix(rest, "/") {
		return 0, 0, false
	}
	from, e1 := strconv.ParseUint(a, 10, 64)
	to, e2 := strconv.ParseUint(b, 10, 64)
	canonical := strconv.FormatUint(from, 10) == a && strconv.FormatUint(to, 10) == b
	return from, to, e1 == nil && e2 == nil && canonical && from <= to
}

// idleWriter extends the connection's write deadline before each write,
// so a stream is cut only when the client stalls for feedWriteIdle.
type idleWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (w *idleWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(feedWriteIdle)) // unsupported by a test recorder: fine
	return w.w.Write(p)
}

// OpenChanges prepares the change stream of m from generation from to
// to.
func (s mirrorSource) OpenChanges(ctx context.Context, from, to uint64) (ChangeStream, error) {
	cf, err := s.m.OpenChangeFeed(ctx, strconv.FormatUint(from, 10), strconv.FormatUint(to, 10))
	if err != nil {
		return nil, err
	}
	// A number not kept may resolve as a digest prefix: check what was
	// pinned.
	if cf.To.Generation != to || (!cf.Full && cf.From.Generation != from) {
		cf.Close()
		return nil, fmt.Errorf("%w: generation %d or %d is no longer kept", mirror.ErrGenerationGone, from, to)
	}
	return mirrorChanges{cf}, nil
}

type mirrorChanges struct{ cf *mirror.ChangeFeed }

func (c mirrorChanges) WriteTo(ctx context.Context, w io.Writer) error {
	return feed.Encode(ctx, w, c.cf)
}

func (c mirrorChanges) Close() error { return c.cf.Close() }

func (c mirrorChanges) Digest() string { return c.cf.To.Digest }
