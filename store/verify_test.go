package store

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

var checkNames = []string{CheckID, CheckSignatureID, CheckEd25519, CheckImplementationHash, CheckKnownValues}

// assertChecks fails unless r lists the five checks in order.
func assertChecks(t *testing.T, r Report) {
	t.Helper()
	if len(r.Checks) != len(checkNames) {
		t.Fatalf("report has %d checks, want %d: %+v", len(r.Checks), len(checkNames), r.Checks)
	}
	for i, c := range r.Checks {
		if c.Name != checkNames[i] {
			t.Fatalf("check %d is %q, want %q", i, c.Name, checkNames[i])
		}
	}
}

func TestVerifyStdlib(t *testing.T) {
	for _, s := range stdlibStages(t) {
		r := Verify(s)
		assertChecks(t, r)
		if !r.OK() || r.Err() != nil {
			t.Errorf("%s: %v", s, r.Err())
		}
		want := map[string]CheckStatus{CheckID: CheckPass, CheckSignatureID: CheckPass, CheckEd25519: CheckPass,
			CheckImplementationHash: CheckPass, CheckKnownValues: CheckPass}
		for _, c := range r.Checks {
			if c.Status != want[c.Name] {
				t.Errorf("%s: check %s = %s (%s), want %s", s, c.Name, c.Status, c.Detail, want[c.Name])
			}
		}
		if r.IDOrder != OrderSerdeJCS || r.Legacy != "" || r.ID != s.ID {
			t.Errorf("%s: IDOrder %v Legacy %q ID %s", s, r.IDOrder, r.Legacy, r.ID)
		}
		if d := r.Check(CheckImplementationHash).Detail; d != "stdlib convention" {
			t.Errorf("%s: implementation_hash detail %q", s, d)
		}
	}
}

// nextAlnum returns a different character of the same class (hex digit,
// letter, digit) so a mutation keeps hex valid.
func nextAlnum(c byte) byte {
	const hexd = "0123456789abcdef"
	if i := strings.IndexByte(hexd, c); i >= 0 {
		return hexd[(i+1)%16]
	}
	switch {
	case c == 'z' || c == 'Z':
		return c - 1
	case (c >= 'a' && c < 'z') || (c >= 'A' && c < 'Z'):
		return c + 1
	}
	return 'x'
}

// mutateString flips one letter or digit inside the first JSON string
// value at or after from in raw (skipping object keys when asked),
// returning a copy. Escape sequences are left intact.
func mutateString(t *testing.T, raw []byte, from, to int, skipKeys bool) []byte {
	t.Helper()
	for i := from; i < to; i++ {
		if raw[i] != '"' {
			continue
		}
		// Find the closing quote and the last plain alphanumeric byte.
		pick, end := -1, -1
		for j := i + 1; j < to; j++ {
			c := raw[j]
			if c == '\\' {
				j++
				continue
			}
			if c == '"' {
				end = j
				break
			}
			if (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
				pick = j
			}
		}
		if end < 0 {
			break
		}
		isKey := bytes.HasPrefix(bytes.TrimLeft(raw[end+1:to], " \n\t"), []byte(":"))
		if (skipKeys && isKey) || pick < 0 {
			i = end
			continue
		}
		out := bytes.Clone(raw)
		out[pick] = nextAlnum(out[pick])
		return out
	}
	t.Fatalf("no string value in %s", raw[from:to])
	return nil
}

// span returns the byte range of a member's value inside raw (top level,
// or inside "signature" when sig is true).
func span(t *testing.T, raw []byte, key string, sig bool) (int, int) {
	t.Helper()
	ms, err := objectMembers(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if sig && m.Key == "signature" {
			inner, err := objectMembers(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			for _, im := range inner {
				if im.Key == key {
					return m.Start + im.Start, m.Start + im.End
				}
			}
		}
		if !sig && m.Key == key {
			return m.Start, m.End
		}
	}
	t.Fatalf("no member %q", key)
	return 0, 0
}

// TestTamperDetection changes one character of each hashed field, of the
// signature and of the key, in every stdlib stage, and checks that the
// right check (and only it) catches it.
func TestTamperDetection(t *testing.T) {
	type tamper struct {
		field    string
		inSig    bool
		failed   []string // checks that must fail
		skipKeys bool
	}
	tampers := []tamper{
		{"name", false, []string{CheckID, CheckSignatureID}, false},
		{"input", true, []string{CheckID, CheckSignatureID}, true},
		{"output", true, []string{CheckID, CheckSignatureID}, true},
		{"effects", true, []string{CheckID, CheckSignatureID}, true},
		{"implementation_hash", true, []string{CheckID}, false},
		{"ed25519_signature", false, []string{CheckEd25519}, false},
		{"signer_public_key", false, []string{CheckEd25519}, false},
		{"description", false, nil, false},
	}
	for i, raw := range stdlibRaw(t) {
		for _, tp := range tampers {
			from, to := span(t, raw, tp.field, tp.inSig)
			bad := mutateString(t, raw, from, to, tp.skipKeys)
			s, err := DecodeStage(bad)
			if err != nil {
				t.Fatalf("stage %d, %s: tampered stage does not decode: %v", i, tp.field, err)
			}
			r := Verify(s)
			var failed []string
			for _, c := range r.Failed() {
				failed = append(failed, c.Name)
			}
			if strings.Join(failed, ",") != strings.Join(tp.failed, ",") {
				t.Errorf("stage %d (%s), tampered %s: failed checks %v, want %v\n%v", i, s, tp.field, failed, tp.failed, r.Err())
			}
			if len(tp.failed) > 0 && !errors.Is(r.Err(), ErrVerification) {
				t.Errorf("stage %d, %s: Err() = %v, want ErrVerification", i, tp.field, r.Err())
			}
			if tp.field != "ed25519_signature" && tp.field != "signer_public_key" && tp.field != "description" {
				if d := r.Check(CheckID).Detail; !strings.HasPrefix(d, "id mismatch: stage.id="+string(s.ID)+" computed=") {
					t.Errorf("stage %d, %s: id detail %q", i, tp.field, d)
				}
			}
		}
	}
}

// hexSigned returns s's raw bytes with new signature fields.
func withSigFields(t *testing.T, s *Stage, sig, pub string) *Stage {
	t.Helper()
	raw := bytes.Replace(s.Raw, []byte(`"`+s.Ed25519Signature+`"`), []byte(sig), 1)
	raw = bytes.Replace(raw, []byte(`"`+s.SignerPublicKey+`"`), []byte(pub), 1)
	out, err := DecodeStage(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyEd25519Hostile(t *testing.T) {
	s := stdlibStages(t)[0]
	q := func(x string) string { return `"` + x + `"` }
	cases := []struct {
		name, sig, pub string
		status         CheckStatus
		detail         string
	}{
		{"valid", q(s.Ed25519Signature), q(s.SignerPublicKey), CheckPass, "stdlib key"},
		{"uppercase hex", q(strings.ToUpper(s.Ed25519Signature)), q(strings.ToUpper(s.SignerPublicKey)), CheckPass, "stdlib key"},
		{"unsigned", "null", "null", CheckSkipped, "unsigned"},
		{"only signature", q(s.Ed25519Signature), "null", CheckFail, "malformed: exactly one of ed25519_signature / signer_public_key is set"},
		{"only key", "null", q(s.SignerPublicKey), CheckFail, "malformed: exactly one"},
		{"short key", q(s.Ed25519Signature), q(s.SignerPublicKey[:62]), CheckFail, "invalid public key: 31 bytes, want 32"},
		{"long key", q(s.Ed25519Signature), q(s.SignerPublicKey + "00"), CheckFail, "invalid public key: 33 bytes"},
		{"non-hex key", q(s.Ed25519Signature), q("zz" + s.SignerPublicKey[2:]), CheckFail, "invalid public key hex encoding"},
		{"odd-length signature", q(s.Ed25519Signature[:127]), q(s.SignerPublicKey), CheckFail, "invalid signature hex encoding"},
		{"non-hex signature", q("g" + s.Ed25519Signature[1:]), q(s.SignerPublicKey), CheckFail, "invalid signature hex encoding"},
		{"short signature", q(s.Ed25519Signature[:126]), q(s.SignerPublicKey), CheckFail, "invalid signature bytes: 63 bytes, want 64"},
		{"wrong key", q(s.Ed25519Signature), q(hex.EncodeToString(testKey(3).Public().(ed25519.PublicKey))), CheckFail, "verification failed"},
		{"signature of another id", q(hex.EncodeToString(ed25519.Sign(StdlibSigningKey(), []byte(strings.Repeat("0", 64))))), q(s.SignerPublicKey), CheckFail, "verification failed"},
		{"all-zero key", q(s.Ed25519Signature), q(strings.Repeat("0", 64)), CheckFail, "verification failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Verify(withSigFields(t, s, c.sig, c.pub))
			got := r.Check(CheckEd25519)
			if got.Status != c.status || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("ed25519 check = %s %q, want %s containing %q", got.Status, got.Detail, c.status, c.detail)
			}
			if r.Check(CheckID).Status != CheckPass {
				t.Errorf("id check must not depend on the signature: %+v", r.Check(CheckID))
			}
		})
	}
}

// rewrite returns s's raw bytes with old replaced by new once, decoded.
func rewrite(t *testing.T, s *Stage, pairs ...string) *Stage {
	t.Helper()
	raw := s.Raw
	for i := 0; i < len(pairs); i += 2 {
		if !bytes.Contains(raw, []byte(pairs[i])) {
			t.Fatalf("raw lacks %s", pairs[i])
		}
		raw = bytes.Replace(raw, []byte(pairs[i]), []byte(pairs[i+1]), 1)
	}
	out, err := DecodeStage(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestVerifyAcceptsRFC8785IDs: a stage whose ids were computed with strict
// RFC 8785 member order (another implementation's choice) still verifies,
// and the report says which order matched.
func TestVerifyAcceptsRFC8785IDs(t *testing.T) {
	key := testKey(9)
	base, err := BuildStage(StageSpec{
		Name:   "quirk",
		Input:  json.RawMessage(`{"kind":"Record","value":{"a":{"kind":"Text"},"a b":{"kind":"Text"},"a!":{"kind":"Number"}}}`),
		Output: json.RawMessage(`{"kind":"Text"}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stPre, sigPre, err := IdentityPreimages(base.Name, base.Signature, OrderRFC8785)
	if err != nil {
		t.Fatal(err)
	}
	rfcID, rfcSig := sha256Hex(stPre), sha256Hex(sigPre)
	if rfcID == string(base.ID) {
		t.Fatal("test needs a stage whose ids differ between the orders")
	}
	signature := hex.EncodeToString(ed25519.Sign(key, []byte(rfcID)))
	pub := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	s := rewrite(t, base,
		string(base.ID), rfcID,
		string(base.SignatureID), rfcSig,
		`"ed25519_signature":null,"signer_public_key":null`, `"ed25519_signature":"`+signature+`","signer_public_key":"`+pub+`"`)
	r := Verify(s)
	if !r.OK() {
		t.Fatal(r.Err())
	}
	if r.IDOrder != OrderRFC8785 || r.Legacy != "" {
		t.Errorf("IDOrder %v Legacy %q, want rfc8785", r.IDOrder, r.Legacy)
	}
	if !strings.Contains(r.Check(CheckID).Detail, "RFC 8785") || !strings.Contains(r.Check(CheckSignatureID).Detail, "RFC 8785") {
		t.Errorf("details should name the order: %+v", r.Checks)
	}
	// The serde_jcs-built original reports serde_jcs.
	if r := Verify(base); !r.OK() || r.IDOrder != OrderSerdeJCS {
		t.Errorf("serde_jcs stage: %v %v", r.IDOrder, r.Err())
	}
}

func TestVerifyLegacyCanonicalID(t *testing.T) {
	s := stdlibStages(t)[3]
	legacy := rewrite(t, s, `"signature_id"`, `"canonical_id"`)
	if !legacy.LegacyCanonicalID {
		t.Fatal("decoder did not mark canonical_id")
	}
	r := Verify(legacy)
	c := r.Check(CheckSignatureID)
	if !r.OK() || c.Status != CheckPass || !strings.Contains(c.Detail, "canonical_id") {
		t.Errorf("canonical_id: %+v, %v", c, r.Err())
	}
	// A wrong canonical_id still fails.
	bad := rewrite(t, legacy, string(s.SignatureID), strings.Repeat("0", 64))
	if c := Verify(bad).Check(CheckSignatureID); c.Status != CheckFail ||
		!strings.Contains(c.Detail, "signature_id mismatch: stage.signature_id="+strings.Repeat("0", 64)+" computed="+string(s.SignatureID)) {
		t.Errorf("bad canonical_id: %+v", c)
	}
	// No signature_id at all: skipped.
	none := rewrite(t, s, `"signature_id": "`+string(s.SignatureID)+`",`, ``)
	if c := Verify(none).Check(CheckSignatureID); c.Status != CheckSkipped || c.Detail != "stage has no signature_id" {
		t.Errorf("absent signature_id: %+v", c)
	}
}

func TestVerifyLegacyV0SignatureID(t *testing.T) {
	// v0's compact encoding differs from JCS only with floats (or keys
	// that sort differently), so use a Range refinement.
	s, err := BuildStage(StageSpec{Name: "clamp",
		Input:  json.RawMessage(`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","min":0.0,"max":100.0}}}`),
		Output: json.RawMessage(`{"kind":"Number"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tv, err := typedSignature(&s.Signature)
	if err != nil {
		t.Fatal(err)
	}
	pre := tv.legacyV0SignatureID(s.Name)
	want := `{"effects":{"effects":[]},"input":{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","min":0.0,"max":100.0}}},"name":"clamp","output":{"kind":"Number"}}`
	if string(pre) != want {
		t.Fatalf("v0 preimage\n got %s\nwant %s", pre, want)
	}
	r := Verify(rewrite(t, s, string(s.SignatureID), sha256Hex(pre)))
	if c := r.Check(CheckSignatureID); c.Status != CheckPass || !strings.Contains(c.Detail, "legacy v0") {
		t.Errorf("v0 canonical_id: %+v", c)
	}
	// And a v0 stage id for the same stage.
	r = Verify(rewrite(t, s, string(s.ID), sha256Hex(tv.legacyV0ID())))
	if c := r.Check(CheckID); c.Status != CheckPass || r.Legacy != "v0" {
		t.Errorf("v0 id: %+v legacy %q", c, r.Legacy)
	}
}

func TestVerifyImplementationCode(t *testing.T) {
	code := "def execute(x):\n    return x\n"
	s, err := BuildStage(StageSpec{Name: "id", Input: json.RawMessage(`{"kind":"Any"}`), Output: json.RawMessage(`{"kind":"Any"}`),
		ImplementationCode: code, ImplementationLanguage: "python"}, testKey(2))
	if err != nil {
		t.Fatal(err)
	}
	if c := Verify(s).Check(CheckImplementationHash); c.Status != CheckPass {
		t.Errorf("code hash: %+v", c)
	}
	// Code edited after signing: the id still verifies, the hash does not.
	edited := rewrite(t, s, `return x`, `return 42`)
	r := Verify(edited)
	c := r.Check(CheckImplementationHash)
	if c.Status != CheckFail || !strings.Contains(c.Detail, "implementation_hash mismatch") {
		t.Errorf("edited code: %+v", c)
	}
	if r.Check(CheckID).Status != CheckPass || r.Check(CheckEd25519).Status != CheckPass {
		t.Errorf("edited code must only fail implementation_hash: %v", r.Err())
	}
	// Neither code nor the stdlib convention: nothing to check.
	other, err := BuildStage(StageSpec{Input: json.RawMessage(`{"kind":"Any"}`), Output: json.RawMessage(`{"kind":"Any"}`),
		ImplementationHash: "abc123"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := Verify(other).Check(CheckImplementationHash); c.Status != CheckSkipped {
		t.Errorf("no code: %+v", c)
	}
}

func TestVerifyNewerNoetherValues(t *testing.T) {
	s, err := BuildStage(StageSpec{
		Name:         "future",
		Input:        json.RawMessage(`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Prime"}}}`),
		Output:       json.RawMessage(`{"kind":"Text"}`),
		Effects:      []Effect{{Kind: "Quantum", Raw: json.RawMessage(`{"effect":"Quantum"}`)}},
		Capabilities: []Capability{"Teleport"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := Verify(s)
	if !r.OK() {
		t.Fatalf("a stage from a newer noether whose id verifies is OK: %v", r.Err())
	}
	if c := r.Check(CheckKnownValues); c.Status != CheckSkipped || !strings.Contains(c.Detail, `capability "Teleport"`) {
		t.Errorf("known_values: %+v", c)
	}
	// If the best-effort hash does not match, the detail says why.
	bad := rewrite(t, s, string(s.ID), strings.Repeat("1", 64))
	c := Verify(bad).Check(CheckID)
	for _, want := range []string{"id mismatch", "newer noether", `refinement "Prime"`, `effect "Quantum"`} {
		if c.Status != CheckFail || !strings.Contains(c.Detail, want) {
			t.Errorf("id detail %q lacks %q", c.Detail, want)
		}
	}
}

func TestVerifyHostileNumbersAndNesting(t *testing.T) {
	base, err := BuildStage(StageSpec{Name: "n", Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Text"}`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	withInput := func(input string) []byte {
		return bytes.Replace(base.Raw, []byte(`"input":{"kind":"Text"}`), []byte(`"input":`+input), 1)
	}
	// A OneOf option beyond f64: serde_json rejects it, so the id cannot
	// be recomputed; Verify says so instead of panicking.
	s, err := DecodeStage(withInput(`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"OneOf","options":[1e999]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c := Verify(s).Check(CheckID); c.Status != CheckFail || !strings.Contains(c.Detail, "out of range") {
		t.Errorf("1e999 option: %+v", c)
	}
	// A huge integer option is a float, hashed without error.
	s, err = DecodeStage(withInput(`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"OneOf","options":[` + strings.Repeat("9", 300) + `]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c := Verify(s).Check(CheckID); c.Status != CheckFail || !strings.HasPrefix(c.Detail, "id mismatch") {
		t.Errorf("huge integer: %+v", c)
	}
	// Deep but legal type nesting verifies; nesting past the limit is
	// rejected by the decoder, never a panic.
	deep := strings.Repeat(`{"kind":"List","value":`, 100) + `{"kind":"Any"}` + strings.Repeat("}", 100)
	if s, err = DecodeStage(withInput(deep)); err != nil {
		t.Fatal(err)
	}
	if c := Verify(s).Check(CheckID); c.Status != CheckFail || !strings.HasPrefix(c.Detail, "id mismatch") {
		t.Errorf("deep type: %+v", c)
	}
	tooDeep := strings.Repeat(`{"kind":"List","value":`, 1000) + `{"kind":"Any"}` + strings.Repeat("}", 1000)
	if _, err := DecodeStage(withInput(tooDeep)); err == nil {
		t.Error("want the decoder to reject 1000-deep nesting")
	}
	// Range bounds beyond f64 fail decoding.
	if _, err := DecodeStage(withInput(`{"kind":"Refined","value":{"base":{"kind":"Number"},"refinement":{"kind":"Range","min":1e400}}}`)); err == nil {
		t.Error("want the decoder to reject Range min 1e400")
	}
}

func TestVerifyNilAndEmpty(t *testing.T) {
	r := Verify(nil)
	assertChecks(t, r)
	if r.OK() || !errors.Is(r.Err(), ErrVerification) {
		t.Errorf("nil stage must fail: %v", r.Err())
	}
	r = Verify(&Stage{})
	assertChecks(t, r)
	if c := r.Check(CheckID); c.Status != CheckFail || !strings.Contains(c.Detail, "cannot recompute the id") {
		t.Errorf("zero stage: %+v", c)
	}
	if (Report{}).Check("nope") != (Check{}) {
		t.Error("Check of a missing name must be zero")
	}
}

func TestReportErrAndJSON(t *testing.T) {
	s := stdlibStages(t)[5]
	bad := rewrite(t, s, string(s.ID), strings.Repeat("a", 64))
	r := Verify(bad)
	err := r.Err()
	if !errors.Is(err, ErrVerification) {
		t.Fatalf("Err() = %v", err)
	}
	for _, want := range []string{"stage " + strings.Repeat("a", 64), "id: id mismatch", "ed25519: Ed25519 signature verification failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %q lacks %q", err, want)
		}
	}
	if n := len(r.Failed()); n != 2 {
		t.Errorf("Failed() has %d checks, want 2 (id, ed25519)", n)
	}
	js, jerr := json.Marshal(Verify(s))
	if jerr != nil {
		t.Fatal(jerr)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if !back.OK() || back.ID != s.ID || len(back.Checks) != 5 || back.Checks[2].Status != CheckPass {
		t.Errorf("JSON round trip: %s", js)
	}
	if !bytes.Contains(js, []byte(`{"name":"id","status":"pass"}`)) || !bytes.Contains(js, []byte(`"id_order":"serde_jcs"`)) {
		t.Errorf("JSON shape: %s", js)
	}
}

func TestCheckStatusText(t *testing.T) {
	for _, st := range []CheckStatus{CheckPass, CheckFail, CheckSkipped} {
		b, err := st.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back CheckStatus
		if err := back.UnmarshalText(b); err != nil || back != st {
			t.Errorf("%v: %v %v", st, back, err)
		}
	}
	if _, err := CheckStatus(7).MarshalText(); err == nil || CheckStatus(7).String() != "CheckStatus(7)" {
		t.Error("invalid status must not marshal")
	}
	var st CheckStatus
	if err := st.UnmarshalText([]byte("ok")); err == nil {
		t.Error("want an error")
	}
}

func BenchmarkVerify(b *testing.B) {
	s := stdlibStages(b)[0]
	b.ReportAllocs()
	for b.Loop() {
		if r := Verify(s); !r.OK() {
			b.Fatal(r.Err())
		}
	}
}
