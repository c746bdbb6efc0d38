package mpack

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestReaderRoundTrip(t *testing.T) {
	type rec struct {
		S   string            `msgpack:"s"`
		B   []byte            `msgpack:"b"`
		I   int64             `msgpack:"i"`
		N   int64             `msgpack:"n"`
		T   bool              `msgpack:"t"`
		L   []string          `msgpack:"l"`
		M   map[string]string `msgpack:"m"`
		Big string            `msgpack:"big"`
	}
	in := rec{S: "é", B: []byte{0, 1}, I: 1 << 40, N: -300, T: true, L: []string{"a", "b"}, M: map[string]string{"k": "v"}, Big: strings.Repeat("x", 70000)}
	b, err := msgpack.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	r := New(b)
	n, err := r.MapLen()
	if err != nil || n != 8 {
		t.Fatalf("MapLen = %d, %v", n, err)
	}
	got := map[string]any{}
	for range n {
		k, err := r.Str()
		if err != nil {
			t.Fatal(err)
		}
		switch string(k) {
		case "s", "big":
			v, err := r.Str()
			if err != nil {
				t.Fatal(err)
			}
			got[string(k)] = string(v)
		case "b":
			v, err := r.Bin()
			if err != nil {
				t.Fatal(err)
			}
			got["b"] = v
		case "i", "n":
			v, err := r.Int()
			if err != nil {
				t.Fatal(err)
			}
			got[string(k)] = v
		case "t":
			v, err := r.Bool()
			if err != nil {
				t.Fatal(err)
			}
			got["t"] = v
		default:
			if err := r.Skip(0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.Left() != 0 {
		t.Fatalf("%d bytes left", r.Left())
	}
	if got["s"] != "é" || !bytes.Equal(got["b"].([]byte), []byte{0, 1}) || got["i"] != int64(1<<40) ||
		got["n"] != int64(-300) || got["t"] != true || got["big"] != in.Big {
		t.Fatalf("decoded %v", got)
	}
}

func TestReaderRefusesHostileInput(t *testing.T) {
	deep := bytes.Repeat([]byte{0x91}, 100) // arrays nested 100 deep
	for _, tc := range []struct {
		name string
		in   []byte
		read func(r *Reader) error
	}{
		{"str32 claiming 4 GB", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}, func(r *Reader) error { _, err := r.Str(); return err }},
		{"array32 claiming 4G elements (issue #401's input)", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, func(r *Reader) error { _, err := r.ArrayLen(); return err }},
		{"map16 longer than the input", []byte{0xde, 0x00, 0x10, 0xa1, 'a'}, func(r *Reader) error { _, err := r.MapLen(); return err }},
		{"bin where a string is wanted", []byte{0xc4, 0x01, 'x'}, func(r *Reader) error { _, err := r.Str(); return err }},
		{"string where bin is wanted", []byte{0xa1, 'x'}, func(r *Reader) error { _, err := r.Bin(); return err }},
		{"truncated int", []byte{0xcf, 0x01}, func(r *Reader) error { _, err := r.Int(); return err }},
		{"uint64 over int64", []byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, func(r *Reader) error { _, err := r.Int(); return err }},
		{"skip nested too deep", deep, func(r *Reader) error { return r.Skip(0) }},
		{"unknown type", []byte{0xc1}, func(r *Reader) error { return r.Skip(0) }},
		{"empty", nil, func(r *Reader) error { _, err := r.Next(); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(tc.in)
			if err := tc.read(&r); err == nil {
				t.Fatalf("accepted %x", tc.in)
			}
		})
	}
	r := New(nil)
	if _, err := r.Take(1); !errors.Is(err, ErrTruncated) {
		t.Fatalf("Take past the end: %v, want ErrTruncated", err)
	}
}

// FuzzSkip: skipping any input never panics and never reads past the end.
func FuzzSkip(f *testing.F) {
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0xa1, 'a', 0x92, 0x01, 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := New(b)
		for r.Left() > 0 {
			before := r.Left()
			if err := r.Skip(0); err != nil {
				return
			}
			if r.Left() >= before {
				t.Fatalf("Skip made no progress")
			}
		}
	})
}
