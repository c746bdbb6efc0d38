package sync

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
	"github.com/noether-mirror/mirror/mirror/feed"
	"github.com/noether-mirror/mirror/store"
	"github.com/noether-mirror/mirror/sync/registry"
)

// streamUpstream is a Registry and FeedSource that serves one change
// stream, and empty pages.
type streamUpstream struct {
	caps   feed.Capabilities
	stream []byte
}

func (u *streamUpstream) BaseURL() string { return "http://feed.test" }
func (u *streamUpstream) ListPage(context.Context, string, int, int) (registry.Page, error) {
	return registry.Page{HasTotal: true}, nil
}
func (u *streamUpstream) GetStage(context.Context, store.StageID) (json.RawMessage, error) {
	return nil, store.ErrNotFound
}
func (u *streamUpstream) GetResult(context.Context, string, string, url.Values) (json.RawMessage, error) {
	return json.Marshal(u.caps)
}
func (u *streamUpstream) Stream(context.Context, string, string, string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(u.stream)), nil
}

// TestFeedBatchBytesBounded: a batch of items is staged once it holds
// feedBatchBytes, not only after feedBatch items, so an upstream that
// sends large stages cannot make a sync hold 200 of them (each up to
// 16 MiB: over 3 GiB) in memory at once.
func TestFeedBatchBytesBounded(t *testing.T) {
	const items, size = 12, 4 << 20
	h := feed.Header{From: 0, Full: true, To: 1, Digest: "d", Items: items}
	var buf bytes.Buffer
	fw, err := feed.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for i := range items {
		raw := bytes.Repeat([]byte{'a' + byte(i)}, size) // not a stage: quarantined
		if err := fw.Add(mirror.ChangeQuarantined, "x", raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	up := &streamUpstream{caps: feed.Capabilities{Mirror: feed.Software, FeedVersion: feed.Version, Generation: 1, Digest: "d"}, stream: buf.Bytes()}
	prev, most := 0, 0
	opts := Options{Progress: func(p Progress) {
		if p.Lifecycle == "feed" {
			most = max(most, p.Stages-prev)
			prev = p.Stages
		}
	}}
	m, err := mirror.Create(filepath.Join(t.TempDir(), "m.db"), mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, _ = Sync(t.Context(), m, up, opts)
	if most*size > feedBatchBytes {
		t.Errorf("a batch held %d items of %d bytes, over the %d-byte bound", most, size, feedBatchBytes)
	}
}
