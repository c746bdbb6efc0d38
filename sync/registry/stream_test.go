package registry

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// TestStreamRetriesThenStreams: a 503 before the body is retried like
// any request; then the body arrives as it is written, with the Accept
// and API key headers sent.
func TestStreamRetriesThenStreams(t *testing.T) {
	var calls atomic.Int32
	c, sl, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			writeJSON(w, http.StatusServiceUnavailable, `{"ok":false,"error":{"code":"UNAVAILABLE","message":"busy"}}`)
			return
		}
		if r.Header.Get("Accept") != "application/x-test" || r.Header.Get("X-API-Key") != "k" || r.URL.Path != "/feed/1/2" {
			t.Errorf("request %s %v", r.URL.Path, r.Header)
		}
		w.Write([]byte(strings.Repeat("x", 100000)))
	}, Options{APIKey: "k"})
	body, err := c.Stream(t.Context(), "read a stream", "/feed/1/2", "application/x-test")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil || len(b) != 100000 || len(sl.got()) != 1 {
		t.Fatalf("read %d bytes, err %v, %d retries", len(b), err, len(sl.got()))
	}
}

// TestStreamNotFound: an error answer is decoded from the envelope; a 404
// wraps store.ErrNotFound and is not retried.
func TestStreamNotFound(t *testing.T) {
	c, sl, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, `{"ok":false,"error":{"code":"NOT_FOUND","message":"generation 3 was collected"}}`)
	}, Options{})
	_, err := c.Stream(t.Context(), "read a stream", "/feed/3/4", "x")
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "collected") || len(sl.got()) != 0 {
		t.Fatalf("err = %v, %d retries", err, len(sl.got()))
	}
}

// TestStreamStalled: a body that stops making progress is cut off after
// the request timeout (ErrStalled), however long the whole stream runs:
// a stalled upstream never hangs a sync.
func TestStreamStalled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	c, _, _ := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		// Steady progress for twice the timeout (gaps a tenth of it),
		// then a stall.
		for range 20 {
			w.Write([]byte("data"))
			http.NewResponseController(w).Flush()
			time.Sleep(30 * time.Millisecond)
		}
		<-release
	}, Options{RequestTimeout: 300 * time.Millisecond})
	body, err := c.Stream(t.Context(), "read a stream", "/s", "x")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	start := time.Now()
	b, err := io.ReadAll(body)
	if !errors.Is(err, ErrStalled) || len(b) != 80 {
		t.Fatalf("read %d bytes, err %v after %s", len(b), err, time.Since(start))
	}
}
