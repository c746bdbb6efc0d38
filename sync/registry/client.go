// Package registry is an HTTP client for one noether stage registry (spec
// §4): the {"ok","result"|"error"} envelope, GET/POST /stages, GET, PATCH
// and DELETE /stages/{id}, GET /health.
//
// Unlike noether's own client it classifies failures by HTTP status and
// error code (never by message text), retries transient failures with
// exponential backoff and full jitter, honours Retry-After, bounds every
// response's size and JSON depth, validates ids before they reach a URL,
// refuses to follow a redirect to another host (so the API key never
// leaves the registry's host), and describes non-JSON answers (an HTML 502
// from a proxy, an empty 204) instead of failing opaquely.
//
// The API key never leaves the process by way of the Client: text taken
// from a response passes the Client's redactor before it reaches an error
// or a log line, so a registry or proxy that echoes the key back (in an
// error body, a header, a redirect URL) shows up as "[REDACTED]".
package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults for Options' zero values.
const (
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxAttempts    = 5
	DefaultBaseBackoff    = 250 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultMaxRetryAfter  = 60 * time.Second
	DefaultMaxBodyBytes   = 64 << 20
	DefaultMaxJSONDepth   = 128
	// maxRedirects bounds same-host redirects.
	maxRedirects = 5
)

// Options configures a Client. The zero value is usable.
type Options struct {
	// APIKey is sent as X-API-Key on every request when non-empty. It is
	// never logged and never appears in errors: wherever text taken from
	// a response (an error body or message, a header, a redirect URL)
	// echoes it back, raw, URL-escaped, JSON-escaped or quoted, the
	// Client writes Redacted instead, and so does every line it logs.
	APIKey string
	// HTTPClient is used for requests; nil means a dedicated client with
	// dial, TLS and idle timeouts. Its CheckRedirect is replaced (on a
	// copy) by the Client's same-host-only policy.
	HTTPClient *http.Client
	// RequestTimeout bounds each attempt (connect to last body byte), in
	// addition to the caller's context. Default 30s.
	RequestTimeout time.Duration
	// MaxAttempts is the number of attempts for a retryable failure,
	// including the first. Default 5; 1 disables retries.
	MaxAttempts int
	// BaseBackoff and MaxBackoff shape the delay before retry n:
	// uniformly random in [0, min(MaxBackoff, BaseBackoff·2ⁿ⁻¹)] ("full
	// jitter"). Defaults 250ms and 10s.
	BaseBackoff, MaxBackoff time.Duration
	// MaxRetryAfter caps an honoured Retry-After header. Default 60s.
	MaxRetryAfter time.Duration
	// MaxBodyBytes bounds a response body (after decompression). Default
	// 64 MiB.
	MaxBodyBytes int64
	// MaxJSONDepth bounds the nesting of a response's JSON. Default 128.
	MaxJSONDepth int
	// Version is sent as User-Agent "noether-mirror/<Version>" and as
	// X-Noether-Client-Version. Default "dev".
	Version string
	// Logger receives debug lines per attempt and warnings per retry,
	// with the API key redacted; nil discards them.
	Logger *slog.Logger
	// Sleep waits between attempts; nil means a real timer that returns
	// ctx.Err() early when ctx is done. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Client talks to one noether registry. It is safe for concurrent use and
// holds no per-request state; create one per registry and reuse it.
type Client struct {
	base          *url.URL
	baseStr       string
	hc            *http.Client
	apiKey        string
	redact        redactor // the one place response text loses the key
	timeout       time.Duration
	maxAttempts   int
	baseBackoff   time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	maxBody       int64
	maxDepth      int
	userAgent     string
	version       string
	log           *slog.Logger
	sleep         func(context.Context, time.Duration) error
}

// New returns a Client for the registry at baseURL: http or https, with a
// host, and without userinfo, query or fragment. A trailing '/' is
// stripped; a path prefix is kept (https://host/api ⇒ https://host/api/stages).
func New(baseURL string, opts Options) (*Client, error) {
	red := newRedactor(opts.APIKey)
	shown := red.String(redactRaw(baseURL))
	u, err := url.Parse(strings.TrimSpace(baseURL))
	if err != nil {
		return nil, fmt.Errorf("registry URL %q is not a URL: %v", shown, red.Err(errors.Unwrap(err)))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("registry URL %q: scheme must be http or https", shown)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("registry URL %q has no host: write it like https://registry.example.org", shown)
	case u.User != nil:
		return nil, fmt.Errorf("registry URL %q contains a user name or password: pass the API key separately", shown)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("registry URL %q has a query string: remove it", shown)
	case u.Fragment != "" || strings.Contains(baseURL, "#"):
		return nil, fmt.Errorf("registry URL %q has a fragment: remove it", shown)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	c := &Client{
		base:          u,
		baseStr:       u.String(),
		apiKey:        opts.APIKey,
		redact:        red,
		timeout:       orDefault(opts.RequestTimeout, DefaultRequestTimeout),
		maxAttempts:   opts.MaxAttempts,
		baseBackoff:   orDefault(opts.BaseBackoff, DefaultBaseBackoff),
		maxBackoff:    orDefault(opts.MaxBackoff, DefaultMaxBackoff),
		maxRetryAfter: orDefault(opts.MaxRetryAfter, DefaultMaxRetryAfter),
		maxBody:       opts.MaxBodyBytes,
		maxDepth:      opts.MaxJSONDepth,
		version:       opts.Version,
		log:           opts.Logger,
		sleep:         opts.Sleep,
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.maxBody <= 0 {
		c.maxBody = DefaultMaxBodyBytes
	}
	if c.maxDepth <= 0 {
		c.maxDepth = DefaultMaxJSONDepth
	}
	if c.version == "" {
		c.version = "dev"
	}
	c.userAgent = "noether-mirror/" + c.version
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.redact.logger(c.log)
	if c.sleep == nil {
		c.sleep = sleepCtx
	}
	if opts.HTTPClient != nil {
		hc := *opts.HTTPClient
		c.hc = &hc
	} else {
		c.hc = &http.Client{Transport: defaultTransport()}
	}
	c.hc.CheckRedirect = checkRedirect
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// BaseURL returns the normalized registry URL (no trailing '/').
func (c *Client) BaseURL() string { return c.baseStr }

// Redact returns s with the Client's API key, in every spelling the
// Client redacts from its own errors and logs, replaced by Redacted. It is
// for callers that put other text taken from a response (a stage's decode
// error, say) into errors or log lines. Without a key it returns s.
func (c *Client) Redact(s string) string { return c.redact.String(s) }

// RedactError is err when its text holds no spelling of the client's API
// key, and otherwise an error with the redacted text that still matches,
// with errors.Is, the context and network sentinels err matched and those
// of keep (say the caller's own sentinels), but no longer unwraps to err.
func (c *Client) RedactError(err error, keep ...error) error { return c.redact.Err(err, keep...) }

func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// errRedirect marks a redirect the Client refused.
var errRedirect = errors.New("redirect refused")

// checkRedirect follows at most maxRedirects redirects, all to the
// original scheme and host: the X-API-Key header must never reach another
// host, and an https registry must not be downgraded to http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("%w: the registry redirected to %s://%s, another host or scheme; the client never follows such redirects so that the API key stays with the registry: use the final URL as the registry URL if you trust it",
			errRedirect, req.URL.Scheme, req.URL.Host)
	}
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", errRedirect, maxRedirects)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// request describes one logical operation.
type request struct {
	op     string
	method string
	path   string // escaped, starts with '/'
	query  string // encoded, without '?'
	body   []byte
	// idempotent requests are retried after any retryable failure; the
	// others only when the server certainly did not act on them.
	idempotent bool
	// accept is the Accept header; "" means application/json.
	accept string
	// newWalker, if set, is called once per response for a walkResult
	// for decodeEnvelope.
	newWalker func() func(p []byte, at int) int
}

// do runs req with retries and returns the envelope's result.
func (c *Client) do(ctx context.Context, req request) ([]byte, error) {
	u := c.baseStr + req.path
	if req.query != "" {
		u += "?" + req.query
	}
	var res []byte
	if e := c.retry(ctx, req, func() (*Error, time.Duration, bool) {
		r, e, retryAfter, sent := c.attempt(ctx, req, u)
		res = r
		return e, retryAfter, sent
	}); e != nil {
		return nil, e
	}
	return res, nil
}

// retry makes attempts of req until one succeeds (nil), one fails for
// good, or MaxAttempts is reached, backing off between them (honouring
// Retry-After). attempt reports its failure, the delay the server asked
// for, and whether the request may have reached the server.
func (c *Client) retry(ctx context.Context, req request, attempt func() (e *Error, retryAfter time.Duration, sent bool)) *Error {
	for n := 1; ; n++ {
		e, retryAfter, sent := attempt()
		if e == nil {
			return nil
		}
		c.redact.seal(e)
		e.Attempts = n
		if ctx.Err() != nil {
			return c.cancelled(ctx, e)
		}
		if !e.Retryable || n >= c.maxAttempts {
			return e
		}
		if !req.idempotent && sent && e.Status != http.StatusTooManyRequests && e.Status != http.StatusServiceUnavailable {
			// The server may have acted on it: do not repeat it.
			return e
		}
		d := c.backoff(n)
		if retryAfter > 0 {
			d = min(retryAfter, c.maxRetryAfter)
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "registry request failed; retrying",
			slog.String("op", req.op), slog.String("url", e.URL), slog.Int("attempt", n),
			slog.Duration("delay", d), slog.String("error", e.Error()))
		if err := c.sleep(ctx, d); err != nil {
			return c.cancelled(ctx, e)
		}
	}
}

// cancelled turns the last failure into "gave up because ctx is done".
func (c *Client) cancelled(ctx context.Context, e *Error) *Error {
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled
	}
	if e.Err != nil && !errors.Is(e.Err, cause) {
		e.Err = fmt.Errorf("%w (gave up: %w)", e.Err, cause)
	} else if e.Err == nil {
		e.Err = fmt.Errorf("gave up: %w", cause)
	}
	e.Retryable = false
	return e
}

// backoff returns the full-jitter delay before retry number attempt.
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.baseBackoff
	for i := 1; i < attempt && ceil < c.maxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, c.maxBackoff)
	return rand.N(ceil + 1)
}

// attempt makes one HTTP request. sent reports whether the request may
// have reached the server.
func (c *Client) attempt(ctx context.Context, req request, u string) (res []byte, e *Error, retryAfter time.Duration, sent bool) {
	e = &Error{Op: req.op, Method: req.method, URL: redactURL(u)}
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var wrote atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
	})
	hreq, err := c.newRequest(actx, req, u)
	if err != nil {
		e.kinds, e.Err = []error{ErrBadRequest}, err
		return nil, e, 0, false
	}
	start := time.Now()
	resp, err := c.hc.Do(hreq)
	if err != nil {
		c.transportError(ctx, actx, e, err)
		return nil, e, 0, wrote.Load()
	}
	defer resp.Body.Close()
	e.Status = resp.StatusCode
	ct := resp.Header.Get("Content-Type")
	if resp.ContentLength > c.maxBody {
		e.kinds = []error{ErrBadResponse}
		e.Err = fmt.Errorf("response is %d bytes (Content-Length), over the %d-byte limit", resp.ContentLength, c.maxBody)
		return nil, e, 0, true
	}
	raw, err := readBody(io.LimitReader(resp.Body, c.maxBody+1), resp.ContentLength, c.maxBody)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			e.kinds, e.Err = []error{ErrUnreachable}, err
		case actx.Err() != nil:
			e.kinds, e.Retryable = []error{ErrUnreachable}, true
			e.Err = fmt.Errorf("timed out after %s reading the response body (%d bytes read)", c.timeout, len(raw))
		default:
			e.kinds, e.Retryable = []error{ErrBadResponse}, true
			e.Err = fmt.Errorf("response body cut off after %d bytes (Content-Length %d): %v", len(raw), resp.ContentLength, err)
		}
		return nil, e, 0, true
	}
	if int64(len(raw)) > c.maxBody {
		e.kinds = []error{ErrBadResponse}
		e.Err = fmt.Errorf("response is over the %d-byte limit", c.maxBody)
		return nil, e, 0, true
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "registry request",
		slog.String("op", req.op), slog.String("method", req.method), slog.String("url", e.URL),
		slog.Int("status", resp.StatusCode), slog.Int("bytes", len(raw)), slog.Duration("took", time.Since(start)))
	var walk func(p []byte, at int) int
	if req.newWalker != nil {
		walk = req.newWalker()
	}
	result, re := decodeEnvelope(resp.StatusCode, ct, raw, c.maxDepth, walk)
	if re == nil {
		return result, nil, 0, true
	}
	e.Retryable, e.kinds = re.retryable, re.kinds
	e.Code, e.Message, e.Err = re.text(c.redact)
	if e.Retryable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return nil, e, retryAfter, true
}

// newRequest builds the HTTP request of req at u, with the Client's
// headers (and the API key).
func (c *Client) newRequest(ctx context.Context, req request, u string) (*http.Request, error) {
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("cannot build request: %v", err)
	}
	hreq.Header.Set("User-Agent", c.userAgent)
	hreq.Header.Set("X-Noether-Client-Version", c.version)
	accept := req.accept
	if accept == "" {
		accept = "application/json"
	}
	hreq.Header.Set("Accept", accept)
	if req.body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if c.apiKey != "" {
		hreq.Header.Set("X-API-Key", c.apiKey)
	}
	return hreq, nil
}

// transportError fills e for a failure without a response.
func (c *Client) transportError(ctx, actx context.Context, e *Error, err error) {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is already in e
	}
	switch {
	case errors.Is(err, errRedirect):
		e.kinds, e.Err = []error{ErrBadResponse}, err
	case ctx.Err() != nil:
		e.kinds, e.Err = []error{ErrUnreachable}, err
	case actx.Err() != nil:
		e.kinds, e.Retryable = []error{ErrUnreachable}, true
		e.Err = fmt.Errorf("no response within the %s request timeout", c.timeout)
	default:
		e.kinds, e.Retryable = []error{ErrUnreachable}, true
		e.Err = err
	}
}

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP-date; 0
// when absent or unparseable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// secretParam reports whether a query parameter name may carry a secret.
func secretParam(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"key", "token", "secret", "password", "auth", "sig"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// redactURL removes userinfo and secret-looking query values.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if secretParam(k) {
				q[k] = []string{"REDACTED"}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// redactRaw redacts a URL the user gave us, even an unparseable one.
func redactRaw(s string) string {
	if u, err := url.Parse(s); err == nil {
		if u.User != nil {
			u.User = url.User("REDACTED")
		}
		if u.RawQuery != "" || u.Fragment != "" {
			u.RawQuery, u.Fragment = "", ""
			return u.String() + "?…"
		}
		return u.String()
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "…@" + s[i+1:]
	}
	return s
}

// readBody reads r to EOF like io.ReadAll, but sizes its buffer from the
// Content-Length when the server sent a plausible one: a 1 MB page is then
// one allocation instead of a doubling chain whose garbage doubles a
// sync's heap.
func readBody(r io.Reader, contentLength, limit int64) ([]byte, error) {
	size := int64(512)
	if contentLength > 0 && contentLength <= limit {
		size = contentLength + 1 // room for the read that reports EOF
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
