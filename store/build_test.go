package store

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func testKey(seed byte) ed25519.PrivateKey {
	s := sha256.Sum256([]byte{seed})
	return ed25519.NewKeyFromSeed(s[:])
}

func TestBuildStageReproducesStdlib(t *testing.T) {
	// list_length (spec §1.12) rebuilt from its parts gives the same id,
	// signature_id and signature as the real stage.
	var want *Stage
	for _, s := range stdlibStages(t) {
		if s.Name == "list_length" {
			want = s
		}
	}
	if want == nil {
		t.Fatal("list_length not in fixture")
	}
	got, err := BuildStage(StageSpec{
		Name:               "list_length",
		Description:        want.Description,
		Input:              json.RawMessage(`{"kind": "List", "value": {"kind": "Any"}}`),
		Output:             json.RawMessage(`{"kind":"Number"}`),
		Effects:            []Effect{{Kind: EffectPure}},
		ImplementationHash: StdlibImplementationHash("list_length"),
		Examples:           want.Examples,
		Tags:               want.Tags,
		Aliases:            want.Aliases,
	}, StdlibSigningKey())
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != want.ID || got.SignatureID != want.SignatureID ||
		got.Ed25519Signature != want.Ed25519Signature || got.SignerPublicKey != want.SignerPublicKey {
		t.Errorf("built %s/%s/%s, want %s/%s/%s", got.ID, got.SignatureID, got.Ed25519Signature,
			want.ID, want.SignatureID, want.Ed25519Signature)
	}
	if got.ID != "2308c22f88cd97f75c23fe54539a902dab7517a48c15742a60a8b6272a6b01a0" {
		t.Errorf("list_length id %s differs from spec §6.3", got.ID)
	}
	if r := Verify(got); !r.OK() {
		t.Fatal(r.Err())
	}
}

func TestBuildStageFieldOrderAndDefaults(t *testing.T) {
	s, err := BuildStage(StageSpec{
		Name:                   "fmt",
		Description:            "d",
		Input:                  json.RawMessage(`{"kind":"Text"}`),
		Output:                 json.RawMessage(`{"kind":"Text"}`),
		Effects:                []Effect{{Kind: EffectPure}, {Kind: EffectNetwork}, {Kind: EffectCost, Cents: 5}, {Kind: EffectNetwork}, {Kind: EffectLlm, Model: "m"}, {Kind: EffectFsRead, Path: "/a-b"}, {Kind: EffectFsRead, Path: "/a/b"}},
		ImplementationCode:     "def execute(x):\n    return x\n",
		ImplementationLanguage: "python",
		Capabilities:           []Capability{CapProcess, CapNetwork, CapNetwork},
		Examples:               []Example{{Input: json.RawMessage(`"a"`), Output: json.RawMessage(` "a" `)}, {}},
		Tags:                   []string{"t"},
		Extra:                  []ExtraField{{Key: "x_future", Value: json.RawMessage(`{"a": 1}`)}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	ms, err := objectMembers(s.Raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		keys = append(keys, m.Key)
	}
	wantKeys := "id signature_id signature capabilities cost description examples lifecycle ed25519_signature signer_public_key implementation_code implementation_language tags name x_future"
	if got := strings.Join(keys, " "); got != wantKeys {
		t.Errorf("keys:\n got %s\nwant %s", got, wantKeys)
	}
	for _, frag := range []string{
		`"effects":{"effects":[{"effect":"Cost","cents":5},{"effect":"FsRead","path":"/a/b"},{"effect":"FsRead","path":"/a-b"},{"effect":"Llm","model":"m"},{"effect":"Network"},{"effect":"Pure"}]}`,
		`"capabilities":["Network","Process"]`,
		`"examples":[{"input":"a","output":"a"},{"input":null,"output":null}]`,
		`"lifecycle":"Active"`,
		`"ed25519_signature":null,"signer_public_key":null`,
		`"x_future":{"a":1}}`,
	} {
		if !bytes.Contains(s.Raw, []byte(frag)) {
			t.Errorf("raw lacks %s\nraw: %s", frag, s.Raw)
		}
	}
	if s.Signature.ImplementationHash != sha256Hex([]byte(s.ImplementationCode)) {
		t.Errorf("implementation_hash %s is not sha256(code)", s.Signature.ImplementationHash)
	}
	r := Verify(s)
	if !r.OK() {
		t.Fatal(r.Err())
	}
	if c := r.Check(CheckEd25519); c.Status != CheckSkipped || c.Detail != "unsigned" {
		t.Errorf("ed25519 check %+v, want skipped/unsigned", c)
	}
	if c := r.Check(CheckImplementationHash); c.Status != CheckPass {
		t.Errorf("implementation_hash check %+v", c)
	}
}

func TestBuildStageSignedByUserKey(t *testing.T) {
	key := testKey(7)
	s, err := BuildStage(StageSpec{
		Input: json.RawMessage(`{"kind":"Bytes"}`), Output: json.RawMessage(`{"kind":"Null"}`),
		Lifecycle: Deprecated(StageID(strings.Repeat("ab", 32))),
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	if s.HasName {
		t.Error("empty Name must leave the name field out")
	}
	if s.Lifecycle.Kind != LifecycleDeprecated {
		t.Errorf("lifecycle %v", s.Lifecycle)
	}
	r := Verify(s)
	if !r.OK() {
		t.Fatal(r.Err())
	}
	if want := "signed by " + hex.EncodeToString(key.Public().(ed25519.PublicKey)); r.Check(CheckEd25519).Detail != want {
		t.Errorf("ed25519 detail %q, want %q", r.Check(CheckEd25519).Detail, want)
	}
	// Building twice gives identical bytes.
	s2, err := BuildStage(StageSpec{
		Input: json.RawMessage(`{"kind":"Bytes"}`), Output: json.RawMessage(`{"kind":"Null"}`),
		Lifecycle: Deprecated(StageID(strings.Repeat("ab", 32))),
	}, key)
	if err != nil || !reflect.DeepEqual(s, s2) {
		t.Errorf("BuildStage is not deterministic: %v", err)
	}
}

func TestBuildStageErrors(t *testing.T) {
	text := json.RawMessage(`{"kind":"Text"}`)
	cases := []struct {
		name string
		spec StageSpec
		key  ed25519.PrivateKey
		want string
	}{
		{"no input", StageSpec{Output: text}, nil, "Input is empty"},
		{"bad output", StageSpec{Input: text, Output: json.RawMessage(`{"kind":`)}, nil, "Output is not valid JSON"},
		{"short key", StageSpec{Input: text, Output: text}, ed25519.PrivateKey{1, 2, 3}, "private key is 3 bytes"},
		{"effect without kind", StageSpec{Input: text, Output: text, Effects: []Effect{{}}}, nil, "effect has no Kind"},
		{"input not a type", StageSpec{Input: json.RawMessage(`[1]`), Output: text}, nil, "signature"},
		{"bad example", StageSpec{Input: text, Output: text, Examples: []Example{{Input: json.RawMessage(`{`)}}}, nil, "Examples[0].Input"},
		{"bad extra", StageSpec{Input: text, Output: text, Extra: []ExtraField{{Key: "k"}}}, nil, `Extra["k"] is empty`},
		{"unknown lifecycle", StageSpec{Input: text, Output: text, Lifecycle: Lifecycle{Kind: LifecycleUnknown, Other: `"Frozen`}}, nil, "build stage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := BuildStage(c.spec, c.key)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestBuildStageUnknownValues(t *testing.T) {
	// A stage from a newer noether: an unknown effect and type kind are
	// written from their raw bytes, hashed best-effort, kept and flagged.
	s, err := BuildStage(StageSpec{
		Name:    "future",
		Input:   json.RawMessage(`{"kind":"Tensor","value":{"dims":[2,3]}}`),
		Output:  json.RawMessage(`{"kind":"Text"}`),
		Effects: []Effect{{Kind: "Teleport", Raw: json.RawMessage(`{"effect":"Teleport","where":"moon"}`)}, {Kind: EffectPure}},
	}, testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(s.Raw, []byte(`{"effect":"Pure"},{"effect":"Teleport","where":"moon"}`)) {
		t.Errorf("unknown effect not written after known ones: %s", s.Raw)
	}
	r := Verify(s)
	if !r.OK() {
		t.Fatal(r.Err())
	}
	c := r.Check(CheckKnownValues)
	if c.Status != CheckSkipped || !strings.Contains(c.Detail, `effect "Teleport"`) || !strings.Contains(c.Detail, `type kind "Tensor"`) {
		t.Errorf("known_values check %+v", c)
	}
}
