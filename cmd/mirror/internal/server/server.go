// Package server is `mirror serve`: a read-only noether stage registry
// (spec §4) answering from a mirror snapshot.
//
// It speaks the registry's JSON envelope ({"ok":true,"result":…} or
// {"ok":false,"error":{"code","message"}}) so an unmodified noether 0.8.2
// client can point NOETHER_REGISTRY at it (spec §4.6): GET /stages pages
// the id-ordered listing of one lifecycle, GET /stages/{id} returns one
// stage, GET /health returns noether's store stats plus a "mirror" object,
// and every write method is refused with 405 READ_ONLY. GET /metrics
// exposes Prometheus metrics.
//
// When the Source keeps history (History; FromMirror's does), the same
// read API is served frozen at any kept generation G under /at/G/:
// NOETHER_REGISTRY=http://host/at/G gives noether the registry as it was
// at G. Those answers never change, so they are marked immutable; a
// digest prefix for G is redirected to G's number, and a generation that
// was collected (or never existed) is 404 NOT_FOUND, never cached.
//
// Stage bytes are served exactly as mirrored, never re-encoded. Every
// request pins the source's current snapshot for its whole duration, so a
// page is always consistent and a snapshot published by a concurrent
// `mirror sync` is picked up by the next request without a restart.
// Responses carry an ETag derived from the snapshot and honour
// If-None-Match, and reads are marked cacheable so a reverse proxy or CDN
// in front of several replicas can carry the load.
//
// With Options.Trust (`mirror serve --trusted-keys F`) only stages signed
// by a trusted key are served; the others are quarantined: invisible to
// every endpoint except the quarantine counts of /health and /metrics.
package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// Source hands out the snapshot to answer a request from. The server calls
// Acquire once per request that needs content and closes the snapshot
// when the response is written. Implementations must be safe for
// concurrent use and should return the newest published snapshot.
type Source interface {
	Acquire() (Snapshot, error)
}

// Snapshot is one immutable version of the mirrored registry, pinned until
// Close. Every method must be safe for concurrent use and must return the
// same answers for the snapshot's whole life.
type Snapshot interface {
	// Info describes the snapshot: generation, upstream, digest, ….
	Info() Info
	// Page returns the raw stage JSON at positions [offset, offset+limit)
	// of the id-ordered listing of one lifecycle kind
	// (store.LifecycleUnknown: every stage), and the number of stages of
	// that kind. An offset at or past the end gives an empty page. The
	// returned bytes must stay valid and unmodified until Close.
	Page(ctx context.Context, kind store.LifecycleKind, offset, limit int) ([][]byte, int, error)
	// GetRaw returns one stage's exact JSON, or an error wrapping
	// store.ErrNotFound.
	GetRaw(ctx context.Context, id store.StageID) ([]byte, error)
	// Stats summarises the snapshot as noether's store stats do. The
	// server calls it at most once per generation and caches the result,
	// so it may be slow.
	Stats(ctx context.Context) (store.Stats, error)
	// Close releases the snapshot. The server calls it exactly once.
	Close() error
}

// Info describes a snapshot.
type Info struct {
	// Generation identifies the snapshot: a new published version has a
	// new generation.
	Generation uint64
	// Upstream is the registry URL the content came from ("" if none).
	Upstream string
	// LastSync is the last successful sync; zero if never synced.
	LastSync time.Time
	// Digest is a hex content digest ("" if the source has none); equal
	// digests mean equal content.
	Digest string
	// Quarantined is the number of upstream stages held back from serving.
	Quarantined int
	// Published is when the snapshot was published; zero if unknown.
	Published time.Time
}

// Defaults for zero Options fields.
const (
	DefaultMaxAge          = 60 * time.Second
	DefaultShutdownTimeout = 15 * time.Second
	// MaxLimit caps GET /stages' limit, as the registry docs say.
	MaxLimit = 200
	// DefaultLimit is GET /stages' limit when none is given.
	DefaultLimit = 50
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// APIKey, when non-empty, is required as X-API-Key on every request,
	// reads and /metrics included (401 UNAUTHORIZED otherwise). Keys are
	// compared in constant time. With a key, cacheable responses are
	// marked "private" so a shared cache never hands them to a client
	// without the key.
	APIKey string
	// Logger receives one Info line per request (method, path, status,
	// bytes, duration, generation) and server errors; nil discards them.
	Logger *slog.Logger
	// MaxAge is the Cache-Control max-age of stage responses. 0 means
	// DefaultMaxAge; a negative value sends "no-cache" (always
	// revalidate, which the ETag makes cheap). Answers under /at/G/ are
	// immutable whatever it says, unless Trust is set.
	MaxAge time.Duration
	// PinnedGenerations is how many generations /at/G/ requests keep open
	// at once (least recently used closed first); 0 or less means
	// DefaultPinnedGenerations. Each costs a few open files and, with
	// Trust, its trust view.
	PinnedGenerations int
	// ShutdownTimeout bounds how long Serve waits for requests in flight
	// once its context is done. 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Now returns the current time (snapshot age); nil means time.Now.
	// Tests replace it.
	Now func() time.Time
	// Trust, when non-nil, serves only the stages it accepts (signed by
	// one of its keys); every other stage is quarantined: left out of GET
	// /stages pages and their total, 404 NOT_FOUND on GET /stages/{id},
	// left out of /health's store stats and /metrics' mirror_stages, and
	// counted in /health's mirror.quarantined and mirror.untrusted and in
	// /metrics' mirror_quarantined_stages and mirror_untrusted_stages.
	// The server decodes each snapshot's stages once, the first time the
	// snapshot is asked for (Serve does it at start), and keeps the
	// accepted ids in memory, about 100 bytes per stage; pages then cost
	// one Snapshot.GetRaw per stage returned, whatever the offset.
	Trust *store.TrustPolicy
}

// Server answers registry requests from a Source. It is safe for
// concurrent use; one Server may back any number of listeners. It keeps
// up to Options.PinnedGenerations past generations open for /at/G/
// requests until ReleasePinned (which Serve calls as it returns).
type Server struct {
	src     Source
	opts    Options
	log     *slog.Logger
	keyHash [sha256.Size]byte
	handler http.Handler
	metrics *metrics
	bufs    sync.Pool // *bytes.Buffer for page bodies

	// cur caches what is derived from the current snapshot.
	cur derived
	// pins holds the generations open for /at/G/ requests; nil when the
	// Source keeps no history.
	pins *pinCache
	// viewSem is a one-slot semaphore held while a trust view is built,
	// whatever the snapshot: builds use every CPU already.
	viewSem chan struct{}
}

// derived caches what the server computes from one snapshot at a time:
// its stats and, with Options.Trust, its trust view. Each is recomputed
// when asked for another snapshot (generation and digest). It is safe for
// concurrent use; the zero value is empty.
type derived struct {
	statsMu sync.Mutex
	stats   *cachedStats

	view atomic.Pointer[trustView]
}

type cachedStats struct {
	gen    uint64
	digest string
	stats  store.Stats
}

// New returns a Server answering from src.
func New(src Source, opts Options) (*Server, error) {
	if src == nil {
		return nil, errors.New("server.New: nil Source: pass the mirror to serve (server.FromMirror)")
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		src:     src,
		opts:    opts,
		log:     log,
		metrics: newMetrics(),
		bufs:    sync.Pool{New: func() any { return new(bytes.Buffer) }},
		viewSem: make(chan struct{}, 1),
	}
	if opts.APIKey != "" {
		s.keyHash = sha256.Sum256([]byte(opts.APIKey))
	}
	if h, ok := src.(History); ok {
		n := opts.PinnedGenerations
		if n <= 0 {
			n = DefaultPinnedGenerations
		}
		s.pins = newPinCache(h, n, s.release)
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the registry's http.Handler. Mount it at the root (or
// behind http.StripPrefix): it routes on the full path.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on ln until ctx is done, then stops accepting,
// waits up to Options.ShutdownTimeout for requests in flight and returns
// nil. It closes ln. With Options.Trust it applies the policy to the
// current snapshot in the background at once, so the first request need
// not wait for it; Serve returns only once that work has stopped. An
// error accepting connections is returned at once; requests still
// running when the drain times out are cut off and the returned error
// wraps context.DeadlineExceeded. Serve releases the generations kept
// open for /at/G/ requests (ReleasePinned) as it returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.ReleasePinned()
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// Requests must outlive ctx: cancelling it starts a drain, it
		// does not abort the answers being written.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if s.opts.Trust != nil {
		wctx, cancel := context.WithCancel(ctx)
		warmed := make(chan struct{})
		go func() {
			defer close(warmed)
			s.warmTrustView(wctx)
		}()
		defer func() {
			cancel()
			<-warmed
		}()
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: draining requests in flight", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc // http.ErrServerClosed once Shutdown has begun
	if err != nil {
		_ = hs.Close()
		return fmt.Errorf("requests still running after %s were cut off: %w", s.opts.ShutdownTimeout, err)
	}
	return nil
}

// statsFor returns snap's stats, computing them at most once per
// generation and caching them in d. Concurrent callers for a new
// generation wait for the one computing it.
func (d *derived) statsFor(ctx context.Context, snap Snapshot, info Info) (store.Stats, error) {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	if c := d.stats; c != nil && c.gen == info.Generation && c.digest == info.Digest {
		return c.stats, nil
	}
	st, err := snap.Stats(ctx)
	if err != nil {
		return store.Stats{}, err
	}
	if st.ByLifecycle == nil {
		st.ByLifecycle = map[string]int{}
	}
	if st.ByEffect == nil {
		st.ByEffect = map[string]int{}
	}
	d.stats = &cachedStats{gen: info.Generation, digest: info.Digest, stats: st}
	return st, nil
}
