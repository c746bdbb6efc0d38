package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

const (
	idA = store.StageID("c742844bd08c7c720df1af021027191023d17d4b1b95e9f1280bb369b82a464a")
	idB = store.StageID("43b7c625fd6ef24fbb6b5516e3b43e28e866f995838c1ff97c52e0794749a6dc")
)

// sleeper records requested delays instead of sleeping.
type sleeper struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeper) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

// newTestClient starts h on loopback and returns a client for it whose
// sleeps are recorded.
func newTestClient(t *testing.T, h http.HandlerFunc, opts Options) (*Client, *sleeper, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	sl := &sleeper{}
	if opts.Sleep == nil {
		opts.Sleep = sl.Sleep
	}
	if opts.Version == "" {
		opts.Version = "1.2.3"
	}
	c, err := New(srv.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, sl, srv
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func okPage(stages string, total string) string {
	return `{"ok":true,"result":{"stages":[` + stages + `],"total":` + total + `}}`
}

func TestNewValidatesURL(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "https://reg.example.org/", want: "https://reg.example.org"},
		{in: "https://reg.example.org/api/v1//", want: "https://reg.example.org/api/v1"},
		{in: "  http://h:1/x  ", want: "http://h:1/x"},
		{in: "ftp://h", err: "scheme"},
		{in: "h:8080", err: "scheme"},
		{in: "http://", err: "no host"},
		{in: "http://:80", err: "no host"},
		{in: "https://user:hunter2@h", err: "user name"},
		{in: "https://h/?key=hunter2", err: "query"},
		{in: "https://h/#frag", err: "fragment"},
		{in: "http://h\x7f", err: "not a URL"},
	}
	for _, tt := range tests {
		c, err := New(tt.in, Options{})
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("New(%q) error = %v, want containing %q", tt.in, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("New(%q) error leaks a secret: %v", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q): %v", tt.in, err)
			continue
		}
		if got := c.BaseURL(); got != tt.want {
			t.Errorf("New(%q).BaseURL() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPathPrefixKept(t *testing.T) {
	var gotPath, gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotQuery = r.URL.Path, r.URL.RawQuery
		writeJSON(w, 200, okPage("", "0"))
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/api/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListPage(context.Background(), "active", 200, 400); err != nil {
		t.Fatal(err)
	}
	if gotPath != "/api/stages" || gotQuery != "lifecycle=active&limit=200&offset=400" {
		t.Errorf("request = %s?%s, want /api/stages?lifecycle=active&limit=200&offset=400", gotPath, gotQuery)
	}
	if _, err := c.ListPage(context.Background(), "", 5, 0); err != nil {
		t.Fatal(err)
	}
	if gotQuery != "limit=5&offset=0" {
		t.Errorf("all-lifecycles query = %q, want limit=5&offset=0", gotQuery)
	}
}

// TestStatusClassification drives every status/code/body shape through
// GetStage and checks the sentinels and retryability, with retries off.
func TestStatusClassification(t *testing.T) {
	stage := `{"id":"` + string(idA) + `","name":"x"}`
	tests := []struct {
		name      string
		status    int
		ctype     string
		body      string
		want      []error
		notWant   []error
		retryable bool
		code      string
		inMsg     string
	}{
		{name: "ok", status: 200, body: `{"ok":true,"result":` + stage + `}`},
		{name: "ok 201", status: 201, body: `{"ok":true,"result":` + stage + `,"meta":{}}`},
		{name: "404 NOT_FOUND", status: 404, body: `{"ok":false,"error":{"code":"NOT_FOUND","message":"stage x not found"}}`,
			want: []error{store.ErrNotFound}, notWant: []error{ErrBadRequest, ErrBadResponse}, code: "NOT_FOUND", inMsg: "stage x not found"},
		{name: "404 other code", status: 404, body: `{"ok":false,"error":{"code":"STAGE_NOT_FOUND","message":"m"}}`,
			want: []error{store.ErrNotFound}, code: "STAGE_NOT_FOUND"},
		{name: "200 ok:false NOT_FOUND", status: 200, body: `{"ok":false,"error":{"code":"NOT_FOUND","message":"gone"}}`,
			want: []error{store.ErrNotFound}, notWant: []error{ErrBadRequest}, code: "NOT_FOUND"},
		{name: "404 HTML", status: 404, ctype: "text/html", body: "<html><body>Not Found</body></html>",
			want: []error{ErrBadResponse}, notWant: []error{store.ErrNotFound}, inMsg: "<html><body>Not Found"},
		{name: "400 VALIDATION_FAILED", status: 400, body: `{"ok":false,"error":{"code":"VALIDATION_FAILED","message":"stage already there"}}`,
			want: []error{ErrBadRequest}, notWant: []error{store.ErrAlreadyExists}, code: "VALIDATION_FAILED"},
		{name: "400 no error object", status: 400, body: `{"ok":false}`,
			want: []error{ErrBadRequest}, code: "UNKNOWN", inMsg: "unknown error"},
		{name: "400 error wrong types", status: 400, body: `{"ok":false,"error":{"code":7,"message":["x"]}}`,
			want: []error{ErrBadRequest}, code: "UNKNOWN"},
		{name: "401", status: 401, body: `{"ok":false,"error":{"code":"UNAUTHORIZED","message":"invalid or missing X-API-Key"}}`,
			want: []error{ErrUnauthorized}, notWant: []error{ErrBadRequest}, inMsg: "API key"},
		{name: "403 no code", status: 403, body: `{"ok":false,"error":{"message":"no"}}`, want: []error{ErrUnauthorized}},
		{name: "401 HTML", status: 401, ctype: "text/html", body: "<h1>login</h1>", want: []error{ErrUnauthorized, ErrBadResponse}},
		{name: "409", status: 409, body: `{"ok":false,"error":{"code":"CONFLICT","message":"dup"}}`, want: []error{store.ErrAlreadyExists}},
		{name: "409 INVALID_TRANSITION", status: 409, body: `{"ok":false,"error":{"code":"INVALID_TRANSITION","message":"no"}}`,
			want: []error{store.ErrInvalidTransition, ErrBadRequest}, notWant: []error{store.ErrAlreadyExists}},
		{name: "400 INVALID_SUCCESSOR", status: 400, body: `{"ok":false,"error":{"code":"INVALID_SUCCESSOR","message":"no"}}`,
			want: []error{store.ErrInvalidSuccessor, ErrBadRequest}},
		{name: "200 ALREADY_EXISTS", status: 200, body: `{"ok":false,"error":{"code":"ALREADY_EXISTS","message":"dup"}}`,
			want: []error{store.ErrAlreadyExists}},
		{name: "408", status: 408, body: `{"ok":false,"error":{"code":"TIMEOUT","message":"slow"}}`, want: []error{ErrBadRequest}, retryable: true},
		{name: "429", status: 429, body: `{"ok":false,"error":{"code":"RATE_LIMITED","message":"slow down"}}`,
			want: []error{ErrRateLimited}, retryable: true},
		{name: "500", status: 500, body: `{"ok":false,"error":{"code":"STORE_ERROR","message":"db down"}}`,
			want: []error{ErrServer}, notWant: []error{ErrBadResponse}, retryable: true, code: "STORE_ERROR"},
		{name: "502 HTML", status: 502, ctype: "text/html", body: "<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>",
			want: []error{ErrServer, ErrBadResponse}, retryable: true, inMsg: `text/html`},
		{name: "503 empty", status: 503, want: []error{ErrServer, ErrBadResponse}, retryable: true},
		{name: "500 ok:true", status: 500, body: `{"ok":true,"result":null}`, want: []error{ErrServer}, retryable: true},
		{name: "204", status: 204, want: []error{ErrBadResponse}, inMsg: "204"},
		{name: "200 empty", status: 200, want: []error{ErrBadResponse}, inMsg: "empty"},
		{name: "200 whitespace", status: 200, body: " \n ", want: []error{ErrBadResponse}},
		{name: "200 not json", status: 200, ctype: "text/plain", body: "hello", want: []error{ErrBadResponse}, inMsg: `"hello"`},
		{name: "200 array", status: 200, body: `[1,2]`, want: []error{ErrBadResponse}},
		{name: "200 truncated json", status: 200, body: `{"ok":true,"result":{"id":"ab`, want: []error{ErrBadResponse}, inMsg: "not valid JSON"},
		{name: "200 no ok", status: 200, body: `{"result":{}}`, want: []error{ErrBadResponse}, inMsg: `"ok"`},
		{name: "200 ok string", status: 200, body: `{"ok":"true","result":{}}`, want: []error{ErrBadResponse}},
		{name: "200 result array", status: 200, body: `{"ok":true,"result":[]}`, want: []error{ErrBadResponse}, inMsg: "an array"},
		{name: "200 result missing", status: 200, body: `{"ok":true}`, want: []error{ErrBadResponse}, inMsg: "null"},
		{name: "302 envelope", status: 302, body: `{"ok":false,"error":{"code":"MOVED","message":"m"}}`, want: []error{ErrBadResponse}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sl, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				ct := tt.ctype
				if ct == "" {
					ct = "application/json"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}, Options{MaxAttempts: 1})
			raw, err := c.GetStage(context.Background(), idA)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("GetStage: %v", err)
				}
				if string(raw) != stage {
					t.Errorf("GetStage = %s, want %s", raw, stage)
				}
				return
			}
			if err == nil {
				t.Fatalf("GetStage succeeded with %s, want an error", raw)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error: %v", err, err)
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = false", err, w)
				}
			}
			for _, w := range tt.notWant {
				if errors.Is(err, w) {
					t.Errorf("errors.Is(%v, %v) = true, want false", err, w)
				}
			}
			if e.Retryable != tt.retryable {
				t.Errorf("Retryable = %v, want %v (%v)", e.Retryable, tt.retryable, err)
			}
			if e.Status != tt.status && !(tt.status == 302) {
				t.Errorf("Status = %d, want %d", e.Status, tt.status)
			}
			if tt.code != "" && e.Code != tt.code {
				t.Errorf("Code = %q, want %q", e.Code, tt.code)
			}
			if e.Op != "get stage" || !strings.Contains(e.URL, "/stages/"+string(idA)) {
				t.Errorf("Op, URL = %q, %q", e.Op, e.URL)
			}
			msg := err.Error()
			if tt.inMsg != "" && !strings.Contains(msg, tt.inMsg) {
				t.Errorf("message %q lacks %q", msg, tt.inMsg)
			}
			if want := "retrying will not help"; !tt.retryable && !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
			if want := "retrying later may help"; tt.retryable && !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("message has raw newlines: %q", msg)
			}
			if len(sl.got()) != 0 {
				t.Errorf("slept with MaxAttempts 1: %v", sl.got())
			}
		})
	}
}

func TestHeaders(t *testing.T) {
	for _, key := range []string{"", "s3cret-key"} {
		t.Run(fmt.Sprintf("key=%q", key), func(t *testing.T) {
			var mu sync.Mutex
			var seen []http.Header
			var methods []string
			c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Header.Clone())
				methods = append(methods, r.Method)
				mu.Unlock()
				switch {
				case r.URL.Path == "/health":
					writeJSON(w, 200, `{"ok":true,"result":{"status":"ok"}}`)
				case r.Method == http.MethodGet && r.URL.Path == "/stages":
					writeJSON(w, 200, okPage("", "0"))
				case r.Method == http.MethodGet:
					writeJSON(w, 200, `{"ok":true,"result":{}}`)
				default:
					writeJSON(w, 200, `{"ok":true,"result":null}`)
				}
			}, Options{APIKey: key, Version: "0.4.1"})
			ctx := context.Background()
			if _, err := c.ListPage(ctx, "active", 10, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := c.GetStage(ctx, idA); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Health(ctx); err != nil {
				t.Fatal(err)
			}
			if _, _, err := c.PutStage(ctx, []byte(`{"id":"`+string(idA)+`"}`)); err != nil {
				t.Fatal(err)
			}
			if err := c.UpdateLifecycle(ctx, idA, store.Active); err != nil {
				t.Fatal(err)
			}
			if err := c.DeleteStage(ctx, idA); err != nil {
				t.Fatal(err)
			}
			if len(seen) != 6 {
				t.Fatalf("%d requests, want 6", len(seen))
			}
			for i, h := range seen {
				if got := h.Get("User-Agent"); got != "noether-mirror/0.4.1" {
					t.Errorf("%s User-Agent = %q", methods[i], got)
				}
				if got := h.Get("X-Noether-Client-Version"); got != "0.4.1" {
					t.Errorf("%s X-Noether-Client-Version = %q", methods[i], got)
				}
				vals, present := h["X-Api-Key"]
				if key == "" && present {
					t.Errorf("%s sent X-API-Key %q without a key", methods[i], vals)
				}
				if key != "" && h.Get("X-API-Key") != key {
					t.Errorf("%s X-API-Key = %q, want %q", methods[i], h.Get("X-API-Key"), key)
				}
				wantCT := methods[i] == http.MethodPost || methods[i] == http.MethodPatch
				if got := h.Get("Content-Type"); wantCT != (got == "application/json") {
					t.Errorf("%s Content-Type = %q", methods[i], got)
				}
			}
		})
	}
}

func TestCrossHostRedirectRefused(t *testing.T) {
	var otherHits atomic.Int32
	var leaked atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
		leaked.Store(r.Header.Get("X-API-Key"))
		writeJSON(w, 200, okPage("", "0"))
	}))
	defer other.Close()
	var hits atomic.Int32
	c, _, srv := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/stages":
			http.Redirect(w, r, other.URL+"/stages?"+r.URL.RawQuery, http.StatusFound)
		case "/health":
			// Same host, another path: followed.
			http.Redirect(w, r, "/v2/health", http.StatusMovedPermanently)
		case "/v2/health":
			writeJSON(w, 200, `{"ok":true,"result":{"status":"ok"}}`)
		default:
			// An endless same-host loop.
			http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect)
		}
	}, Options{APIKey: "top-secret"})
	ctx := context.Background()

	_, err := c.ListPage(ctx, "active", 200, 0)
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("cross-host redirect: err = %v, want ErrBadResponse", err)
	}
	if otherHits.Load() != 0 {
		t.Errorf("the other host was contacted %d times (key %q)", otherHits.Load(), leaked.Load())
	}
	if hits.Load() != 1 {
		t.Errorf("refused redirect was retried: %d requests", hits.Load())
	}
	if !strings.Contains(err.Error(), "another host") || strings.Contains(err.Error(), "top-secret") {
		t.Errorf("message = %q", err)
	}

	if h, err := c.Health(ctx); err != nil || h.Status != "ok" {
		t.Errorf("same-host redirect: %+v, %v", h, err)
	}

	hits.Store(0)
	_, err = c.GetStage(ctx, idA)
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "redirects") {
		t.Errorf("redirect loop: err = %v", err)
	}
	if n := hits.Load(); n != maxRedirects {
		t.Errorf("redirect loop made %d requests, want %d", n, maxRedirects)
	}
	_ = srv
}

// okAfter answers status failures times, then ok.
func okAfter(failures int, status int, header map[string]string, ok string) (http.HandlerFunc, *atomic.Int32) {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		if int(n.Add(1)) <= failures {
			for k, v := range header {
				w.Header().Set(k, v)
			}
			writeJSON(w, status, `{"ok":false,"error":{"code":"X","message":"try later"}}`)
			return
		}
		writeJSON(w, 200, ok)
	}, &n
}

func TestRetryBackoff(t *testing.T) {
	h, n := okAfter(4, 503, nil, okPage(`{"a":1}`, "1"))
	c, sl, _ := newTestClient(t, h, Options{BaseBackoff: 100 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	p, err := c.ListPage(context.Background(), "active", 200, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Stages) != 1 || !p.HasTotal || p.Total != 1 {
		t.Errorf("page = %+v", p)
	}
	if n.Load() != 5 {
		t.Errorf("%d requests, want 5", n.Load())
	}
	ceilings := []time.Duration{100, 200, 300, 300}
	got := sl.got()
	if len(got) != 4 {
		t.Fatalf("slept %v, want 4 delays", got)
	}
	for i, d := range got {
		if d < 0 || d > ceilings[i]*time.Millisecond {
			t.Errorf("delay %d = %v, want within [0, %v]", i, d, ceilings[i]*time.Millisecond)
		}
	}
}

func TestRetryGivesUp(t *testing.T) {
	h, n := okAfter(100, 500, nil, "")
	c, sl, _ := newTestClient(t, h, Options{MaxAttempts: 3})
	_, err := c.Health(context.Background())
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrServer) {
		t.Fatalf("err = %v", err)
	}
	if n.Load() != 3 || e.Attempts != 3 || len(sl.got()) != 2 {
		t.Errorf("requests %d, Attempts %d, sleeps %d; want 3, 3, 2", n.Load(), e.Attempts, len(sl.got()))
	}
	if !e.Retryable || !strings.Contains(e.Error(), "after 3 attempts") {
		t.Errorf("error = %v (retryable %v)", e, e.Retryable)
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 422} {
		h, n := okAfter(100, status, nil, "")
		c, sl, _ := newTestClient(t, h, Options{})
		_, err := c.GetStage(context.Background(), idA)
		if err == nil || n.Load() != 1 || len(sl.got()) != 0 {
			t.Errorf("status %d: err %v, %d requests, %d sleeps; want 1 request", status, err, n.Load(), len(sl.got()))
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		status int
		header string
		want   time.Duration
		slack  time.Duration
	}{
		{name: "seconds", status: 429, header: "3", want: 3 * time.Second},
		{name: "capped", status: 429, header: "100000", want: 5 * time.Second},
		{name: "503 seconds", status: 503, header: "2", want: 2 * time.Second},
		{name: "http date", status: 429, header: now.Add(4 * time.Second).UTC().Format(http.TimeFormat), want: 4 * time.Second, slack: 1500 * time.Millisecond},
		{name: "date capped", status: 429, header: now.Add(time.Hour).UTC().Format(http.TimeFormat), want: 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n := okAfter(1, tt.status, map[string]string{"Retry-After": tt.header}, okPage("", "0"))
			c, sl, _ := newTestClient(t, h, Options{MaxRetryAfter: 5 * time.Second, MaxBackoff: time.Millisecond})
			if _, err := c.ListPage(context.Background(), "draft", 1, 0); err != nil {
				t.Fatal(err)
			}
			got := sl.got()
			if n.Load() != 2 || len(got) != 1 {
				t.Fatalf("%d requests, sleeps %v", n.Load(), got)
			}
			if got[0] > tt.want || got[0] < tt.want-tt.slack {
				t.Errorf("slept %v, want %v (slack %v)", got[0], tt.want, tt.slack)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"7":                             7 * time.Second,
		" 7 ":                           7 * time.Second,
		"-1":                            0,
		"1.5":                           0,
		"soon":                          0,
		"Thu, 02 Jan 2025 03:04:15 GMT": 10 * time.Second,
		"Thu, 02 Jan 2025 03:04:00 GMT": 0,
		"99999999999999999999":          0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestPatchRetriedOnlyWhenSafe(t *testing.T) {
	for _, tt := range []struct {
		status   int
		requests int32
	}{{500, 1}, {502, 1}, {503, 2}, {429, 2}} {
		h, n := okAfter(1, tt.status, nil, `{"ok":true,"result":null}`)
		c, _, _ := newTestClient(t, h, Options{})
		err := c.UpdateLifecycle(context.Background(), idA, store.Active)
		if n.Load() != tt.requests {
			t.Errorf("PATCH after %d: %d requests, want %d (err %v)", tt.status, n.Load(), tt.requests, err)
		}
		if (tt.requests == 2) != (err == nil) {
			t.Errorf("PATCH after %d: err = %v", tt.status, err)
		}
	}
	// POST is content-addressed, hence retried after a 500.
	h, n := okAfter(1, 500, nil, `{"ok":true,"result":{"id":"`+string(idA)+`","is_new":false}}`)
	c, _, _ := newTestClient(t, h, Options{})
	if _, isNew, err := c.PutStage(context.Background(), []byte(`{"id":"`+string(idA)+`"}`)); err != nil || isNew || n.Load() != 2 {
		t.Errorf("POST after 500: isNew %v, err %v, %d requests", isNew, err, n.Load())
	}
}

func TestRequestTimeout(t *testing.T) {
	var n atomic.Int32
	c, sl, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		<-r.Context().Done()
	}, Options{RequestTimeout: 50 * time.Millisecond, MaxAttempts: 2})
	start := time.Now()
	_, err := c.ListPage(context.Background(), "active", 200, 0)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnreachable) || !e.Retryable {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "request timeout") {
		t.Errorf("message = %q", err)
	}
	if n.Load() != 2 || len(sl.got()) != 1 {
		t.Errorf("%d requests, %d sleeps; want 2, 1", n.Load(), len(sl.got()))
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestCallerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		cancel()
		<-r.Context().Done()
	}, Options{})
	_, err := c.Health(ctx)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, context.Canceled) || e.Retryable || e.Attempts != 1 {
		t.Fatalf("err = %v", err)
	}

	// Cancelled while waiting to retry.
	ctx2, cancel2 := context.WithCancel(context.Background())
	h, n := okAfter(100, 503, nil, "")
	c2, _, _ := newTestClient(t, h, Options{Sleep: func(ctx context.Context, d time.Duration) error {
		cancel2()
		return ctx.Err()
	}})
	_, err = c2.Health(ctx2)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrServer) || n.Load() != 1 {
		t.Errorf("err = %v after %d requests", err, n.Load())
	}
	if !strings.Contains(err.Error(), "gave up") {
		t.Errorf("message = %q", err)
	}
}

func TestRealSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := sleepCtx(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("sleepCtx = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("sleepCtx ignored the context")
	}
	if err := sleepCtx(context.Background(), time.Millisecond); err != nil {
		t.Error(err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // now nothing listens there
	sl := &sleeper{}
	c, err := New("http://"+addr, Options{MaxAttempts: 3, Sleep: sl.Sleep, APIKey: "k3y"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListPage(context.Background(), "active", 200, 0)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnreachable) || !e.Retryable || e.Status != 0 {
		t.Fatalf("err = %v", err)
	}
	if e.Attempts != 3 || len(sl.got()) != 2 {
		t.Errorf("Attempts %d, sleeps %d", e.Attempts, len(sl.got()))
	}
	// A PATCH that never reached the server is safe to retry.
	err = c.UpdateLifecycle(context.Background(), idA, store.Tombstone)
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Errorf("PATCH to a closed port: %v", err)
	}
	if strings.Contains(err.Error(), "k3y") || !strings.Contains(err.Error(), "check the registry URL") {
		t.Errorf("message = %q", err)
	}
}

func TestBodyLimits(t *testing.T) {
	big := okPage(`"`+strings.Repeat("x", 5000)+`"`, "1")
	deep := `{"ok":true,"result":{"stages":[` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `],"total":1}}`
	tests := []struct {
		name  string
		h     http.HandlerFunc
		inMsg string
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			writeJSON(w, 200, big)
		}, "Content-Length"},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for i := 0; i < len(big); i += 512 {
				io.WriteString(w, big[i:min(i+512, len(big))])
				w.(http.Flusher).Flush()
			}
		}, "limit"},
		{"deep", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, deep) }, "deeper than 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sl, _ := newTestClient(t, tt.h, Options{MaxBodyBytes: 4096, MaxJSONDepth: 64})
			_, err := c.ListPage(context.Background(), "active", 200, 0)
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrBadResponse) || e.Retryable {
				t.Fatalf("err = %v", err)
			}
			if !strings.Contains(err.Error(), tt.inMsg) {
				t.Errorf("message %q lacks %q", err, tt.inMsg)
			}
			if len(sl.got()) != 0 {
				t.Error("retried a permanent failure")
			}
		})
	}
}

func TestTruncatedBody(t *testing.T) {
	var n atomic.Int32
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			io.WriteString(w, `{"ok":true,"result":{"stages":[{"id":`)
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, 200, okPage("", "0"))
	}, Options{MaxAttempts: 1})
	_, err := c.ListPage(context.Background(), "active", 200, 0)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrBadResponse) || !e.Retryable {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "cut off") {
		t.Errorf("message = %q", err)
	}
	if _, err := c.ListPage(context.Background(), "active", 200, 0); err != nil {
		t.Errorf("second request: %v", err)
	}
}

func TestListPage(t *testing.T) {
	tests := []struct {
		result   string
		n        int
		total    int
		hasTotal bool
		err      bool
	}{
		{result: `{"stages":[{"id":"a"},{"id":"b"}],"total":486}`, n: 2, total: 486, hasTotal: true},
		{result: `{"stages":[],"total":0}`, hasTotal: true},
		{result: `{"stages":[ {"x": 1} ,2,"s",null],"total":4,"extra":true}`, n: 4, total: 4, hasTotal: true},
		{result: `{"stages":[]}`},
		{result: `{"stages":[],"total":1.0}`},
		{result: `{"stages":[],"total":1e3}`},
		{result: `{"stages":[],"total":"10"}`},
		{result: `{"stages":[],"total":-1}`},
		{result: `{"stages":[],"total":null}`},
		{result: `{"stages":[],"total":99999999999999999999}`},
		{result: `{"stages":[],"total":9223372036854775807}`, total: 9223372036854775807, hasTotal: true},
		{result: `{"stages":null,"total":0}`, err: true},
		{result: `{"stages":{},"total":0}`, err: true},
		{result: `{"total":0}`, err: true},
		{result: `[]`, err: true},
		{result: `null`, err: true},
	}
	for _, tt := range tests {
		c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"ok":true,"result":`+tt.result+`}`)
		}, Options{})
		p, err := c.ListPage(context.Background(), "tombstone", 50, 0)
		if tt.err {
			if !errors.Is(err, ErrBadResponse) {
				t.Errorf("%s: err = %v, want ErrBadResponse", tt.result, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.result, err)
			continue
		}
		if len(p.Stages) != tt.n || p.Total != tt.total || p.HasTotal != tt.hasTotal {
			t.Errorf("%s: page = %d stages, total %d (%v); want %d, %d (%v)", tt.result, len(p.Stages), p.Total, p.HasTotal, tt.n, tt.total, tt.hasTotal)
		}
	}
}

func TestListPageKeepsExactBytes(t *testing.T) {
	s1 := `{"id" : "x",  "z":1.50, "a":"\u00e9"}`
	s2 := `{"b":[1, 2]}`
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"ok":true,"result":{"stages":[ `+s1+` ,`+"\n"+s2+`],"total":2}}`)
	}, Options{})
	p, err := c.ListPage(context.Background(), "active", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Stages[0]) != s1 || string(p.Stages[1]) != s2 {
		t.Errorf("stages = %q, %q", p.Stages[0], p.Stages[1])
	}
}

func TestInvalidArgumentsNotSent(t *testing.T) {
	var n atomic.Int32
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) { n.Add(1) }, Options{})
	ctx := context.Background()
	bad := store.StageID("../../health")
	upper := store.StageID(strings.ToUpper(string(idA)))
	_, _, errPutNoID := c.PutStage(ctx, []byte(`{"name":"x"}`))
	_, _, errPutBadID := c.PutStage(ctx, []byte(`{"id":"`+string(upper)+`"}`))
	_, _, errPutArray := c.PutStage(ctx, []byte(`[1]`))
	_, errGet := c.GetStage(ctx, bad)
	_, errList1 := c.ListPage(ctx, "Active", 10, 0)
	_, errList2 := c.ListPage(ctx, "active", 0, 0)
	_, errList3 := c.ListPage(ctx, "active", 10, -1)
	for i, err := range []error{
		errPutNoID, errPutBadID, errPutArray, errGet, errList1, errList2, errList3,
		c.DeleteStage(ctx, upper),
		c.UpdateLifecycle(ctx, "", store.Active),
		c.UpdateLifecycle(ctx, idA, store.Deprecated("")),
		c.UpdateLifecycle(ctx, idA, store.Deprecated("abc")),
		c.UpdateLifecycle(ctx, idA, store.Lifecycle{Kind: store.LifecycleUnknown, Other: `"Frozen"`}),
	} {
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(fmt.Sprint(err), "not sent") {
			t.Errorf("case %d: err = %v, want ErrBadRequest before sending", i, err)
		}
	}
	if n.Load() != 0 {
		t.Errorf("%d requests reached the server", n.Load())
	}
}

func TestPutStage(t *testing.T) {
	raw := `{"id":"` + string(idA) + `","name":"n"}`
	tests := []struct {
		name   string
		status int
		body   string
		id     store.StageID
		isNew  bool
		want   error
	}{
		{name: "new", status: 200, body: `{"ok":true,"result":{"id":"` + string(idA) + `","is_new":true}}`, id: idA, isNew: true},
		{name: "existing", status: 200, body: `{"ok":true,"result":{"id":"` + string(idA) + `","is_new":false}}`, id: idA},
		{name: "no id", status: 201, body: `{"ok":true,"result":{"is_new":false}}`, id: idA},
		{name: "no is_new", status: 200, body: `{"ok":true,"result":{"id":"` + string(idA) + `"}}`, id: idA, isNew: true},
		{name: "null result", status: 200, body: `{"ok":true,"result":null}`, id: idA, isNew: true},
		{name: "no result", status: 200, body: `{"ok":true}`, id: idA, isNew: true},
		{name: "ALREADY_EXISTS", status: 400, body: `{"ok":false,"error":{"code":"ALREADY_EXISTS","message":"x"}}`, want: store.ErrAlreadyExists},
		{name: "409", status: 409, body: `{"ok":false,"error":{"code":"VALIDATION_FAILED","message":"dup"}}`, want: store.ErrAlreadyExists},
		{name: "already in text only", status: 400, body: `{"ok":false,"error":{"code":"VALIDATION_FAILED","message":"stage already exists"}}`, want: ErrBadRequest},
		{name: "other id", status: 200, body: `{"ok":true,"result":{"id":"` + string(idB) + `","is_new":true}}`, want: ErrBadResponse},
		{name: "bad id", status: 200, body: `{"ok":true,"result":{"id":5}}`, want: ErrBadResponse},
		{name: "bad is_new", status: 200, body: `{"ok":true,"result":{"is_new":"yes"}}`, want: ErrBadResponse},
		{name: "result array", status: 200, body: `{"ok":true,"result":[]}`, want: ErrBadResponse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got = string(b)
				writeJSON(w, tt.status, tt.body)
			}, Options{})
			id, isNew, err := c.PutStage(context.Background(), []byte("\n"+raw+"\n"))
			if got != raw {
				t.Errorf("body sent = %q, want %q", got, raw)
			}
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Errorf("err = %v, want %v", err, tt.want)
				}
				if tt.want == ErrBadRequest && errors.Is(err, store.ErrAlreadyExists) {
					t.Errorf("classified by message text: %v", err)
				}
				return
			}
			if err != nil || id != tt.id || isNew != tt.isNew {
				t.Errorf("PutStage = %s, %v, %v; want %s, %v", id, isNew, err, tt.id, tt.isNew)
			}
		})
	}
}

func TestUpdateLifecycle(t *testing.T) {
	tests := []struct {
		l    store.Lifecycle
		body string
	}{
		{store.Active, `{"lifecycle":"active"}`},
		{store.Draft, `{"lifecycle":"draft"}`},
		{store.Tombstone, `{"lifecycle":"tombstone"}`},
		{store.Deprecated(idB), `{"lifecycle":"deprecated","successor_id":"` + string(idB) + `"}`},
	}
	for _, tt := range tests {
		var got map[string]string
		var method, path string
		c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			method, path = r.Method, r.URL.Path
			json.NewDecoder(r.Body).Decode(&got)
			writeJSON(w, 200, `{"ok":true,"result":{"whatever":1}}`)
		}, Options{})
		if err := c.UpdateLifecycle(context.Background(), idA, tt.l); err != nil {
			t.Fatal(err)
		}
		var want map[string]string
		json.Unmarshal([]byte(tt.body), &want)
		if method != http.MethodPatch || path != "/stages/"+string(idA)+"/lifecycle" || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %s %s %v, want PATCH …/lifecycle %v", tt.l, method, path, got, want)
		}
	}
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 409, `{"ok":false,"error":{"code":"INVALID_TRANSITION","message":"invalid lifecycle transition: Active → Active"}}`)
	}, Options{})
	err := c.UpdateLifecycle(context.Background(), idA, store.Active)
	if !errors.Is(err, store.ErrInvalidTransition) || errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("err = %v", err)
	}
}

func TestDeleteStage(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
		want   error
	}{
		{name: "ok", status: 200, body: `{"ok":true,"result":null}`},
		{name: "404 envelope", status: 404, body: `{"ok":false,"error":{"code":"NOT_FOUND","message":"x"}}`},
		{name: "200 NOT_FOUND", status: 200, body: `{"ok":false,"error":{"code":"NOT_FOUND","message":"x"}}`},
		{name: "404 HTML", status: 404, ctype: "text/html", body: `<p>no</p>`, want: ErrBadResponse},
		{name: "204", status: 204, want: ErrBadResponse},
		{name: "401", status: 401, body: `{"ok":false,"error":{"code":"UNAUTHORIZED","message":"x"}}`, want: ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var method, path string
			c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
				method, path = r.Method, r.URL.Path
				ct := tt.ctype
				if ct == "" {
					ct = "application/json"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}, Options{MaxAttempts: 1})
			err := c.DeleteStage(context.Background(), idA)
			if method != http.MethodDelete || path != "/stages/"+string(idA) {
				t.Errorf("sent %s %s", method, path)
			}
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		result   string
		status   string
		hasStore bool
		stats    store.Stats
		err      bool
	}{
		{result: `{"status":"ok","store":{"total_stages":486,"by_lifecycle":{"active":480,"deprecated":6},"by_effect":{"Pure":300,"Llm { model: \"x\" }":2}}}`,
			status: "ok", hasStore: true, stats: store.Stats{Total: 486, ByLifecycle: map[string]int{"active": 480, "deprecated": 6}, ByEffect: map[string]int{"Pure": 300, `Llm { model: "x" }`: 2}}},
		{result: `{"status":"ok"}`, status: "ok"},
		{result: `{"status":"ok","store":null}`, status: "ok"},
		{result: `{"status":"ok","store":{"total_stages":1.5,"by_lifecycle":{"active":-1,"draft":2},"by_effect":{"Pure":"3"}}}`,
			status: "ok", hasStore: true, stats: store.Stats{ByLifecycle: map[string]int{"draft": 2}, ByEffect: map[string]int{}}},
		{result: `{"status":7,"store":{"by_lifecycle":[]}}`},
		{result: `"ok"`, err: true},
	}
	for _, tt := range tests {
		c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, `{"ok":true,"result":`+tt.result+`}`)
		}, Options{})
		h, err := c.Health(context.Background())
		if tt.err {
			if !errors.Is(err, ErrBadResponse) {
				t.Errorf("%s: err = %v", tt.result, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.result, err)
			continue
		}
		if h.Status != tt.status || h.HasStore != tt.hasStore || string(h.Raw) != tt.result ||
			h.Stats.Total != tt.stats.Total || fmt.Sprint(h.Stats.ByLifecycle) != fmt.Sprint(tt.stats.ByLifecycle) ||
			fmt.Sprint(h.Stats.ByEffect) != fmt.Sprint(tt.stats.ByEffect) {
			t.Errorf("%s: got %+v", tt.result, h)
		}
	}
}

func TestRedaction(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:p@h/stages":                 "http://h/stages",
		"http://h/stages?limit=1&offset=2":    "http://h/stages?limit=1&offset=2",
		"http://h/x?api_key=s3cret&limit=1":   "http://h/x?api_key=REDACTED&limit=1",
		"http://h/x?access_token=s3cret":      "http://h/x?access_token=REDACTED",
		"http://h/x?Signature=abc&X-Auth=def": "http://h/x?Signature=REDACTED&X-Auth=REDACTED",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := redactRaw("https://u:hunter2@h/?token=hunter2"); strings.Contains(got, "hunter2") {
		t.Errorf("redactRaw leaks: %q", got)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"<html>\r\n  <b>x</b>\x00\x1b": "<html> <b>x</b>",
		"\xff\xfeok":                   "??ok",
		"ünï":                          "ünï",
	} {
		if got := sanitize([]byte(in), 100); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitize([]byte(strings.Repeat("a", 500)), 100); len(got) != 100 {
		t.Errorf("sanitize kept %d bytes, want 100", len(got))
	}
}

func TestConcurrentUse(t *testing.T) {
	h, _ := okAfter(0, 0, nil, okPage(`{"id":"x"}`, "1"))
	c, _, _ := newTestClient(t, h, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			if _, err := c.ListPage(context.Background(), "active", 200, 0); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
