package store

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecodeStage: DecodeStage never panics; when it succeeds, Verify never
// panics and always reports the five checks, the identity preimages are
// fixed points of CanonicalJSON, and decoding the stage's bytes again (what
// MarshalJSON returns) yields an identical Stage.
func FuzzDecodeStage(f *testing.F) {
	for _, raw := range stdlibRaw(f) {
		f.Add([]byte(raw))
	}
	for _, v := range canonVectors(f) {
		f.Add([]byte(v.Stage))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeStage(data)
		if err != nil {
			return
		}
		r := Verify(s)
		if len(r.Checks) != 5 {
			t.Fatalf("Verify returned %d checks", len(r.Checks))
		}
		for _, order := range []KeyOrder{OrderSerdeJCS, OrderRFC8785} {
			st, si, err := IdentityPreimages(s.Name, s.Signature, order)
			if err != nil {
				if r.Check(CheckID).Status == CheckPass {
					t.Fatalf("id check passed but preimages fail: %v", err)
				}
				continue
			}
			for _, pre := range [][]byte{st, si} {
				again, err := CanonicalJSON(pre, order)
				if err != nil || !bytes.Equal(again, pre) {
					t.Fatalf("preimage is not canonical:\n%s\n%s (%v)", pre, again, err)
				}
			}
		}
		enc, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodeStage(bytes.Clone(enc))
		if err != nil {
			t.Fatalf("re-decoding a decoded stage failed: %v", err)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("decode→encode→decode changed the stage:\n%#v\n%#v", s, s2)
		}
	})
}

// FuzzCanonicalJSON: CanonicalJSON never panics; its output is valid JSON
// and canonicalizing it again changes nothing; it accepts nothing that
// encoding/json rejects.
func FuzzCanonicalJSON(f *testing.F) {
	for _, v := range canonVectors(f) {
		f.Add([]byte(v.Stage), false)
		f.Add([]byte(v.StageIDPreimage), true)
	}
	for _, s := range []string{
		`{"a":1,"ab":2,"a b":3,"a!":4}`,
		`[0,-0,1e21,1.5e-7,18446744073709551616,-9223372036854775809,5e-324]`,
		`"\ud83d\ude00\u0001\/"`,
		`{"a":1,"a":2}`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, rfc bool) {
		order := OrderSerdeJCS
		if rfc {
			order = OrderRFC8785
		}
		out, err := CanonicalJSON(data, order)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted input encoding/json rejects: %q", data)
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q", out)
		}
		again, err := CanonicalJSON(out, order)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%q\n%q (%v)", out, again, err)
		}
	})
}
