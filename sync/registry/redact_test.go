package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Keys the redaction tests use: a typical token; one that every escaping
// changes (query, path, JSON, %q); and a short one.
var testKeys = []string{"sk-Tq7x9Wv2-secret", `sk/Fz 9+q&"ü`, "Zq"}

// leak reports which spelling of key s holds ("" when none). For keys of
// 8 bytes or more it also looks for the first half, so that a key cut in
// two by a length limit counts as leaked.
func leak(key, s string) string {
	forms := map[string]string{
		"raw": key, "query-escaped": url.QueryEscape(key), "path-escaped": url.PathEscape(key),
		"JSON-escaped": jsonEscaped(key), "quoted": quoted(key), "lower-hex": lowerHex(url.QueryEscape(key)),
	}
	if len(key) >= 8 {
		forms["first half"] = key[:len(key)/2]
	}
	for name, f := range forms {
		if f != "" && strings.Contains(s, f) {
			return name
		}
	}
	return ""
}

// errorTexts returns the Error() of err and of every error it wraps, and
// the text fields of every *Error among them.
func errorTexts(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		out = append(out, err.Error())
		if e, ok := err.(*Error); ok {
			out = append(out, e.URL, e.Code, e.Message)
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// echoBody is an error message that repeats key in the forms registries
// and proxies echo it in.
func echoBody(key string) string {
	return "invalid key " + key + " (query " + url.QueryEscape(key) + ", path " + url.PathEscape(key) +
		"); Authorization: Bearer " + key
}

// echoHeaders sets headers that echo key.
func echoHeaders(w http.ResponseWriter, key string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="registry", error="invalid_token", error_description="`+key+`"`)
	w.Header().Set("X-Debug", "X-API-Key="+key)
}

// envelopeJSON is an error envelope whose code and message are given.
func envelopeJSON(code, message string) string {
	return `{"ok":false,"error":{"code":` + strconv.Quote(code) + `,"message":` + strconv.Quote(message) + `}}`
}

// TestErrorsNeverHoldKey: whatever a registry or a proxy echoes back
// (error bodies, headers, redirect URLs, HTML pages, broken JSON), no
// error text, no *Error field and no log line holds the API key in any
// spelling; the errors still match their sentinels.
func TestErrorsNeverHoldKey(t *testing.T) {
	type tcase struct {
		name string
		// handle answers every request; key is what the client sent.
		handle func(w http.ResponseWriter, r *http.Request, key string)
		want   error // a sentinel the error must match
		// echoed: the error quotes the response, so Redacted must show
		// (cases that cut the key in two check that half never shows).
		echoed bool
		// quiet: the failure is logged by no line (no response, no retry).
		quiet bool
	}
	jsonEcho := func(status int, code string) func(w http.ResponseWriter, r *http.Request, key string) {
		return func(w http.ResponseWriter, _ *http.Request, key string) {
			echoHeaders(w, key)
			writeJSON(w, status, envelopeJSON(code, echoBody(key)))
		}
	}
	cases := []tcase{
		{name: "401 message", handle: jsonEcho(401, "UNAUTHORIZED"), want: ErrUnauthorized, echoed: true},
		{name: "403 message", handle: jsonEcho(403, "FORBIDDEN"), want: ErrUnauthorized, echoed: true},
		{name: "429 message", handle: func(w http.ResponseWriter, r *http.Request, key string) {
			w.Header().Set("Retry-After", "0")
			jsonEcho(429, "RATE_LIMITED")(w, r, key)
		}, want: ErrRateLimited, echoed: true},
		{name: "500 message", handle: jsonEcho(500, "STORE_ERROR"), want: ErrServer, echoed: true},
		{name: "503 message", handle: jsonEcho(503, "UNAVAILABLE"), want: ErrServer, echoed: true},
		{name: "401 code", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			writeJSON(w, 401, envelopeJSON("BAD_KEY_"+key, "no"))
		}, want: ErrUnauthorized, echoed: true},
		{name: "message cut at its length limit", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			writeJSON(w, 401, envelopeJSON("UNAUTHORIZED", strings.Repeat("m", messageLen-len(key)/2)+key))
		}, want: ErrUnauthorized},
		{name: "502 HTML page", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			echoHeaders(w, key)
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html><body>"+echoBody(key)+"</body></html>")
		}, want: ErrServer, echoed: true},
		{name: "HTML cut at the snippet limit", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(401)
			io.WriteString(w, strings.Repeat("h", snippetLen-len(key)/2)+key)
		}, want: ErrUnauthorized},
		{name: "key in the content type", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			w.Header().Set("Content-Type", "text/plain; key="+key)
			w.WriteHeader(403)
			io.WriteString(w, "denied")
		}, want: ErrUnauthorized, echoed: true},
		{name: "malformed JSON", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			echoHeaders(w, key)
			writeJSON(w, 401, `{"ok":false,"error":{"message":"invalid key `+jsonEscaped(key)+` `)
		}, want: ErrBadResponse, echoed: true},
		{name: "malformed JSON 200", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			writeJSON(w, 200, `{"ok":true,"result":{"key":"`+jsonEscaped(key)+`"`)
		}, want: ErrBadResponse, echoed: true},
		{name: "unparseable redirect Location", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			w.Header().Set("Location", "/%zz/login?key="+url.QueryEscape(key)+"&raw="+key)
			w.WriteHeader(http.StatusFound)
		}, want: ErrUnreachable, echoed: true},
		{name: "cross-host redirect to a host named after the key", handle: func(w http.ResponseWriter, _ *http.Request, key string) {
			w.Header().Set("Location", "http://"+url.PathEscape(key)+".sso.invalid/login?key="+url.QueryEscape(key))
			w.WriteHeader(http.StatusFound)
		}, quiet: true}, // refused, or (for keys no host name can hold) unparseable
		{name: "same-host redirect with the key, then 401", handle: func(w http.ResponseWriter, r *http.Request, key string) {
			if r.URL.Query().Get("key") == "" {
				http.Redirect(w, r, r.URL.Path+"?key="+url.QueryEscape(key), http.StatusFound)
				return
			}
			jsonEcho(401, "UNAUTHORIZED")(w, r, key)
		}, want: ErrUnauthorized, echoed: true},
	}
	for _, key := range testKeys {
		for _, tc := range cases {
			t.Run(strconv.Quote(key)+"/"+tc.name, func(t *testing.T) {
				var logs bytes.Buffer
				logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
					tc.handle(w, r, r.Header.Get("X-API-Key"))
				}, Options{APIKey: key, MaxAttempts: 2, Logger: logger})
				var errs []error
				_, err := c.ListPage(context.Background(), "active", 10, 0)
				errs = append(errs, err)
				_, err = c.GetStage(context.Background(), idA)
				errs = append(errs, err)
				_, err = c.Health(context.Background())
				errs = append(errs, err)
				for i, err := range errs {
					if err == nil {
						t.Fatalf("call %d succeeded", i)
					}
					if tc.want != nil && !errors.Is(err, tc.want) {
						t.Errorf("call %d: %v, want %v", i, err, tc.want)
					}
					for _, s := range errorTexts(err) {
						if l := leak(key, s); l != "" {
							t.Errorf("call %d: an error holds the key (%s): %q", i, l, s)
						}
					}
					if tc.echoed && !strings.Contains(err.Error(), Redacted) {
						t.Errorf("call %d: the echo did not reach the error, so nothing was tested: %v", i, err)
					}
				}
				if l := leak(key, logs.String()); l != "" {
					t.Errorf("the log holds the key (%s):\n%s", l, logs.String())
				}
				if !tc.quiet && !strings.Contains(logs.String(), "registry request") && !strings.Contains(logs.String(), "retrying") {
					t.Errorf("nothing was logged, so nothing was tested:\n%s", logs.String())
				}
			})
		}
	}
}

// TestLogNeverHoldsKey: a key inside the registry URL's path (where a
// user may have pasted it) is redacted from every log line and error URL.
func TestLogNeverHoldsKey(t *testing.T) {
	const key = "sk-Tq7x9Wv2-secret"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 500, envelopeJSON("STORE_ERROR", "down"))
	}))
	defer srv.Close()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(srv.URL+"/"+key, Options{APIKey: key, MaxAttempts: 3, Logger: logger, Sleep: (&sleeper{}).Sleep})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListPage(context.Background(), "", 1, 0)
	if err == nil {
		t.Fatal("ListPage succeeded against a failing registry")
	}
	if l := leak(key, err.Error()); l != "" {
		t.Errorf("error holds the key (%s): %v", l, err)
	}
	if l := leak(key, logs.String()); l != "" {
		t.Errorf("log holds the key (%s):\n%s", l, logs.String())
	}
	if n := strings.Count(logs.String(), Redacted); n < 3 {
		t.Errorf("the URL was logged redacted %d times, want one per attempt and retry:\n%s", n, logs.String())
	}
}

// TestRedactHandler: attribute keys and values, groups, With attributes,
// errors and the message all lose the key; other values keep their kind.
func TestRedactHandler(t *testing.T) {
	const key = "sk-Tq7x9Wv2-secret"
	var logs bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&logs, nil))
	log := newRedactor(key).logger(base).With("with", "w "+key).WithGroup("g-" + key)
	log.Info("msg "+key, key, 1, "err", errors.New("e "+key), "n", 42,
		slog.Group("inner", "s", key), slog.Any("any", struct{ K string }{key}))
	out := logs.String()
	if l := leak(key, out); l != "" {
		t.Errorf("log holds the key (%s): %s", l, out)
	}
	if strings.Count(out, Redacted) != 7 || !strings.Contains(out, `"n":42`) {
		t.Errorf("log %s: want 7 redactions and n kept as a number", out)
	}
	if got := newRedactor("").logger(base); got != base {
		t.Error("without a key the logger should be returned as is")
	}
}

func TestRedactor(t *testing.T) {
	for _, tt := range []struct{ key, in, want string }{
		{"sk-1", "key sk-1 and sk-1", "key [REDACTED] and [REDACTED]"},
		{"a/b c", "q=a%2Fb+c p=a%2Fb%20c lower=a%2fb+c raw=a/b c", "q=[REDACTED] p=[REDACTED] lower=[REDACTED] raw=[REDACTED]"},
		{`k"<`, `json "k\"\u003c" quoted k\"<`, `json "[REDACTED]" quoted [REDACTED]`},
		{"sk-1", "Authorization: Bearer sk-1", "Authorization: Bearer [REDACTED]"},
		{"x", "xyx", "[REDACTED]y[REDACTED]"}, // short keys are redacted too
		{"", "nothing to do", "nothing to do"},
		{"k\tey", "k ey", "[REDACTED]"}, // as sanitize writes it
	} {
		if got := newRedactor(tt.key).String(tt.in); got != tt.want {
			t.Errorf("key %q: String(%q) = %q, want %q", tt.key, tt.in, got, tt.want)
		}
	}
	r := newRedactor("sk-123456")
	body := []byte(strings.Repeat("a", 8) + "sk-123456" + strings.Repeat("b", 50))
	if got, want := r.Prefix(body, 10), "aaaaaaaa"+Redacted; got != want {
		t.Errorf("Prefix across the key = %q, want %q", got, want)
	}
	if got := newRedactor("").Prefix(body, 3); got != "aaa" {
		t.Errorf("Prefix without a key = %q", got)
	}
}

// TestRedactedErrorKeepsSentinels: a cause whose text held the key is
// replaced by one that still matches the sentinels the original matched,
// but not the original; a cause without the key is kept as is.
func TestRedactedErrorKeepsSentinels(t *testing.T) {
	r := newRedactor("sk-1")
	orig := &url.Error{Op: "Get", URL: "http://h/?key=sk-1", Err: context.DeadlineExceeded}
	got := r.Err(orig)
	if strings.Contains(got.Error(), "sk-1") || !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("Err = %v; Is(DeadlineExceeded) = %v", got, errors.Is(got, context.DeadlineExceeded))
	}
	var ue *url.Error
	if errors.As(got, &ue) {
		t.Errorf("the original error, key and all, is still reachable: %v", ue)
	}
	clean := errors.New("no key here")
	if r.Err(clean) != clean {
		t.Error("an error without the key was replaced")
	}
	e := r.seal(&Error{URL: "http://h/sk-1", Code: "sk-1", Message: "m sk-1", Err: orig})
	if reflect.DeepEqual(e.Err, orig) || strings.Contains(e.Error(), "sk-1") {
		t.Errorf("seal left the key: %v", e)
	}
}

func TestClientRedact(t *testing.T) {
	c, err := New("http://127.0.0.1:1", Options{APIKey: "sk/1 2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Redact("a sk/1 2 b sk%2F1+2 c sk%2F1%202"); got != "a [REDACTED] b [REDACTED] c [REDACTED]" {
		t.Errorf("Redact = %q", got)
	}
	c, _ = New("http://127.0.0.1:1", Options{})
	if got := c.Redact("unchanged"); got != "unchanged" {
		t.Errorf("Redact without a key = %q", got)
	}
}

// TestSanitizingNeverSpellsKey: a body that is not the key until it is
// sanitized (invalid UTF-8 becomes '?', control characters spaces) does
// not spell it in the error. (Found in review; respError.text and the
// sealing of every Error each redact after sanitizing.)
func TestSanitizingNeverSpellsKey(t *testing.T) {
	const key = "ab?cd ef"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		w.Write([]byte(`{"ok":false,"error":{"code":"E","message":"ab` + "\xff" + `cd` + "\t" + `ef"}}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, Options{APIKey: key, MaxAttempts: 1, Sleep: (&sleeper{}).Sleep})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListPage(context.Background(), "", 1, 0)
	if err == nil || strings.Contains(err.Error(), key) {
		t.Errorf("the sanitized message spells the key: %v", err)
	}
}
