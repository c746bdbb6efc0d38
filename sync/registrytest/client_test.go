package registrytest_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// noSleep records retry delays without waiting.
type noSleep struct{ delays []time.Duration }

func (n *noSleep) Sleep(ctx context.Context, d time.Duration) error {
	n.delays = append(n.delays, d)
	return ctx.Err()
}

// TestClientAgainstFake drives the real client through the fake
// registry's faults: it must page through everything, recover from
// transient faults and classify the permanent ones.
func TestClientAgainstFake(t *testing.T) {
	fixture, err := registrytest.StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	s, err := registrytest.NewServer(registrytest.Options{Stages: fixture, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sl := &noSleep{}
	c, err := registry.New(s.URL(), registry.Options{Version: "9.9.9", Sleep: sl.Sleep, RequestTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Transient faults on consecutive pages: each page still arrives.
	s.FailNext(1, 503)
	s.OnPage(func(string, int) { s.HTMLNext(1) })
	var got [][]byte
	for offset := 0; ; {
		p, err := c.ListPage(ctx, "active", 30, offset)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range p.Stages {
			got = append(got, raw)
		}
		offset += len(p.Stages)
		if len(p.Stages) == 0 || !p.HasTotal || offset >= p.Total {
			break
		}
	}
	s.OnPage(nil)
	s.HTMLNext(0)
	if len(got) != 85 {
		t.Fatalf("paged %d stages, want 85", len(got))
	}
	for i := range got {
		if !bytes.Equal(got[i], fixture[i]) {
			t.Fatalf("stage %d bytes changed in transit", i)
		}
	}
	if len(sl.delays) != 3 {
		t.Errorf("%d retries, want 3 (one 503, two HTML 502s)", len(sl.delays))
	}
	if h := s.LastHeaders(); h.Get("User-Agent") != "noether-mirror/9.9.9" || h.Get("X-API-Key") != "" {
		t.Errorf("headers: %v", h)
	}

	// Rate limit with Retry-After, truncation and a hang are retried.
	sl.delays = nil
	s.RateLimitNext(1, 2*time.Second)
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	if len(sl.delays) != 1 || sl.delays[0] != 2*time.Second {
		t.Errorf("Retry-After not honoured: %v", sl.delays)
	}
	s.TruncateNext(1)
	s.HangNext(0)
	if _, err := c.ListPage(ctx, "", 200, 0); err != nil {
		t.Errorf("after truncation: %v", err)
	}
	s.HangNext(1)
	if _, err := c.Health(ctx); err != nil {
		t.Errorf("after a hang: %v", err)
	}

	// Permanent answers.
	st, _ := store.DecodeStage(fixture[0])
	raw, err := c.GetStage(ctx, st.ID)
	if err != nil || !bytes.Equal(raw, fixture[0]) {
		t.Errorf("GetStage: %v", err)
	}
	if _, err := c.GetStage(ctx, store.StageID(bytes.Repeat([]byte("0"), 64))); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetStage missing: %v", err)
	}
	if err := c.DeleteStage(ctx, st.ID); !errors.Is(err, registry.ErrUnauthorized) {
		t.Errorf("DELETE without key: %v", err)
	}
	keyed, _ := registry.New(s.URL(), registry.Options{APIKey: "k", Sleep: sl.Sleep})
	if _, isNew, err := keyed.PutStage(ctx, fixture[0]); err != nil || isNew {
		t.Errorf("PutStage existing: isNew %v, %v", isNew, err)
	}
	if err := keyed.UpdateLifecycle(ctx, st.ID, store.Active); !errors.Is(err, store.ErrInvalidTransition) {
		t.Errorf("Active → Active: %v", err)
	}
	if err := keyed.DeleteStage(ctx, st.ID); err != nil {
		t.Errorf("DELETE: %v", err)
	}
	if err := keyed.DeleteStage(ctx, st.ID); err != nil {
		t.Errorf("DELETE again (404 counts as done): %v", err)
	}
	h, err := keyed.Health(ctx)
	if err != nil || !h.HasStore || h.Stats.Total != 84 || h.Status != "ok" {
		t.Errorf("Health: %+v, %v", h, err)
	}
}

// BenchmarkListAll pages through 1,000 generated stages (~5 KB each) with
// the real client, 200 per page, over loopback.
func BenchmarkListAll(b *testing.B) {
	s, err := registrytest.NewServer(registrytest.Options{Generate: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c, err := registry.New(s.URL(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var bytesRead int64
	b.ResetTimer()
	for b.Loop() {
		for offset := 0; ; {
			p, err := c.ListPage(ctx, "", registry.MaxPageLimit, offset)
			if err != nil {
				b.Fatal(err)
			}
			for _, raw := range p.Stages {
				bytesRead += int64(len(raw))
			}
			offset += len(p.Stages)
			if len(p.Stages) == 0 || offset >= p.Total {
				break
			}
		}
	}
	b.ReportMetric(float64(bytesRead)/float64(b.N)/1e6, "MB/op")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/5, "ms/page")
}

// TestClientRedactsEchoedKey: against every kind of EchoKeyNext answer
// the real client fails with an error, and neither the error nor its
// log lines hold the key.
func TestClientRedactsEchoedKey(t *testing.T) {
	const key = "sk-Tq7x9Wv2/echo me"
	s, err := registrytest.NewServer(registrytest.Options{Generate: 3, StageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, status := range []int{401, 403, 429, 500, 503, 302, 200} {
		var logs bytes.Buffer
		c, err := registry.New(s.URL(), registry.Options{APIKey: key, MaxAttempts: 2, Sleep: (&noSleep{}).Sleep,
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err != nil {
			t.Fatal(err)
		}
		s.EchoKeyNext(1000, status)
		_, err = c.ListPage(context.Background(), "active", 10, 0)
		if err == nil {
			t.Errorf("status %d: ListPage succeeded", status)
			continue
		}
		for _, form := range []string{key, url.QueryEscape(key), url.PathEscape(key), key[:len(key)/2]} {
			if strings.Contains(err.Error(), form) || strings.Contains(logs.String(), form) {
				t.Errorf("status %d: %q shows in the error or the log:\n%v\n%s", status, form, err, logs.String())
			}
		}
	}
	s.EchoKeyNext(0, 0)
}
