package bundle

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// decodePayload tables: msgpack widths the reader must accept, and
// hostile headers it must refuse without allocating.
func TestDecodePayload(t *testing.T) {
	id := bytes.Repeat([]byte("a"), 64)
	str8 := append([]byte{0xd9, 64}, id...)
	str16 := append([]byte{0xda, 0, 64}, id...)
	active := []byte{0xa6, 'a', 'c', 't', 'i', 'v', 'e'}
	cases := []struct {
		name string
		p    []byte
		ok   bool
	}{
		{"str8 id, bin8", cat([]byte{0x93}, str8, active, []byte{0xc4, 2, '{', '}'}), true},
		{"str16 id, bin16, array16", cat([]byte{0xdc, 0, 3}, str16, active, []byte{0xc5, 0, 2, '{', '}'}), true},
		{"bin32", cat([]byte{0x93}, str8, active, []byte{0xc6, 0, 0, 0, 2, '{', '}'}), true},
		{"array32 of 2^32-1", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, false},
		{"array of 2", cat([]byte{0x92}, str8, active), false},
		{"str32 huge", []byte{0x93, 0xdb, 0xff, 0xff, 0xff, 0xff}, false},
		{"bin32 huge", cat([]byte{0x93}, str8, active, []byte{0xc6, 0xff, 0xff, 0xff, 0xff}), false},
		{"empty JSON", cat([]byte{0x93}, str8, active, []byte{0xc4, 0}), false},
		{"bad id", cat([]byte{0x93, 0xa2, 'x', 'y'}, active, []byte{0xc4, 2, '{', '}'}), false},
		{"bad lifecycle", cat([]byte{0x93}, str8, []byte{0xa3, 'o', 'l', 'd'}, []byte{0xc4, 2, '{', '}'}), false},
		{"JSON as str", cat([]byte{0x93}, str8, active, []byte{0xa2, '{', '}'}), false},
		{"trailing byte", cat([]byte{0x93}, str8, active, []byte{0xc4, 2, '{', '}', 0xc0}), false},
		{"map", []byte{0x83}, false},
		{"empty", nil, false},
	}
	for _, tc := range cases {
		r, err := decodePayload(tc.p)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.ok && (string(r.ID) != string(id) || string(r.Raw) != "{}") {
			t.Errorf("%s: decoded %+v", tc.name, r)
		}
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// FuzzReadBundle: any bytes give an error or a fully checked bundle,
// never a panic or an unbounded allocation; every record read re-encodes
// to the frame the library writes for it.
func FuzzReadBundle(f *testing.F) {
	src := newMirror(f)
	publish(f, src, decodeAll(f, stdlibRaws(f)[:2]), t0)
	plain := export(f, src, ExportOptions{SignKey: keyOf("fuzz")})
	f.Add(plain)
	f.Add(export(f, src, ExportOptions{}))
	f.Add(export(f, src, ExportOptions{Gzip: true}))
	f.Add(plain[:len(plain)/2])
	f.Add(plain[:1536])
	recs := recordsOf(decodeAll(f, stdlibRaws(f)[:1]))
	man, _ := manifestFor(f, recs)
	hostile := []byte{0, 0, 0, 5, 0, 0, 0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff}
	man.RecordsBytes = int64(len(hostile)) + trailerSize
	f.Add(craft(f, man, [][]byte{hostile}, nil))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		rd, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		man := rd.Manifest()
		n := 0
		for {
			r, err := rd.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
			requireMsgpackFrame(t, string(r.ID), &r)
			n++
		}
		if n != man.Total {
			t.Fatalf("read %d records, the manifest says %d", n, man.Total)
		}
	})
}
