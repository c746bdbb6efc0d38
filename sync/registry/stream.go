package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// GetResult GETs path, an endpoint beside the registry API (a
// noether-mirror's /mirror/v1/, say), and returns its envelope's result,
// with every guarantee of the registry's own requests: retries, size and
// depth limits, classified errors, the API key redacted. op names the
// operation in errors. path must start with '/' and is appended to the
// base URL; query may be nil.
func (c *Client) GetResult(ctx context.Context, op, path string, query url.Values) (json.RawMessage, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, c.invalidArg(op, "path %q must start with '/'", path)
	}
	return c.do(ctx, request{op: op, method: http.MethodGet, path: path, query: query.Encode(), idempotent: true})
}

// Stream GETs path and returns its body as it arrives, for answers too
// large to hold in memory (a change feed), with accept as the Accept
// header. Failures before the body are retried as every request's are,
// and an error status is decoded from the registry's envelope (a 404
// wraps store.ErrNotFound). The body is not bounded by MaxBodyBytes: the
// caller bounds what it reads. A body that makes no progress for
// RequestTimeout is cut off (the read fails), so a stalled upstream never
// hangs a sync. The caller must close the body.
func (c *Client) Stream(ctx context.Context, op, path, accept string) (io.ReadCloser, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, c.invalidArg(op, "path %q must start with '/'", path)
	}
	req := request{op: op, method: http.MethodGet, path: path, accept: accept, idempotent: true}
	u := c.baseStr + path
	var body io.ReadCloser
	if e := c.retry(ctx, req, func() (*Error, time.Duration, bool) {
		b, e, retryAfter := c.attemptStream(ctx, req, u)
		body = b
		return e, retryAfter, true
	}); e != nil {
		return nil, e
	}
	return body, nil
}

// attemptStream makes one streaming request: the body of a 2xx answer,
// or the error.
func (c *Client) attemptStream(ctx context.Context, req request, u string) (io.ReadCloser, *Error, time.Duration) {
	e := &Error{Op: req.op, Method: req.method, URL: redactURL(u)}
	actx, cancel := context.WithCancel(ctx)
	idle := newIdleTimer(c.timeout, cancel)
	hreq, err := c.newRequest(actx, req, u)
	if err != nil {
		idle.stop()
		e.kinds, e.Err = []error{ErrBadRequest}, err
		return nil, e, 0
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		idle.stop()
		if idle.fired() {
			e.kinds, e.Retryable = []error{ErrUnreachable}, true
			e.Err = fmt.Errorf("no response within the %s request timeout", c.timeout)
			return nil, e, 0
		}
		c.transportError(ctx, actx, e, err)
		return nil, e, 0
	}
	e.Status = resp.StatusCode
	if resp.StatusCode/100 == 2 {
		idle.reset()
		return &idleBody{rc: resp.Body, idle: idle, timeout: c.timeout}, nil, 0
	}
	defer idle.stop()
	defer resp.Body.Close()
	raw, err := readBody(io.LimitReader(resp.Body, c.maxBody+1), resp.ContentLength, c.maxBody)
	if err != nil || int64(len(raw)) > c.maxBody {
		e.kinds, e.Retryable = []error{ErrBadResponse}, true
		e.Err = fmt.Errorf("error response (HTTP %d) unreadable or over the %d-byte limit", resp.StatusCode, c.maxBody)
		return nil, e, 0
	}
	_, re := decodeEnvelope(resp.StatusCode, resp.Header.Get("Content-Type"), raw, c.maxDepth, nil)
	if re == nil { // a 3xx or 1xx the transport did not follow
		e.kinds = []error{ErrBadResponse}
		e.Err = fmt.Errorf("unexpected HTTP %d for a stream", resp.StatusCode)
		return nil, e, 0
	}
	e.Retryable, e.kinds = re.retryable, re.kinds
	e.Code, e.Message, e.Err = re.text(c.redact)
	var retryAfter time.Duration
	if e.Retryable {
		retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return nil, e, retryAfter
}

// ErrStalled: a streamed body made no progress for the request timeout
// and was cut off.
var ErrStalled = errors.New("stream stalled")

// idleTimer cancels a request that makes no progress for its timeout.
type idleTimer struct {
	t     *time.Timer
	d     time.Duration
	fire  atomic.Bool
	once  sync.Once
	close func()
}

func newIdleTimer(d time.Duration, cancel context.CancelFunc) *idleTimer {
	it := &idleTimer{d: d, close: cancel}
	it.t = time.AfterFunc(d, func() { it.fire.Store(true); cancel() })
	return it
}

func (it *idleTimer) reset()      { it.t.Reset(it.d) }
func (it *idleTimer) fired() bool { return it.fire.Load() }
func (it *idleTimer) stop()       { it.once.Do(func() { it.t.Stop(); it.close() }) }

// idleBody is a streamed body whose every read that makes progress
// restarts the idle timer.
type idleBody struct {
	rc      io.ReadCloser
	idle    *idleTimer
	timeout time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.idle.reset()
	}
	if err != nil && err != io.EOF && b.idle.fired() {
		err = fmt.Errorf("%w: no data for %s: %v", ErrStalled, b.timeout, err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.idle.stop()
	return b.rc.Close()
}
