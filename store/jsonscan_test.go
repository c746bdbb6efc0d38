package store

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

var scanSeeds = []string{
	`{}`, `[]`, `{"a":1}`, ` {"a" : [1, 2.5e-3, -0, true, false, null, "x\u00e9\n"]} `,
	`{"a":}`, `{"a":1,}`, `[1,]`, `01`, `1.`, `-`, `1e`, `"\x"`, `"\u12"`, "\"a\x01\"",
	`{"a":1}x`, `"\ud83d\ude00"`, `"\ud83d"`, `{"k\"ey":"v"}`, `[[[[]]]]`, `tru`, `nul`,
}

// FuzzScanner: the hand-written scanner accepts exactly what encoding/json
// accepts, and decodes (valid UTF-8) strings and object keys the same.
func FuzzScanner(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) && ValidJSON(b, maxDepth) == nil && strings.Count(string(b), "[")+strings.Count(string(b), "{") < maxDepth {
			t.Fatalf("scanner accepts invalid JSON %q", b)
		}
		if json.Valid(b) && ValidJSON(b, maxDepth) != nil && strings.Count(string(b), "[")+strings.Count(string(b), "{") < maxDepth {
			t.Fatalf("scanner rejects valid JSON %q: %v", b, ValidJSON(b, maxDepth))
		}
		// Keys are compared for valid UTF-8 only: encoding/json replaces
		// invalid bytes with U+FFFD, and DecodeStage refuses them first.
		if ms, err := objectMembers(b); err == nil && utf8.Valid(b) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("objectMembers accepted %q that encoding/json rejects: %v", b, err)
			}
			for _, mem := range ms {
				if _, ok := m[mem.Key]; !ok {
					t.Fatalf("key %q decoded differently from encoding/json", mem.Key)
				}
				if string(b[mem.Start:mem.End]) != string(mem.Value) {
					t.Fatalf("member span is wrong")
				}
			}
		}
		// Invalid UTF-8 is rejected before scanning (DecodeStage checks it).
		if len(b) > 0 && b[0] == '"' && utf8.Valid(b) {
			got, err := decodeString(b)
			var want string
			if werr := json.Unmarshal(b, &want); (err == nil) != (werr == nil) || (err == nil && got != want) {
				t.Fatalf("decodeString(%q) = %q, %v; encoding/json: %q, %v", b, got, err, want, werr)
			}
		}
	})
}

func TestScannerTable(t *testing.T) {
	for _, s := range scanSeeds {
		b := []byte(s)
		if got, want := ValidJSON(b, maxDepth) == nil, json.Valid(b); got != want {
			t.Errorf("validJSON(%q) ok=%v, encoding/json says %v", s, got, want)
		}
	}
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	if err := ValidJSON([]byte(deep), maxDepth); err == nil || !strings.Contains(err.Error(), "deeper than 128") {
		t.Errorf("ValidJSON(too deep) = %v, want a depth error", err)
	}
	// A smaller limit counts from the outermost value.
	three := []byte(`{"a":[{"b":1}]}`)
	if err := ValidJSON(three, 3); err != nil {
		t.Errorf("ValidJSON(3 levels, limit 3) = %v", err)
	}
	if err := ValidJSON(three, 2); err == nil {
		t.Errorf("ValidJSON(3 levels, limit 2) = nil, want a depth error")
	}
}

func TestJSONKind(t *testing.T) {
	for in, want := range map[string]string{
		``: "nothing", `{}`: "an object", `[1]`: "an array", `"x"`: "a string",
		`true`: "a boolean", `false`: "a boolean", `null`: "null", `-1.5`: "a number",
	} {
		if got := JSONKind(json.RawMessage(in)); got != want {
			t.Errorf("JSONKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSpecialBytes checks the word-at-a-time string scan against a byte
// loop on words mixing plain bytes with quotes, backslashes, control
// characters and bytes of 0x80 and above, in every position.
func TestSpecialBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	palette := []byte{'"', '\\', 0x00, 0x1f, 0x20, 0x21, '"' + 1, '\\' - 1, 0x7f, 0x80, 0xa2, 0xdc, 0xff, 'a', 'z'}
	for range 200_000 {
		var w [8]byte
		for i := range w {
			if rng.IntN(3) == 0 {
				w[i] = palette[rng.IntN(len(palette))]
			} else {
				w[i] = byte(rng.Uint32())
			}
		}
		want := 8
		for i, c := range w {
			if c == '"' || c == '\\' || c < 0x20 {
				want = i
				break
			}
		}
		got := 8
		if sp := specialBytes(binary.LittleEndian.Uint64(w[:])); sp != 0 {
			got = bits.TrailingZeros64(sp) / 8
		}
		if got != want {
			t.Fatalf("% x: first special byte at %d, want %d", w, got, want)
		}
	}
}
