package store

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stdlibRaw returns the exact bytes of every stage in the stdlib fixture.
func stdlibRaw(t testing.TB) []json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "noether-stdlib-stages.json"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []json.RawMessage
	if err := json.Unmarshal(data, &stages); err != nil {
		t.Fatal(err)
	}
	if len(stages) != 85 {
		t.Fatalf("fixture has %d stages, want 85", len(stages))
	}
	return stages
}

func stdlibStages(t testing.TB) []*Stage {
	t.Helper()
	var out []*Stage
	for i, raw := range stdlibRaw(t) {
		s, err := DecodeStage(raw)
		if err != nil {
			t.Fatalf("stage %d: %v", i, err)
		}
		out = append(out, s)
	}
	return out
}

type canonVector struct {
	Name                string          `json:"name"`
	Stage               json.RawMessage `json:"stage"`
	StageID             string          `json:"stage_id"`
	SignatureID         string          `json:"signature_id"`
	StageIDPreimage     string          `json:"stage_id_preimage"`
	SignatureIDPreimage string          `json:"signature_id_preimage"`
}

func canonVectors(t testing.TB) []canonVector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "canonical-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []canonVector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 14 {
		t.Fatalf("fixture has %d vectors, want 14", len(vs))
	}
	return vs
}

func TestCanonicalVectors(t *testing.T) {
	for _, v := range canonVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			s, err := DecodeStage(v.Stage)
			if err != nil {
				t.Fatal(err)
			}
			st, si, err := IdentityPreimages(s.Name, s.Signature, OrderSerdeJCS)
			if err != nil {
				t.Fatal(err)
			}
			if string(st) != v.StageIDPreimage {
				t.Errorf("stage id preimage\n got %s\nwant %s", st, v.StageIDPreimage)
			}
			if string(si) != v.SignatureIDPreimage {
				t.Errorf("signature id preimage\n got %s\nwant %s", si, v.SignatureIDPreimage)
			}
			id, sig, err := ComputeIDs(s.Name, s.Signature)
			if err != nil {
				t.Fatal(err)
			}
			if string(id) != v.StageID || id != s.ID {
				t.Errorf("id = %s, want %s (stage says %s)", id, v.StageID, s.ID)
			}
			if string(sig) != v.SignatureID || sig != s.SignatureID {
				t.Errorf("signature_id = %s, want %s (stage says %s)", sig, v.SignatureID, s.SignatureID)
			}
			// Canonicalizing the preimage again changes nothing.
			again, err := CanonicalJSON(st, OrderSerdeJCS)
			if err != nil || string(again) != string(st) {
				t.Errorf("CanonicalJSON(preimage) = %s, %v; want it unchanged", again, err)
			}
			r := Verify(s)
			if !r.OK() || r.IDOrder != OrderSerdeJCS || r.Legacy != "" {
				t.Errorf("Verify: %+v", r)
			}
		})
	}
}

// TestKeyOrderVectorsDiffer pins which vectors the RFC 8785 order changes:
// those with prefix keys followed by ' ' or '!', escaped characters or
// astral-vs-BMP keys.
func TestKeyOrderVectorsDiffer(t *testing.T) {
	differ := map[string]bool{}
	for _, v := range canonVectors(t) {
		s, err := DecodeStage(v.Stage)
		if err != nil {
			t.Fatal(err)
		}
		a, _, err := IdentityPreimages(s.Name, s.Signature, OrderSerdeJCS)
		if err != nil {
			t.Fatal(err)
		}
		b, _, err := IdentityPreimages(s.Name, s.Signature, OrderRFC8785)
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			differ[v.Name] = true
		}
	}
	for _, name := range []string{"keys_prefix_space_bang", "keys_astral_vs_bmp"} {
		if !differ[name] {
			t.Errorf("vector %s: RFC 8785 order should differ from serde_jcs", name)
		}
	}
	for _, name := range []string{"union_order_kept", "effects_paths", "range_floats", "rowpoly_var"} {
		if differ[name] {
			t.Errorf("vector %s: RFC 8785 order should equal serde_jcs", name)
		}
	}
}

func TestStdlibIDsAndSignatures(t *testing.T) {
	pub, err := hex.DecodeString(StdlibPublicKeyHex)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stdlibStages(t) {
		id, sig, err := ComputeIDs(s.Name, s.Signature)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if id != s.ID {
			t.Errorf("%s: computed id %s", s, id)
		}
		if sig != s.SignatureID {
			t.Errorf("%s: computed signature_id %s, stage has %s", s, sig, s.SignatureID)
		}
		if s.SignerPublicKey != StdlibPublicKeyHex {
			t.Errorf("%s: signer %s is not the stdlib key", s, s.SignerPublicKey)
		}
		sigBytes, err := hex.DecodeString(s.Ed25519Signature)
		if err != nil || !ed25519.Verify(pub, []byte(s.ID), sigBytes) {
			t.Errorf("%s: stdlib signature does not verify (%v)", s, err)
		}
		if h := StdlibImplementationHash(s.Name); h != s.Signature.ImplementationHash {
			t.Errorf("%s: stdlib hash %s, stage has %s", s, h, s.Signature.ImplementationHash)
		}
		// Re-signing with the derived key gives the same bytes (Ed25519 is
		// deterministic).
		if got := hex.EncodeToString(ed25519.Sign(StdlibSigningKey(), []byte(s.ID))); got != s.Ed25519Signature {
			t.Errorf("%s: re-signed %s, stage has %s", s, got, s.Ed25519Signature)
		}
	}
}

func TestStdlibSigningKey(t *testing.T) {
	k := StdlibSigningKey()
	if got := hex.EncodeToString(k.Public().(ed25519.PublicKey)); got != StdlibPublicKeyHex {
		t.Fatalf("stdlib public key = %s, want %s", got, StdlibPublicKeyHex)
	}
	k[0] ^= 1 // callers own the slice: mutating it must not leak
	if got := hex.EncodeToString(StdlibSigningKey().Public().(ed25519.PublicKey)); got != StdlibPublicKeyHex {
		t.Fatalf("StdlibSigningKey shares state between calls")
	}
}

// goldenID is one row of testdata/golden-ids.json: a stage description and
// the ids noether computes for it (spec §6.2/§6.3).
type goldenID struct {
	Name        string          `json:"name"`
	StageName   string          `json:"stage_name"`
	Input       json.RawMessage `json:"input"`
	Output      json.RawMessage `json:"output"`
	Effects     json.RawMessage `json:"effects"`
	ImplHash    string          `json:"implementation_hash"`
	StdlibHash  bool            `json:"stdlib_hash"`
	Format      string          `json:"format"` // v2, v1, v0
	StageID     string          `json:"stage_id"`
	SignatureID string          `json:"signature_id,omitempty"`
	Ed25519     string          `json:"ed25519_signature,omitempty"`
	Preimage    string          `json:"stage_id_preimage,omitempty"`
}

func loadGolden(t *testing.T) []goldenID {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "golden-ids.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []goldenID
	if err := json.Unmarshal(data, &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// goldenSignature decodes a golden row's signature through the real
// decoder.
func goldenSignature(t *testing.T, g goldenID) Signature {
	t.Helper()
	hash := g.ImplHash
	if g.StdlibHash {
		hash = StdlibImplementationHash(g.StageName)
	}
	hashJSON, _ := json.Marshal(hash)
	raw := `{"input":` + string(g.Input) + `,"output":` + string(g.Output) +
		`,"effects":{"effects":` + string(g.Effects) + `},"implementation_hash":` + string(hashJSON) + `}`
	var flags unknownFlags
	sig, err := decodeSignature(json.RawMessage(raw), &flags)
	if err != nil {
		t.Fatalf("%s: %v", g.Name, err)
	}
	return sig
}

func TestGoldenIDs(t *testing.T) {
	for _, g := range loadGolden(t) {
		t.Run(g.Name, func(t *testing.T) {
			sig := goldenSignature(t, g)
			tv, err := typedSignature(&sig)
			if err != nil {
				t.Fatal(err)
			}
			var pre []byte
			switch g.Format {
			case "v2":
				var sigPre []byte
				pre, sigPre = tv.preimages(g.StageName, OrderSerdeJCS)
				if g.SignatureID != "" && sha256Hex(sigPre) != g.SignatureID {
					t.Errorf("signature_id = %s, want %s", sha256Hex(sigPre), g.SignatureID)
				}
			case "v1":
				pre = tv.legacyV1ID(OrderSerdeJCS)
			case "v0":
				pre = tv.legacyV0ID()
			default:
				t.Fatalf("unknown format %q", g.Format)
			}
			if g.Preimage != "" && string(pre) != g.Preimage {
				t.Errorf("preimage\n got %s\nwant %s", pre, g.Preimage)
			}
			if got := sha256Hex(pre); got != g.StageID {
				t.Errorf("%s id = %s, want %s", g.Format, got, g.StageID)
			}
			if g.Ed25519 != "" {
				got := hex.EncodeToString(ed25519.Sign(StdlibSigningKey(), []byte(g.StageID)))
				if got != g.Ed25519 {
					t.Errorf("stdlib signature = %s, want %s", got, g.Ed25519)
				}
			}

			// Verify recognises the id in a stage carrying it.
			s := stageWithID(t, g.StageName, sig, StageID(g.StageID))
			r := Verify(s)
			c := r.Check(CheckID)
			if c.Status != CheckPass {
				t.Fatalf("Verify id check: %+v", c)
			}
			wantLegacy := g.Format
			if wantLegacy == "v2" {
				wantLegacy = ""
			}
			if r.Legacy != wantLegacy {
				t.Errorf("Legacy = %q, want %q (detail %q)", r.Legacy, wantLegacy, c.Detail)
			}
		})
	}
}

// stageWithID builds an unsigned stage with this name and signature but
// whatever id the caller gives.
func stageWithID(t *testing.T, name string, sig Signature, id StageID) *Stage {
	t.Helper()
	raw := `{"id":"` + string(id) + `","signature":` + string(sig.Raw) +
		`,"capabilities":[],"cost":{},"description":"d","examples":[],"lifecycle":"Active"`
	if name != "" {
		n, _ := json.Marshal(name)
		raw += `,"name":` + string(n)
	}
	s, err := DecodeStage([]byte(raw + "}"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestComputeIDsErrors(t *testing.T) {
	list := NType{Kind: KindList} // no element: only a hand-built value can lack it
	cases := []struct {
		name string
		sig  Signature
	}{
		{"zero signature", Signature{}},
		{"list without element", Signature{Input: list, Output: NType{Kind: KindText}}},
		{"unknown kind without raw", Signature{Input: NType{Kind: "Teleport"}, Output: NType{Kind: KindText}}},
		{"effect without kind", Signature{Input: NType{Kind: KindText}, Output: NType{Kind: KindText}, Effects: EffectSet{{}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, _, err := ComputeIDs("x", c.sig); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func BenchmarkComputeIDs(b *testing.B) {
	s := stdlibStages(b)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ComputeIDs(s.Name, s.Signature); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTypedRoundTrip: what is hashed is the typed form, not the received
// bytes: unknown keys are dropped, member order and number spelling do not
// matter, effects are sorted and deduplicated.
func TestTypedRoundTrip(t *testing.T) {
	ids := func(input, effects string) StageID {
		t.Helper()
		var flags unknownFlags
		sig, err := decodeSignature(json.RawMessage(`{"input":`+input+`,"output":{"kind":"Text"},"effects":{"effects":[`+effects+`]},"implementation_hash":"h"}`), &flags)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := ComputeIDs("n", sig)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	same := [][2]string{
		{`{"kind":"Text"}`, `{"kind":"Text","extra":[1,2],"value":null}`},
		{`{"kind":"List","value":{"kind":"Any"}}`, `{"value":{"kind":"Any","doc":"x"},"kind":"List"}`},
		{`{"kind":"Map","value":{"key":{"kind":"Text"},"value":{"kind":"Bool"}}}`, `{"kind":"Map","value":{"value":{"kind":"Bool"},"key":{"kind":"Text"},"x":1}}`},
		{`{"kind":"Record","value":{"a":{"kind":"Text"},"b":{"kind":"Null"}}}`, `{"kind":"Record","value":{"b":{"kind":"Bool"},"a":{"kind":"Text"},"b":{"kind":"Null"}}}`},
		{`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","min":0.0,"max":100}}}`, `{"kind":"Refined","value":{"refinement":{"max":1e2,"kind":"Range","min":-0,"step":5},"base":{"kind":"Number"}}}`},
		{`{"kind":"Refined","value":{"base":{"kind":"Any"},"refinement":{"kind":"OneOf","options":[5,{"a":1,"b":2}]}}}`, `{"kind":"Refined","value":{"base":{"kind":"Any"},"refinement":{"kind":"OneOf","options":[5.0,{"b":2,"a":1}]}}}`},
	}
	for _, p := range same {
		if a, b := ids(p[0], `{"effect":"Pure"}`), ids(p[1], `{"effect":"Pure"}`); a != b {
			t.Errorf("%s and %s should hash alike", p[0], p[1])
		}
	}
	if ids(`{"kind":"Text"}`, `{"effect":"Pure"},{"effect":"Network"},{"effect":"Pure"}`) != ids(`{"kind":"Text"}`, `{"effect":"Network"},{"effect":"Pure","x":1}`) {
		t.Error("effect sets should hash alike")
	}
	differ := [][2]string{
		{`{"kind":"Union","value":[{"kind":"Null"},{"kind":"Text"}]}`, `{"kind":"Union","value":[{"kind":"Text"},{"kind":"Null"}]}`},
		{`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","min":0}}}`, `{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","max":0}}}`},
		{`{"kind":"Var","value":"T"}`, `{"kind":"Var","value":"U"}`},
	}
	for _, p := range differ {
		if ids(p[0], "") == ids(p[1], "") {
			t.Errorf("%s and %s must hash differently", p[0], p[1])
		}
	}
}

// TestTypedValueErrors: hand-built values with missing parts are errors,
// never panics.
func TestTypedValueErrors(t *testing.T) {
	text := NType{Kind: KindText}
	nan := math.NaN()
	cases := map[string]NType{
		"map without key":            {Kind: KindMap, Value: &text},
		"map without value":          {Kind: KindMap, Key: &text},
		"refined without base":       {Kind: KindRefined, Refinement: &Refinement{Kind: "NonEmpty"}},
		"refined without refinement": {Kind: KindRefined, Base: &text},
		"NaN range":                  {Kind: KindRefined, Base: &text, Refinement: &Refinement{Kind: "Range", Min: &nan}},
		"bad OneOf option":           {Kind: KindRefined, Base: &text, Refinement: &Refinement{Kind: "OneOf", Options: []json.RawMessage{json.RawMessage(`{`)}}},
		"unknown refinement no raw":  {Kind: KindRefined, Base: &text, Refinement: &Refinement{Kind: "Prime"}},
		"bad record field":           {Kind: KindRecord, Fields: []Field{{Name: "a", Type: NType{}}}},
		"bad record-with field":      {Kind: KindRecordWith, Fields: []Field{{Name: "a", Type: NType{Kind: KindList}}}},
		"bad union member":           {Kind: KindUnion, Union: []NType{text, {}}},
		"unknown effect no raw":      text, // see below
	}
	for name, n := range cases {
		sig := Signature{Input: n, Output: text}
		if name == "unknown effect no raw" {
			sig.Effects = EffectSet{{Kind: "Teleport"}}
		}
		if _, _, err := ComputeIDs("x", sig); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	// Hand-built records with a repeated name keep the last, as serde does.
	a := Signature{Input: NType{Kind: KindRecord, Fields: []Field{{"a", text}, {"a", NType{Kind: KindBool}}}}, Output: text}
	b := Signature{Input: NType{Kind: KindRecord, Fields: []Field{{"a", NType{Kind: KindBool}}}}, Output: text}
	ia, _, errA := ComputeIDs("x", a)
	ib, _, errB := ComputeIDs("x", b)
	if errA != nil || errB != nil || ia != ib {
		t.Errorf("duplicate record field: %s %s %v %v", ia, ib, errA, errB)
	}
}

func TestIDBytes(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	for _, c := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{strings.Repeat("f", 64), true},
		{strings.ToUpper(good), false},
		{good[:63], false},
		{good + "0", false},
		{good[:63] + "g", false},
		{"", false},
	} {
		b, ok := IDBytes(c.in)
		if ok != c.ok || ValidID(c.in) != c.ok {
			t.Errorf("IDBytes(%q): ok %v, ValidID %v; want %v", c.in, ok, ValidID(c.in), c.ok)
			continue
		}
		if want, _ := hex.DecodeString(c.in); ok && !bytes.Equal(b[:], want) {
			t.Errorf("IDBytes(%q) = %x", c.in, b)
		}
	}
}
