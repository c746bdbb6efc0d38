package store

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrVerification marks a stage that failed at least one Verify check.
var ErrVerification = errors.New("stage failed verification")

// CheckStatus is the outcome of one verification check.
type CheckStatus uint8

// Check outcomes. CheckSkipped means there was nothing to check (an
// unsigned stage, no signature_id) and is not a failure.
const (
	CheckPass CheckStatus = iota
	CheckFail
	CheckSkipped
)

// String returns "pass", "fail" or "skipped".
func (c CheckStatus) String() string {
	switch c {
	case CheckPass:
		return "pass"
	case CheckFail:
		return "fail"
	case CheckSkipped:
		return "skipped"
	}
	return fmt.Sprintf("CheckStatus(%d)", uint8(c))
}

// MarshalText renders c as its String form, for JSON reports.
func (c CheckStatus) MarshalText() ([]byte, error) {
	if c > CheckSkipped {
		return nil, fmt.Errorf("invalid check status %d", uint8(c))
	}
	return []byte(c.String()), nil
}

// UnmarshalText parses "pass", "fail" or "skipped".
func (c *CheckStatus) UnmarshalText(b []byte) error {
	switch string(b) {
	case "pass":
		*c = CheckPass
	case "fail":
		*c = CheckFail
	case "skipped":
		*c = CheckSkipped
	default:
		return fmt.Errorf("unknown check status %q: want pass, fail or skipped", b)
	}
	return nil
}

// The names of Verify's checks, in the order a Report lists them.
const (
	// CheckID recomputes the StageId from name and signature.
	CheckID = "id"
	// CheckSignatureID recomputes the SignatureId.
	CheckSignatureID = "signature_id"
	// CheckEd25519 verifies the signature over the id.
	CheckEd25519 = "ed25519"
	// CheckImplementationHash compares implementation_hash with the code.
	CheckImplementationHash = "implementation_hash"
	// CheckKnownValues flags values from a newer noether.
	CheckKnownValues = "known_values"
)

// Check is the outcome of one named check; Detail explains it.
type Check struct {
	Name   string      `json:"name"`
	Status CheckStatus `json:"status"`
	Detail string      `json:"detail,omitempty"`
}

// Report is everything Verify found about one stage. It is a plain value.
type Report struct {
	ID StageID `json:"id"`
	// Checks always holds the five checks, in the order CheckID,
	// CheckSignatureID, CheckEd25519, CheckImplementationHash,
	// CheckKnownValues.
	Checks []Check `json:"checks"`
	// IDOrder is the key order under which the id matched (OrderSerdeJCS
	// when both do, or when none does).
	IDOrder KeyOrder `json:"id_order"`
	// Legacy is "" for a current (noether ≥ 0.6) id, or "v1" / "v0" when
	// the id matches one of noether's historical formulas (spec §2.3).
	Legacy string `json:"legacy,omitempty"`
}

// OK reports whether no check failed.
func (r Report) OK() bool { return len(r.Failed()) == 0 }

// Failed returns the checks that failed, in order.
func (r Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == CheckFail {
			out = append(out, c)
		}
	}
	return out
}

// Check returns the check named name, or a zero Check if there is none.
func (r Report) Check(name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// Err returns nil when r is OK, else an error wrapping ErrVerification
// that lists every failed check.
func (r Report) Err() error {
	failed := r.Failed()
	if len(failed) == 0 {
		return nil
	}
	parts := make([]string, len(failed))
	for i, c := range failed {
		parts[i] = c.Name + ": " + c.Detail
	}
	return fmt.Errorf("%w: stage %s: %s", ErrVerification, r.ID, strings.Join(parts, "; "))
}

// Verify re-checks everything about s that can be checked offline: the id
// and signature_id against name and signature (under either key order, or
// a legacy formula), the Ed25519 signature over the id, implementation_hash
// against implementation_code (or the stdlib convention), and whether s
// holds values from a newer noether. It never panics and never modifies s.
// A loop over many stages should use a Verifier from NewVerifier, which
// gives the same results faster.
func Verify(s *Stage) Report { return verify(s, nil) }

// verify is Verify, checking Ed25519 signatures through v (nil: with
// crypto/ed25519 alone).
func verify(s *Stage, v *Verifier) Report {
	if s == nil {
		r := Report{}
		for _, n := range []string{CheckID, CheckSignatureID, CheckEd25519, CheckImplementationHash, CheckKnownValues} {
			r.Checks = append(r.Checks, Check{Name: n, Status: CheckFail, Detail: "no stage to verify"})
		}
		return r
	}
	r := Report{ID: s.ID}
	tv, terr := typedSignature(&s.Signature)
	unknowns := signatureUnknowns(&s.Signature)
	r.Checks = []Check{
		r.checkID(s, tv, terr, unknowns),
		checkSignatureID(s, tv, terr, unknowns),
		checkEd25519(s, v),
		checkImplementationHash(s),
		checkKnownValues(s),
	}
	return r
}

// newerNote explains a mismatch caused by values this version cannot type.
func newerNote(unknowns []string) string {
	if len(unknowns) == 0 {
		return ""
	}
	return "; the stage uses values from a newer noether (" + strings.Join(unknowns, ", ") +
		"), hashed here from their raw JSON as a best effort: upgrade noether-mirror to verify it"
}

func sha256Equal(pre []byte, want string) bool {
	sum := sha256.Sum256(pre)
	var buf [64]byte
	hex.Encode(buf[:], sum[:])
	return string(buf[:]) == want
}

func (r *Report) checkID(s *Stage, tv *typedSig, terr error, unknowns []string) Check {
	c := Check{Name: CheckID}
	if terr != nil {
		c.Status, c.Detail = CheckFail, "cannot recompute the id: "+terr.Error()+newerNote(unknowns)
		return c
	}
	want := string(s.ID)
	serde, _ := tv.preimages(s.Name, OrderSerdeJCS)
	if sha256Equal(serde, want) {
		c.Status = CheckPass
		return c
	}
	if rfc, _ := tv.preimages(s.Name, OrderRFC8785); !bytes.Equal(rfc, serde) && sha256Equal(rfc, want) {
		r.IDOrder = OrderRFC8785
		c.Status = CheckPass
		c.Detail = "id matches under strict RFC 8785 key order, not noether's serde_jcs order"
		return c
	}
	current := sha256Hex(serde)
	for _, order := range []KeyOrder{OrderSerdeJCS, OrderRFC8785} {
		if sha256Equal(tv.legacyV1ID(order), want) {
			r.IDOrder, r.Legacy = order, "v1"
			c.Status = CheckPass
			c.Detail = "legacy v1 id (noether 0.2–0.5: SHA-256 of the canonical signature, without the name); noether 0.8 computes " + current
			return c
		}
	}
	if sha256Equal(tv.legacyV0ID(), want) {
		r.Legacy = "v0"
		c.Status = CheckPass
		c.Detail = "legacy v0 id (noether ≤ 0.1: SHA-256 of the compact signature JSON); noether 0.8 computes " + current
		return c
	}
	c.Status = CheckFail
	c.Detail = fmt.Sprintf("id mismatch: stage.id=%s computed=%s", s.ID, current) + newerNote(unknowns)
	return c
}

func checkSignatureID(s *Stage, tv *typedSig, terr error, unknowns []string) Check {
	c := Check{Name: CheckSignatureID}
	if s.SignatureID == "" {
		c.Status, c.Detail = CheckSkipped, "stage has no signature_id"
		return c
	}
	if terr != nil {
		c.Status, c.Detail = CheckFail, "cannot recompute the signature_id: "+terr.Error()+newerNote(unknowns)
		return c
	}
	var notes []string
	if s.LegacyCanonicalID {
		notes = append(notes, `read from the legacy "canonical_id" key (noether ≤ 0.5; same formula)`)
	}
	want := string(s.SignatureID)
	_, serde := tv.preimages(s.Name, OrderSerdeJCS)
	switch {
	case sha256Equal(serde, want):
		c.Status = CheckPass
	case func() bool { _, rfc := tv.preimages(s.Name, OrderRFC8785); return sha256Equal(rfc, want) }():
		c.Status = CheckPass
		notes = append(notes, "signature_id matches under strict RFC 8785 key order, not noether's serde_jcs order")
	case sha256Equal(tv.legacyV0SignatureID(s.Name), want):
		c.Status = CheckPass
		notes = append(notes, "legacy v0 canonical_id (noether ≤ 0.1: SHA-256 of compact JSON with sorted keys)")
	default:
		c.Status = CheckFail
		notes = append(notes, fmt.Sprintf("signature_id mismatch: stage.signature_id=%s computed=%s", s.SignatureID, sha256Hex(serde))+newerNote(unknowns))
	}
	c.Detail = strings.Join(notes, "; ")
	return c
}

func checkEd25519(s *Stage, v *Verifier) Check {
	c := Check{Name: CheckEd25519, Status: CheckFail}
	hasSig, hasKey := s.Ed25519Signature != "", s.SignerPublicKey != ""
	switch {
	case !hasSig && !hasKey:
		c.Status, c.Detail = CheckSkipped, "unsigned"
		return c
	case hasSig != hasKey:
		c.Detail = "malformed: exactly one of ed25519_signature / signer_public_key is set"
		return c
	}
	pub, err := hex.DecodeString(s.SignerPublicKey)
	if err != nil {
		c.Detail = fmt.Sprintf("invalid public key hex encoding: %v", err)
		return c
	}
	if len(pub) != ed25519.PublicKeySize {
		c.Detail = fmt.Sprintf("invalid public key: %d bytes, want %d (64 hex characters)", len(pub), ed25519.PublicKeySize)
		return c
	}
	sig, err := hex.DecodeString(s.Ed25519Signature)
	if err != nil {
		c.Detail = fmt.Sprintf("invalid signature hex encoding: %v", err)
		return c
	}
	if len(sig) != ed25519.SignatureSize {
		c.Detail = fmt.Sprintf("invalid signature bytes: %d bytes, want %d (128 hex characters)", len(sig), ed25519.SignatureSize)
		return c
	}
	keyHex := hex.EncodeToString(pub)
	if !v.ed25519Verify(pub, []byte(s.ID), sig) {
		c.Detail = "Ed25519 signature verification failed under key " + keyHex + ": the id or signature may have been tampered with"
		return c
	}
	c.Status = CheckPass
	if keyHex == StdlibPublicKeyHex {
		c.Detail = "signed with noether's public stdlib key (anyone can sign with it: not proof of origin)"
	} else {
		c.Detail = "signed by " + keyHex
	}
	return c
}

func checkImplementationHash(s *Stage) Check {
	c := Check{Name: CheckImplementationHash}
	have := s.Signature.ImplementationHash
	if s.HasImplementationCode {
		if got := sha256Hex([]byte(s.ImplementationCode)); got != have {
			c.Status = CheckFail
			c.Detail = fmt.Sprintf("implementation_hash mismatch: signature.implementation_hash=%s sha256(implementation_code)=%s", have, got)
			return c
		}
		c.Status, c.Detail = CheckPass, "sha256(implementation_code)"
		return c
	}
	if have == StdlibImplementationHash(s.Name) {
		c.Status, c.Detail = CheckPass, "stdlib convention"
		return c
	}
	c.Status, c.Detail = CheckSkipped, "no implementation_code to check the hash against"
	return c
}

func checkKnownValues(s *Stage) Check {
	c := Check{Name: CheckKnownValues}
	if len(s.Unknown) == 0 {
		c.Status = CheckPass
		return c
	}
	c.Status = CheckSkipped
	c.Detail = "values from a newer noether, kept as received: " + strings.Join(s.Unknown, ", ")
	return c
}
