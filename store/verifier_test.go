package store

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"testing"
)

// verifierCase is one stage the three verification paths must judge
// identically.
type verifierCase struct {
	name string
	s    *Stage
}

// signedStages builds n valid stages signed with key (nil: unsigned),
// named prefix_0 … prefix_{n-1}.
func signedStages(t *testing.T, prefix string, n int, key ed25519.PrivateKey) []*Stage {
	t.Helper()
	var out []*Stage
	for i := range n {
		s, err := BuildStage(StageSpec{
			Name: fmt.Sprintf("%s_%d", prefix, i), Description: "a generated stage for the verifier test",
			Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Number"}`),
			Effects:            []Effect{{Kind: EffectPure}},
			ImplementationCode: fmt.Sprintf("def execute(x):\n    return len(x) + %d\n", i), ImplementationLanguage: "python",
		}, key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// tamperings are the ways a copy of a signed stage is damaged, each
// aimed at the Ed25519 check or the checks around it.
var tamperings = []struct {
	name string
	fn   func(c *Stage, other ed25519.PrivateKey)
}{
	{"signature bit flipped", func(c *Stage, _ ed25519.PrivateKey) {
		sig := []byte(c.Ed25519Signature)
		sig[10] ^= 1 // '0'–'9' and 'a'–'f' stay hex digits
		c.Ed25519Signature = string(sig)
	}},
	{"S plus group order", func(c *Stage, _ ed25519.PrivateKey) {
		sig, _ := hex.DecodeString(c.Ed25519Signature)
		order, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
		s := new(big.Int).SetBytes(reversed(sig[32:]))
		copy(sig[32:], reversed(s.Add(s, order).FillBytes(make([]byte, 32))))
		c.Ed25519Signature = hex.EncodeToString(sig)
	}},
	{"signed by another key", func(c *Stage, other ed25519.PrivateKey) {
		c.SignerPublicKey = hex.EncodeToString(other.Public().(ed25519.PublicKey))
	}},
	{"another key's valid signature", func(c *Stage, other ed25519.PrivateKey) {
		c.Ed25519Signature = hex.EncodeToString(ed25519.Sign(other, []byte(c.ID)))
	}},
	{"id changed", func(c *Stage, _ ed25519.PrivateKey) {
		id := []byte(c.ID)
		if id[63] == '0' {
			id[63] = '1'
		} else {
			id[63] = '0'
		}
		c.ID = StageID(id)
	}},
	{"implementation code changed", func(c *Stage, _ ed25519.PrivateKey) {
		c.ImplementationCode += "# changed\n"
		c.HasImplementationCode = true
	}},
	{"signature cut short", func(c *Stage, _ ed25519.PrivateKey) { c.Ed25519Signature = c.Ed25519Signature[:126] }},
	{"no signature", func(c *Stage, _ ed25519.PrivateKey) { c.Ed25519Signature = "" }},
}

func reversed(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[len(b)-1-i] = c
	}
	return out
}

// verifierCases returns the stdlib fixture (85 stages under one key),
// generated stages by a key that signs many (it gets a table) and by one
// that signs few (it never does), unsigned ones, and every tampering of
// every fifth signed stage.
func verifierCases(t *testing.T) []verifierCase {
	t.Helper()
	seed := func(b byte) ed25519.PrivateKey {
		h := sha256.Sum256([]byte{b})
		return ed25519.NewKeyFromSeed(h[:])
	}
	many, few, other := seed(1), seed(2), seed(3)
	var honest []verifierCase
	for _, s := range stdlibStages(t) {
		honest = append(honest, verifierCase{"stdlib " + s.Name, s})
	}
	for _, s := range signedStages(t, "many", 40, many) {
		honest = append(honest, verifierCase{"many-key " + s.Name, s})
	}
	for _, s := range signedStages(t, "few", 3, few) {
		honest = append(honest, verifierCase{"few-key " + s.Name, s})
	}
	for _, s := range signedStages(t, "unsigned", 3, nil) {
		honest = append(honest, verifierCase{"unsigned " + s.Name, s})
	}
	cases := honest
	for i, c := range honest {
		if i%5 != 0 || c.s.Ed25519Signature == "" {
			continue
		}
		for _, tm := range tamperings {
			cp := *c.s
			tm.fn(&cp, other)
			cases = append(cases, verifierCase{c.name + ", " + tm.name, &cp})
		}
	}
	return cases
}

// TestVerifiersMatchVerify checks that NewVerifier's table path,
// NewStdlibVerifier and Verify give identical reports, on every stage,
// twice over (so that the second round runs with every table built).
func TestVerifiersMatchVerify(t *testing.T) {
	cases := verifierCases(t)
	fast, std := NewVerifier(), NewStdlibVerifier()
	outcomes := map[CheckStatus]int{}
	for round := range 2 {
		for _, c := range cases {
			want := Verify(c.s)
			if round == 0 {
				outcomes[want.Check(CheckEd25519).Status]++
			}
			for _, p := range []struct {
				name string
				v    *Verifier
			}{{"NewVerifier", fast}, {"NewStdlibVerifier", std}, {"zero Verifier", &Verifier{}}} {
				if got := p.v.Verify(c.s); !reflect.DeepEqual(got, want) {
					t.Errorf("round %d, %s: %s report\n %+v\nVerify's\n %+v", round, c.name, p.name, got, want)
				}
			}
		}
	}
	// The cases must reach every outcome of the signature check, or the
	// comparison proves little.
	if outcomes[CheckPass] < 100 || outcomes[CheckFail] < 50 || outcomes[CheckSkipped] == 0 {
		t.Fatalf("Ed25519 outcomes over the cases: %v; want passes, failures and skips", outcomes)
	}
}
