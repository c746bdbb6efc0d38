package server

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func FuzzParseListQuery(f *testing.F) {
	for _, s := range []string{
		"", "lifecycle=active&limit=200&offset=0", "limit=abc", "limit=-1", "offset=99999999999999999999",
		"limit=1&limit=2", "lifecycle=Active", "%zz", "limit=%2B5", "lifecycle=&limit=&offset=", ";;&=&",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := parseListQuery(raw)
		if err != nil {
			if _, ok := err.(*paramError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if q.limit < 0 || q.limit > MaxLimit || q.offset < 0 || q.offset > maxOffset {
			t.Fatalf("out of range: %+v", q)
		}
		// The normalised form parses back to the same query.
		q2, err := parseListQuery(q.normalized())
		if err != nil || q2 != q {
			t.Fatalf("normalized %q reparses to %+v, %v", q.normalized(), q2, err)
		}
	})
}

// FuzzHandler: whatever the method, path and query, the answer is a JSON
// envelope (or the metrics text), writes are always refused, and only
// the generations cached for /at/G/ stay open.
func FuzzHandler(f *testing.F) {
	for _, s := range [][2]string{
		{"GET", "/stages?lifecycle=active&limit=200&offset=0"},
		{"GET", "/stages/" + strings.Repeat("a", 64)},
		{"DELETE", "/stages/x"},
		{"GET", "/health"},
		{"GET", "/stages/%2e%2e/health"},
		{"PATCH", "/stages/" + strings.Repeat("0", 64) + "/lifecycle"},
		{"GET", "/stages?limit=%ff%fe"},
		{"GET", "/at/4/stages?lifecycle=active&limit=200&offset=0"},
		{"GET", "/at/beef/stages/" + strings.Repeat("a", 64)},
		{"GET", "/at/1/health"},
		{"DELETE", "/at/1/stages/x"},
		{"GET", "/at/%2e%2e/stages"},
	} {
		f.Add(s[0], s[1])
	}
	src, _ := historyFixture(f)
	s, err := New(src, Options{PinnedGenerations: 2})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, method, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != "" || !strings.HasPrefix(target, "/") {
			return
		}
		if method == "" || strings.ContainsAny(method, " \t\r\n()<>@,;:\\\"/[]?={}") {
			return
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Method, req.URL, req.RequestURI = method, u, target
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if u.Path == "/metrics" && rec.Code == 200 {
			return
		}
		var e struct {
			OK    *bool `json:"ok"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if rec.Code == 304 {
			t.Fatalf("304 without If-None-Match")
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.OK == nil {
			t.Fatalf("%s %s: not an envelope (%v): %q", method, target, err, rec.Body)
		}
		if method != "GET" && method != "HEAD" {
			if rec.Code != 405 || e.Error == nil || e.Error.Code != CodeReadOnly {
				t.Fatalf("%s %s: write not refused: %d %s", method, target, rec.Code, rec.Body)
			}
		}
		if method != "GET" && method != "HEAD" && bytes.Contains(rec.Body.Bytes(), []byte("already")) {
			t.Fatalf("error text contains 'already': %s", rec.Body)
		}
		if n, c := src.open.Load(), s.pins.len(); n != int64(c) || c > 2 {
			t.Fatalf("%d snapshots pinned for %d cached generations", n, c)
		}
	})
}
