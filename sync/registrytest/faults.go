package registrytest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// faults holds the fault switches; guarded by Handler.mu.
type faults struct {
	failN, failStatus int
	rateN             int
	retryAfter        time.Duration
	htmlN             int
	hangN             int
	truncN            int
	echoN, echoStatus int
	latency           time.Duration
	slowPages         time.Duration
}

// plan is what the faults do to one request.
type plan struct {
	delay      time.Duration
	hang       bool
	failStatus int
	rateLimit  bool
	retryAfter time.Duration
	html       bool
	truncate   bool
	echoStatus int
}

// take consumes at most one counted fault for this request, in the order
// hang, fail, rate limit, HTML, truncate, echo key; latency always applies.
func (f *faults) take(isPage bool) plan {
	p := plan{delay: f.latency}
	if isPage {
		p.delay += f.slowPages
	}
	switch {
	case f.hangN > 0:
		f.hangN--
		p.hang = true
	case f.failN > 0:
		f.failN--
		p.failStatus = f.failStatus
	case f.rateN > 0:
		f.rateN--
		p.rateLimit, p.retryAfter = true, f.retryAfter
	case f.htmlN > 0:
		f.htmlN--
		p.html = true
	case f.truncN > 0:
		f.truncN--
		p.truncate = true
	case f.echoN > 0:
		f.echoN--
		p.echoStatus = f.echoStatus
	}
	return p
}

// FailNext makes the next n requests answer status (a 5xx; anything
// outside 500–599 becomes 500) with a JSON error envelope, code
// STORE_ERROR. n ≤ 0 clears it.
func (h *Handler) FailNext(n int, status int) {
	if status < 500 || status > 599 {
		status = http.StatusInternalServerError
	}
	h.mu.Lock()
	h.faults.failN, h.faults.failStatus = max(n, 0), status
	h.mu.Unlock()
}

// RateLimitNext makes the next n requests answer 429 with code
// RATE_LIMITED and Retry-After: retryAfter in whole seconds (rounded up;
// 0 sends "0"). n ≤ 0 clears it.
func (h *Handler) RateLimitNext(n int, retryAfter time.Duration) {
	h.mu.Lock()
	h.faults.rateN, h.faults.retryAfter = max(n, 0), retryAfter
	h.mu.Unlock()
}

// HTMLNext makes the next n requests answer 502 with an nginx-style HTML
// page (Content-Type text/html), as a proxy in front of a dead registry
// does. n ≤ 0 clears it.
func (h *Handler) HTMLNext(n int) {
	h.mu.Lock()
	h.faults.htmlN = max(n, 0)
	h.mu.Unlock()
}

// HangNext makes the next n requests block, sending nothing, until the
// client gives up (its request context ends) or the handler is closed.
// n ≤ 0 clears it.
func (h *Handler) HangNext(n int) {
	h.mu.Lock()
	h.faults.hangN = max(n, 0)
	h.mu.Unlock()
}

// TruncateNext makes the next n requests send their normal status and a
// Content-Length for the whole body, then only the first half of the body
// (cut mid-JSON), then drop the connection. n ≤ 0 clears it.
func (h *Handler) TruncateNext(n int) {
	h.mu.Lock()
	h.faults.truncN = max(n, 0)
	h.mu.Unlock()
}

// EchoKeyNext makes the next n requests fail the way a misconfigured
// registry or proxy does that echoes the presented API key (the request's
// X-API-Key, "" without one) back: every answer carries it in a
// WWW-Authenticate and an X-Debug header, and, by status (anything outside
// 200–599 becomes 401):
//   - 3xx: a redirect to another host with the key in the Location's
//     query, and an HTML body quoting it;
//   - 2xx: a JSON envelope cut short (malformed JSON) whose message quotes
//     it;
//   - 4xx and 5xx: a JSON error envelope (UNAUTHORIZED for 401, FORBIDDEN
//     for 403, RATE_LIMITED for 429, STORE_ERROR for 5xx, BAD_REQUEST
//     otherwise) whose message quotes it.
//
// Messages quote the key raw, URL-query-escaped, URL-path-escaped and as
// an "Authorization: Bearer" header. n ≤ 0 clears it.
func (h *Handler) EchoKeyNext(n, status int) {
	if status < 200 || status > 599 {
		status = http.StatusUnauthorized
	}
	h.mu.Lock()
	h.faults.echoN, h.faults.echoStatus = max(n, 0), status
	h.mu.Unlock()
}

// EchoedKeyMessage is the text EchoKeyNext's answers quote key in.
func EchoedKeyMessage(key string) string {
	return "invalid API key " + key + " (query-escaped " + url.QueryEscape(key) + ", path-escaped " +
		url.PathEscape(key) + "); request had Authorization: Bearer " + key
}

// echoKey writes EchoKeyNext's answer.
func echoKey(w http.ResponseWriter, r *http.Request, status int) {
	key := r.Header.Get("X-API-Key")
	msg := EchoedKeyMessage(key)
	w.Header().Set("WWW-Authenticate", `Bearer realm="noether", error="invalid_token", error_description="invalid key `+key+`"`)
	w.Header().Set("X-Debug", "X-API-Key="+key+"; Authorization: Bearer "+key)
	switch {
	case status >= 300 && status <= 399:
		w.Header().Set("Location", "http://login.invalid/sso?key="+url.QueryEscape(key)+"&next="+url.PathEscape(key))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, "<html><body>Sign in again: "+msg+"</body></html>")
	case status <= 299:
		m, _ := json.Marshal(msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, `{"ok":false,"error":{"message":`+string(m)+`,"code":"UNAUTHORI`)
	default:
		writeError(w, status, echoCode(status), msg)
	}
}

// echoCode is the error code echoKey sends with status.
func echoCode(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case status == http.StatusForbidden:
		return "FORBIDDEN"
	case status == http.StatusTooManyRequests:
		return "RATE_LIMITED"
	case status >= 500:
		return "STORE_ERROR"
	}
	return "BAD_REQUEST"
}

// SetLatency delays every request by d before it is handled (0 turns it
// off). A delay ends early when the client gives up or the handler closes.
func (h *Handler) SetLatency(d time.Duration) {
	h.mu.Lock()
	h.faults.latency = max(d, 0)
	h.mu.Unlock()
}

// SlowPages delays every GET /stages request by d, on top of SetLatency.
func (h *Handler) SlowPages(d time.Duration) {
	h.mu.Lock()
	h.faults.slowPages = max(d, 0)
	h.mu.Unlock()
}

// bufferedWriter captures a response so that it can be cut short.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// truncateTo sends the captured status and headers with the full
// Content-Length, then half the body, then aborts the connection.
func (b *bufferedWriter) truncateTo(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	full := b.body.Bytes()
	w.Header().Set("Content-Length", strconv.Itoa(len(full)))
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	w.Write(full[:len(full)/2])
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	// net/http recovers this value silently and closes the connection.
	panic(http.ErrAbortHandler)
}
