package registrytest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
)

// Hostile upstreams that a fault switch of one Handler cannot express:
// wrappers around any registry handler, as a broken proxy in front of it
// would behave. Each returned handler is safe for concurrent use if h is.

// DropQuery serves h with the named query parameters removed from every
// request, or the whole query string when none is named: a proxy that
// mangles the query, so that (say) every page is page 0.
func DropQuery(h http.Handler, params ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		if len(params) == 0 {
			r2.URL.RawQuery = ""
		} else {
			q := r2.URL.Query()
			for _, p := range params {
				q.Del(p)
			}
			r2.URL.RawQuery = q.Encode()
		}
		h.ServeHTTP(w, r2)
	})
}

// NeverSettle serves h but leaves hidden (a stage's exact bytes) out of
// every listing page, and reports one stage more than there is for
// lifecycle's listings: a listing that never adds up, however often it is
// relisted, and a stage no listing shows although GET /stages/{id} still
// finds it. onHide, if not nil, is called each time hidden is cut from a
// page.
func NeverSettle(h http.Handler, hidden json.RawMessage, lifecycle string, onHide func()) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stages" {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var env struct {
			OK     bool `json:"ok"`
			Result struct {
				Stages []json.RawMessage `json:"stages"`
				Total  int               `json:"total"`
			} `json:"result"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &env) != nil || !env.OK {
			copyResponse(w, rec)
			return
		}
		kept := env.Result.Stages[:0]
		for _, s := range env.Result.Stages {
			if bytes.Equal(s, hidden) {
				if onHide != nil {
					onHide()
				}
				continue
			}
			kept = append(kept, s)
		}
		if kept == nil {
			kept = []json.RawMessage{} // "stages":[], never null
		}
		env.Result.Stages = kept
		if strings.EqualFold(r.URL.Query().Get("lifecycle"), lifecycle) {
			env.Result.Total++
		}
		b, _ := json.Marshal(env) // raw stages and ints always marshal
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(b)
	})
}

// copyResponse writes a recorded response to w.
func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}
