package feed

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/mirror"
)

func sample(t testing.TB) ([]byte, []Item) {
	items := []Item{
		{Kind: mirror.ChangeAdded, Key: strings.Repeat("a", 64), Raw: []byte(`{"id":"a"}`)},
		{Kind: mirror.ChangeLifecycle, Key: strings.Repeat("b", 64), Raw: []byte("{\n \"id\": \"b\"\n}")},
		{Kind: mirror.ChangeRemoved, Key: strings.Repeat("c", 64)},
		{Kind: mirror.ChangeQuarantined, Key: "x" + strings.Repeat("d", 64), Raw: []byte{0xff, 0, '{'}},
		{Kind: mirror.ChangeReleased, Key: strings.Repeat("e", 64)},
	}
	return encode(t, Header{From: 3, FromDigest: "f", To: 5, Digest: "d", Items: len(items)}, items), items
}

// encode writes a stream of items under h.
func encode(t testing.TB, h Header, items []Item) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if err := w.Add(it.Kind, it.Key, it.Raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func readAll(b []byte) (Header, []Item, error) {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return Header{}, nil, err
	}
	var out []Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			return r.Header(), out, nil
		}
		if err != nil {
			return r.Header(), out, err
		}
		out = append(out, it)
	}
}

func TestRoundTrip(t *testing.T) {
	b, want := sample(t)
	h, got, err := readAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.From != 3 || h.To != 5 || h.Version != Version || h.Items != len(want) {
		t.Fatalf("header %+v", h)
	}
	if len(got) != len(want) {
		t.Fatalf("%d items, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Kind != want[i].Kind || got[i].Key != want[i].Key || !bytes.Equal(got[i].Raw, want[i].Raw) {
			t.Errorf("item %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestCutOffAnywhere: a stream cut at any byte is an error wrapping
// ErrTruncated, never a shorter feed.
func TestCutOffAnywhere(t *testing.T) {
	b, _ := sample(t)
	for n := 0; n < len(b); n++ {
		_, _, err := readAll(b[:n])
		if n < len(magic) && errors.Is(err, ErrFormat) {
			continue // not even the magic: not a feed
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d of %d: err = %v, want ErrTruncated", n, len(b), err)
		}
	}
}

// TestDamageAnywhere: flipping any byte is detected.
func TestDamageAnywhere(t *testing.T) {
	b, _ := sample(t)
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x20
		if _, _, err := readAll(c); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	if _, _, err := readAll(append(bytes.Clone(b), 0)); !errors.Is(err, ErrFormat) {
		t.Fatalf("trailing byte: err = %v", err)
	}
}

func TestWriterCountsItems(t *testing.T) {
	w, err := NewWriter(io.Discard, Header{Items: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close with a missing item succeeded")
	}
	w, _ = NewWriter(io.Discard, Header{Items: 0})
	if err := w.Add(mirror.ChangeRemoved, "k", nil); err == nil {
		t.Fatal("Add past the header's count succeeded")
	}
}

func TestOtherVersionRefused(t *testing.T) {
	var buf bytes.Buffer
	buf.Write(magic)
	hdr := []byte(`{"version":2}`)
	buf.WriteByte(byte(len(hdr)))
	buf.Write(hdr)
	if _, err := NewReader(&buf); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzReader: no input crashes the reader or makes it allocate past its
// limits; whatever it accepts re-encodes to a stream that reads back to
// the same items.
func FuzzReader(f *testing.F) {
	b, _ := sample(f)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte("NMFEED1\n\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, items, err := readAll(data)
		if err != nil {
			return
		}
		_, again, err := readAll(encode(t, h, items))
		if err != nil || len(again) != len(items) {
			t.Fatalf("re-encoded stream: %d items, %v", len(again), err)
		}
		for i := range items {
			if again[i].Kind != items[i].Kind || again[i].Key != items[i].Key || !bytes.Equal(again[i].Raw, items[i].Raw) {
				t.Fatalf("item %d reads back as %+v, was %+v", i, again[i], items[i])
			}
		}
	})
}

func TestParseCapabilities(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want error
	}{
		{`{"mirror":"noether-mirror","feed_version":1,"generation":4}`, nil},
		{`{"mirror":"noether-mirror","feed_version":2}`, ErrFormat},
		{`{"mirror":"something-else","feed_version":1}`, ErrNotAFeed},
		{`{"total_stages":3}`, ErrNotAFeed},
		{`[1,2]`, ErrNotAFeed},
		{``, ErrNotAFeed},
	} {
		c, err := ParseCapabilities([]byte(tc.raw))
		if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("%s: err = %v, want %v", tc.raw, err, tc.want)
		}
		if err == nil && c.Generation != 4 {
			t.Errorf("%s: generation %d", tc.raw, c.Generation)
		}
	}
}
