package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/noether-mirror/mirror/store"
)

// Sentinel errors. Every error returned by a Client method is an *Error
// whose Unwrap exposes one or more of these (and of store.ErrNotFound,
// store.ErrAlreadyExists, store.ErrInvalidTransition,
// store.ErrInvalidSuccessor), so callers test with errors.Is.
var (
	// ErrUnauthorized: the registry answered 401 or 403, or the error code
	// UNAUTHORIZED/FORBIDDEN. The API key is missing or wrong.
	ErrUnauthorized = errors.New("registry refused the request as unauthorized")
	// ErrUnreachable: no HTTP response at all (DNS failure, connection
	// refused or reset, TLS failure, per-request timeout).
	ErrUnreachable = errors.New("registry unreachable")
	// ErrRateLimited: the registry answered 429 Too Many Requests.
	ErrRateLimited = errors.New("registry rate limit hit")
	// ErrServer: the registry (or a proxy in front of it) answered 5xx.
	ErrServer = errors.New("registry server error")
	// ErrBadResponse: the response is not a well-formed registry envelope:
	// not JSON, empty, truncated, too large, nested too deep, the wrong
	// shape, or a refused cross-host redirect.
	ErrBadResponse = errors.New("bad response from registry")
	// ErrBadRequest: the registry rejected the request with a 4xx other
	// than 401, 403, 404, 409 and 429 (or with ok:false and a 2xx status),
	// or the Client refused to send it (an invalid id or lifecycle).
	ErrBadRequest = errors.New("registry rejected the request")
)

// Error describes one failed registry operation. It never contains the API
// key: URL is the request URL without userinfo or secret-looking query
// parameters, and every part taken from the response (Code, Message, the
// body quoted in Err, a redirect's Location) has the key, in any of the
// spellings a server may echo it in, replaced by Redacted. A cause whose
// text held the key is replaced by one with the redacted text that still
// matches context.Canceled, context.DeadlineExceeded and the like.
type Error struct {
	// Op is the operation: "list stages", "get stage", "put stage",
	// "update lifecycle", "delete stage", "health".
	Op string
	// Method is the HTTP method.
	Method string
	// URL is the redacted request URL.
	URL string
	// Status is the HTTP status, or 0 when no response arrived.
	Status int
	// Code and Message come from the envelope's error object, when there
	// was one (Code defaults to UNKNOWN as noether's client does).
	Code, Message string
	// Retryable reports whether retrying the same request later could
	// succeed (transport failures, 408, 429, 5xx, a truncated body).
	Retryable bool
	// Attempts is the number of HTTP attempts made.
	Attempts int
	// Err is the underlying cause (a transport error, a decode error,
	// context.Canceled), or nil.
	Err error

	kinds []error // sentinels this error matches
}

// Error says what failed, against which URL, and whether a retry could
// help.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("registry: ")
	b.WriteString(e.Op)
	if e.URL != "" {
		b.WriteString(" (")
		if e.Method != "" {
			b.WriteString(e.Method)
			b.WriteByte(' ')
		}
		b.WriteString(e.URL)
		b.WriteByte(')')
	}
	b.WriteString(": ")
	var parts []string
	if e.Status != 0 {
		parts = append(parts, fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status)))
	}
	if e.Code != "" || e.Message != "" {
		parts = append(parts, e.Code+": "+e.Message)
	}
	if e.Err != nil {
		parts = append(parts, e.Err.Error())
	}
	if len(parts) == 0 && len(e.kinds) > 0 {
		parts = append(parts, e.kinds[0].Error())
	}
	b.WriteString(strings.Join(parts, ": "))
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	if e.Retryable {
		b.WriteString("; temporary, retrying later may help")
	} else {
		b.WriteString("; retrying will not help")
	}
	if h := e.hint(); h != "" {
		b.WriteString("; ")
		b.WriteString(h)
	}
	return b.String()
}

// hint suggests a fix for the most common failures.
func (e *Error) hint() string {
	switch {
	case e.is(ErrUnauthorized):
		return "check the registry API key (it is sent as X-API-Key)"
	case e.is(ErrUnreachable):
		return "check the registry URL and the network"
	case e.is(ErrBadResponse) && !e.is(ErrServer):
		return "check that the URL points at a noether registry and not at a proxy or web page"
	}
	return ""
}

func (e *Error) is(target error) bool {
	for _, k := range e.kinds {
		if k == target {
			return true
		}
	}
	return false
}

// Unwrap exposes the sentinels this error matches and the cause, so that
// errors.Is(err, store.ErrNotFound), errors.Is(err, ErrServer),
// errors.Is(err, context.Canceled) and so on work.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, len(e.kinds)+1)
	out = append(out, e.kinds...)
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// classify maps an HTTP status and an envelope error code to sentinels
// and retryability. Status decides the class; the code refines it. It
// never looks at the message text.
func classify(status int, code string) (kinds []error, retryable bool) {
	add := func(k error) {
		for _, have := range kinds {
			if have == k {
				return
			}
		}
		kinds = append(kinds, k)
	}
	specific := false
	switch code {
	case "NOT_FOUND":
		add(store.ErrNotFound)
		specific = true
	case "ALREADY_EXISTS":
		add(store.ErrAlreadyExists)
		specific = true
	case "INVALID_TRANSITION":
		add(store.ErrInvalidTransition)
	case "INVALID_SUCCESSOR":
		add(store.ErrInvalidSuccessor)
	case "UNAUTHORIZED", "FORBIDDEN":
		add(ErrUnauthorized)
		specific = true
	}
	switch {
	case status == http.StatusNotFound:
		add(store.ErrNotFound)
	case status == http.StatusConflict:
		if code != "INVALID_TRANSITION" && code != "INVALID_SUCCESSOR" {
			add(store.ErrAlreadyExists)
		} else {
			add(ErrBadRequest)
		}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		add(ErrUnauthorized)
	case status == http.StatusTooManyRequests:
		add(ErrRateLimited)
		retryable = true
	case status == http.StatusRequestTimeout:
		add(ErrBadRequest)
		retryable = true
	case status >= 500 && status <= 599:
		add(ErrServer)
		retryable = true
	case status >= 400 && status <= 499:
		add(ErrBadRequest)
	default:
		// ok:false with a 1xx/2xx/3xx status: the registry reported an error
		// in the envelope only.
		if !specific {
			add(ErrBadRequest)
		}
	}
	return kinds, retryable
}
