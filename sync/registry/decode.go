package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/noether-mirror/mirror/store"
)

// respError is a decoding or envelope failure before Op and URL are known.
// It holds what came back raw: Client turns it into text through its
// redactor (respError.text), so that nothing taken from a response reaches
// an error before the API key is taken out of it.
type respError struct {
	status        int
	code, message string // from the envelope's error object, raw
	retryable     bool
	kinds         []error
	// For a response that is not a usable envelope: what is wrong with it
	// (our words), and the content type and body that came back.
	what        string
	contentType string
	body        []byte
}

// badResponse builds an ErrBadResponse failure describing what came back.
// A 5xx status also matches ErrServer and stays retryable.
func badResponse(status int, contentType string, body []byte, format string, args ...any) *respError {
	re := &respError{status: status, kinds: []error{ErrBadResponse},
		what: fmt.Sprintf(format, args...), contentType: contentType, body: body}
	if status >= 500 && status <= 599 {
		re.kinds = append(re.kinds, ErrServer)
		re.retryable = true
	}
	if status == http.StatusTooManyRequests {
		re.kinds = append(re.kinds, ErrRateLimited)
		re.retryable = true
	}
	if status == http.StatusUnauthorized || status == http.StatusForbidden {
		re.kinds = append(re.kinds, ErrUnauthorized)
	}
	return re
}

// Bounds on how much response text goes into an error.
const (
	snippetLen = 100  // of an unexpected body
	codeLen    = 100  // of an envelope's error code
	messageLen = 2000 // of an envelope's error message
)

// text renders re's response-derived parts for an Error: the envelope's
// code and message, and for a bad response a cause quoting the start of
// the body. Everything passes r before it is cut short or sanitized, and
// again after (sanitizing can spell the key: invalid UTF-8 becomes '?',
// control characters spaces).
func (re *respError) text(r redactor) (code, message string, err error) {
	code = r.String(sanitize([]byte(r.Prefix([]byte(re.code), codeLen)), codeLen))
	message = r.String(sanitize([]byte(r.Prefix([]byte(re.message), messageLen)), messageLen))
	if re.what != "" {
		desc := r.String(describeBody(re.status, r.String(re.contentType), len(re.body), r.Prefix(re.body, snippetLen)))
		err = fmt.Errorf("%s; got %s", re.what, desc)
	}
	return code, message, err
}

// describeBody summarises a response for an error message: status,
// content type, size and the first bytes of the body (start, already
// redacted), sanitized.
func describeBody(status int, contentType string, size int, start string) string {
	var b strings.Builder
	if status != 0 {
		fmt.Fprintf(&b, "HTTP %d", status)
	}
	if contentType == "" {
		contentType = "no content type"
	}
	fmt.Fprintf(&b, " (%s, %d bytes)", sanitize([]byte(contentType), 60), size)
	if start != "" {
		fmt.Fprintf(&b, " starting %q", sanitize([]byte(start), snippetLen))
	}
	return strings.TrimSpace(b.String())
}

// sanitize returns at most n bytes of p as printable text: valid UTF-8,
// control characters replaced by spaces, runs of whitespace collapsed.
func sanitize(p []byte, n int) string {
	if len(p) > n {
		p = p[:n]
	}
	var b strings.Builder
	space := false
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		p = p[size:]
		if r == utf8.RuneError && size <= 1 {
			r = '?'
		}
		if r < 0x20 || r == 0x7f || r == ' ' || (r >= 0x80 && r < 0xa0) {
			if !space {
				b.WriteByte(' ')
			}
			space = true
			continue
		}
		space = false
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// envelope is the registry's response wrapper (spec §4.1).
type envelope struct {
	OK     json.RawMessage `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  json.RawMessage `json:"error"`
}

// decodeEnvelope checks a complete response body and returns the result
// payload ("null" when absent) of a successful envelope. The HTTP status
// decides success together with "ok": only a 2xx with ok:true succeeds.
// It never panics.
//
// walkResult, if not nil, walks the "result" value (see objectWalk), so a
// caller can split it in the same pass; nil skips it with valueEnd.
func decodeEnvelope(status int, contentType string, body []byte, maxDepth int, walkResult func(p []byte, at int) int) (json.RawMessage, *respError) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		if status == http.StatusNoContent {
			return nil, badResponse(status, contentType, body, "empty 204 response where a JSON envelope was expected")
		}
		return nil, badResponse(status, contentType, body, "empty response where a JSON envelope was expected")
	}
	if trimmed[0] != '{' {
		return nil, badResponse(status, contentType, body, "response is not a JSON object")
	}
	// One validating pass (grammar and depth): store's scanner accepts
	// exactly what encoding/json.Valid does, several times faster, which
	// matters on 1 MB pages.
	if err := store.ValidJSON(trimmed, maxDepth); err != nil {
		if errors.Is(err, store.ErrTooDeep) {
			return nil, badResponse(status, contentType, body, "response JSON nests deeper than %d levels", maxDepth)
		}
		return nil, badResponse(status, contentType, body, "response is not valid JSON (truncated or not JSON): %v", err)
	}
	var env envelope
	end, err := objectWalk(trimmed, 0, func(key string, at int) int {
		var end int
		if key == "result" && walkResult != nil {
			end = walkResult(trimmed, at)
		} else {
			end = valueEnd(trimmed, at)
		}
		switch value := trimmed[at:max(end, at)]; key { // the last duplicate wins, as with encoding/json
		case "ok":
			env.OK = value
		case "result":
			env.Result = value
		case "error":
			env.Error = value
		}
		return end
	})
	if err == nil && end != len(trimmed) {
		err = errShape
	}
	if err != nil {
		return nil, badResponse(status, contentType, body, "response is not a registry envelope: %v", err)
	}
	var ok bool
	if len(env.OK) == 0 || json.Unmarshal(env.OK, &ok) != nil {
		return nil, badResponse(status, contentType, body, `response has no boolean "ok": not a registry envelope`)
	}
	success := status >= 200 && status <= 299
	if ok && success {
		if len(env.Result) == 0 {
			return json.RawMessage("null"), nil
		}
		return env.Result, nil
	}
	code, message := "UNKNOWN", "unknown error"
	if ok {
		// ok:true on a non-2xx status: trust the status, which proxies and
		// the server's error paths set.
		code, message = "", fmt.Sprintf(`envelope says "ok":true but the status is %d`, status)
	} else {
		var eo struct {
			Code    json.RawMessage `json:"code"`
			Message json.RawMessage `json:"message"`
		}
		if len(env.Error) > 0 && json.Unmarshal(env.Error, &eo) == nil {
			var s string
			if json.Unmarshal(eo.Code, &s) == nil && s != "" {
				code = s
			}
			if json.Unmarshal(eo.Message, &s) == nil && s != "" {
				message = s
			}
		}
	}
	kinds, retryable := classify(status, code)
	if status >= 300 && status <= 399 {
		kinds = append(kinds, ErrBadResponse)
	}
	return nil, &respError{status: status, code: code, message: message, kinds: kinds, retryable: retryable}
}

// Page is one page of GET /stages.
type Page struct {
	// Stages holds each stage's exact bytes, in the order served (they
	// share one buffer, the response body). They are not decoded: the
	// caller decodes (and quarantines) each one.
	Stages []json.RawMessage
	// Total is the registry's "total" when HasTotal.
	Total int
	// HasTotal is false when "total" is missing or not an unsigned JSON
	// integer (a float, a string, negative, too large); what to do then is
	// the caller's decision.
	HasTotal bool
}

// decodePage parses a /stages result: {"stages":[…],"total":N}. Other keys
// are ignored. result must be valid JSON (decodeEnvelope checked it); the
// stages are subslices of it.
func decodePage(result json.RawMessage) (Page, error) {
	result = bytes.TrimSpace(result)
	var ps pageSplit
	if len(result) > 0 {
		ps.walk(result, 0)
	}
	return ps.page()
}

// pageSplit splits a /stages result while decodeEnvelope walks the
// envelope (its walk is a walkResult), so the stages, most of a page's
// bytes, are walked once after validation rather than three times.
type pageSplit struct {
	result json.RawMessage
	stages json.RawMessage   // the last "stages" member
	elems  []json.RawMessage // its elements, when it is an array
	total  json.RawMessage   // the last "total" member
	err    error
}

// walk splits the result value at p[at] (valid JSON) and returns the
// offset just past it. Each call starts afresh: of a duplicated "result",
// the last wins.
func (ps *pageSplit) walk(p []byte, at int) int {
	*ps = pageSplit{}
	if p[at] != '{' {
		end := valueEnd(p, at)
		ps.result = p[at:end]
		return end
	}
	end, err := objectWalk(p, at, func(key string, vat int) int {
		switch key {
		case "stages":
			if p[vat] == '[' {
				els, end, err := arrayWalk(p, vat)
				if err != nil {
					return 0
				}
				ps.stages, ps.elems = p[vat:end], els
				return end
			}
			end := valueEnd(p, vat)
			ps.stages, ps.elems = p[vat:max(end, vat)], nil
			return end
		case "total":
			end := valueEnd(p, vat)
			ps.total = p[vat:max(end, vat)]
			return end
		}
		return valueEnd(p, vat)
	})
	if err != nil {
		ps.err = err
		end = valueEnd(p, at)
	}
	ps.result = p[at:end]
	return end
}

// page checks what walk found.
func (ps *pageSplit) page() (Page, error) {
	if !isObject(ps.result) {
		return Page{}, fmt.Errorf("result is %s, want an object with \"stages\"", jsonKind(ps.result))
	}
	if ps.err != nil {
		return Page{}, fmt.Errorf("result is not a stage page: %v", ps.err)
	}
	if len(ps.stages) == 0 || ps.stages[0] != '[' {
		return Page{}, fmt.Errorf(`result "stages" is %s, want an array`, jsonKind(ps.stages))
	}
	p := Page{Stages: ps.elems}
	p.Total, p.HasTotal = unsignedInt(ps.total)
	return p, nil
}

// unsignedInt reads raw as an unsigned JSON integer that fits an int.
func unsignedInt(raw json.RawMessage) (int, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || len(t) > 19 {
		return 0, false
	}
	for _, c := range t {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	if len(t) > 1 && t[0] == '0' {
		return 0, false // not a JSON number
	}
	n, err := strconv.ParseUint(string(t), 10, 64)
	if err != nil || n > math.MaxInt {
		return 0, false
	}
	return int(n), true
}

// Health is the result of GET /health.
type Health struct {
	// Status is the "status" string ("ok"), or empty when absent.
	Status string
	// Stats holds store.total_stages, by_lifecycle and by_effect; values
	// that are not unsigned integers are dropped, as noether's client does.
	Stats store.Stats
	// HasStore reports whether the result had a "store" object.
	HasStore bool
	// Raw is the result object as received.
	Raw json.RawMessage
}

// decodeHealth parses a /health result.
func decodeHealth(result json.RawMessage) (Health, error) {
	if !isObject(result) {
		return Health{}, fmt.Errorf("result is %s, want an object", jsonKind(result))
	}
	var r struct {
		Status json.RawMessage `json:"status"`
		Store  json.RawMessage `json:"store"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return Health{}, fmt.Errorf("result is not a health object: %v", err)
	}
	h := Health{Raw: result}
	_ = json.Unmarshal(r.Status, &h.Status) // a non-string status stays ""
	if !isObject(r.Store) {
		return h, nil
	}
	var st struct {
		Total       json.RawMessage            `json:"total_stages"`
		ByLifecycle map[string]json.RawMessage `json:"by_lifecycle"`
		ByEffect    map[string]json.RawMessage `json:"by_effect"`
	}
	if err := json.Unmarshal(r.Store, &st); err != nil {
		// Wrong types inside "store": keep what noether would, which is
		// nothing usable.
		return h, nil
	}
	h.HasStore = true
	h.Stats.Total, _ = unsignedInt(st.Total)
	h.Stats.ByLifecycle = counts(st.ByLifecycle)
	h.Stats.ByEffect = counts(st.ByEffect)
	return h, nil
}

func counts(m map[string]json.RawMessage) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		if n, ok := unsignedInt(v); ok {
			out[k] = n
		}
	}
	return out
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// jsonKind names the JSON type of raw for messages.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "missing"
	}
	return store.JSONKind(t)
}
