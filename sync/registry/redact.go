package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Redacted is what a Client writes in place of its API key wherever the
// key turns up in text it reports: an error body, a header, a redirect
// URL, a log line.
const Redacted = "[REDACTED]"

// redactor replaces one API key, in every spelling a registry or a proxy
// may echo it back in, with Redacted. The zero value (no key) changes
// nothing. A key that is itself part of "[REDACTED]" (say "ACT") cannot
// be told apart from the replacement; any other key never survives.
type redactor struct {
	forms []string // distinct spellings, longest first
	rep   *strings.Replacer
}

// newRedactor returns a redactor for key; "" redacts nothing.
func newRedactor(key string) redactor {
	if key == "" {
		return redactor{}
	}
	forms := keyForms(key)
	args := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		args = append(args, f, Redacted)
	}
	return redactor{forms: forms, rep: strings.NewReplacer(args...)}
}

// keyForms lists the spellings of key that text from a response may hold:
// raw (also inside "Authorization: Bearer <key>"), URL-query-escaped and
// URL-path-escaped (with upper- and lower-case hex), JSON-escaped, Go-quoted
// (%q) and sanitized. Longest first, so a longer spelling wins over a
// shorter one starting at the same byte.
func keyForms(key string) []string {
	q, p := url.QueryEscape(key), url.PathEscape(key)
	forms := []string{key, q, p, lowerHex(q), lowerHex(p), jsonEscaped(key), quoted(key), sanitize([]byte(key), len(key))}
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	forms = slices.Compact(forms)
	return slices.DeleteFunc(forms, func(s string) bool { return s == "" })
}

// lowerHex rewrites the hex digits of %XX escapes in lower case, as some
// servers write them.
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lower(b[i+1]), lower(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'F' {
		return c + 'a' - 'A'
	}
	return c
}

// jsonEscaped is key as it appears inside a JSON string written by
// encoding/json (which escapes <, > and & too).
func jsonEscaped(key string) string {
	b, err := json.Marshal(key)
	if err != nil || len(b) < 2 {
		return ""
	}
	return string(b[1 : len(b)-1])
}

// quoted is key as it appears inside a %q-quoted Go string.
func quoted(key string) string {
	q := strconv.Quote(key)
	return q[1 : len(q)-1]
}

// String returns s with every spelling of the key replaced.
func (r redactor) String(s string) string {
	if r.rep == nil {
		return s
	}
	return r.rep.Replace(s)
}

// Prefix returns the redacted text of the start of p, at least n bytes of
// it when there are that many, without redacting (or copying) the rest:
// what an error quotes of a large body. It redacts before anything is
// cut, so a key straddling the cut never shows half of itself.
func (r redactor) Prefix(p []byte, n int) string {
	if r.rep == nil {
		return string(p[:min(len(p), n)])
	}
	var b strings.Builder
	for i := 0; i < len(p) && b.Len() < n; {
		if f := r.match(p[i:]); f > 0 {
			b.WriteString(Redacted)
			i += f
			continue
		}
		b.WriteByte(p[i])
		i++
	}
	return b.String()
}

// match returns the length of the longest spelling of the key p starts
// with, or 0.
func (r redactor) match(p []byte) int {
	for _, f := range r.forms {
		if len(p) >= len(f) && string(p[:len(f)]) == f {
			return len(f)
		}
	}
	return 0
}

// Err returns err unchanged when its text holds no spelling of the key,
// and otherwise an error with the redacted text that unwraps only to the
// well-known sentinels, and those of keep, that err matched (not to err
// itself, whose text or fields hold the key), so that errors.Is keeps
// working.
func (r redactor) Err(err error, keep ...error) error {
	if err == nil || r.rep == nil {
		return err
	}
	msg := err.Error()
	red := r.rep.Replace(msg)
	if red == msg {
		return err
	}
	re := &redactedError{msg: red}
	for _, s := range slices.Concat(keptSentinels, keep) {
		if errors.Is(err, s) {
			re.is = append(re.is, s)
		}
	}
	return re
}

// keptSentinels are the causes a redacted error still matches.
var keptSentinels = []error{
	context.Canceled, context.DeadlineExceeded, os.ErrDeadlineExceeded,
	io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, errRedirect,
	syscall.ECONNREFUSED, syscall.ECONNRESET,
}

// redactedError is an error whose original text held the API key.
type redactedError struct {
	msg string
	is  []error
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.is }

// seal redacts every response-derived part of e in place: the URL, the
// envelope's code and message, and the cause. Every *Error a Client
// returns or logs has passed through it.
func (r redactor) seal(e *Error) *Error {
	if r.rep == nil {
		return e
	}
	e.URL = r.String(e.URL)
	e.Code = r.String(e.Code)
	e.Message = r.String(e.Message)
	e.Err = r.Err(e.Err)
	return e
}

// logger wraps log so that nothing it records, message, attribute keys
// or values, holds the key.
func (r redactor) logger(log *slog.Logger) *slog.Logger {
	if r.rep == nil {
		return log
	}
	return slog.New(redactHandler{h: log.Handler(), r: r})
}

// redactHandler is a slog.Handler that redacts every record before
// passing it on.
type redactHandler struct {
	h slog.Handler
	r redactor
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.r.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return redactHandler{h: h.h.WithAttrs(h.r.attrs(as)), r: h.r}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h: h.h.WithGroup(h.r.String(name)), r: h.r}
}

func (r redactor) attrs(as []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = r.attr(a)
	}
	return out
}

// attr redacts a's key and value. Values of kind Any (errors, structs)
// become their redacted fmt text.
func (r redactor) attr(a slog.Attr) slog.Attr {
	a.Key = r.String(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		v = slog.StringValue(r.String(v.String()))
	case slog.KindGroup:
		v = slog.GroupValue(r.attrs(v.Group())...)
	case slog.KindAny:
		v = slog.StringValue(r.String(fmt.Sprint(v.Any())))
	}
	a.Value = v
	return a
}
