package store_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/store"
)

func TestTrustPolicy(t *testing.T) {
	_, trustedKey, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	pub := hex.EncodeToString(trustedKey.Public().(ed25519.PublicKey))
	policy, err := store.ParseTrustPolicy(strings.NewReader("# team keys\n\nalice " + strings.ToUpper(pub) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	spec := store.StageSpec{
		Name: "trust_probe", Description: "probe",
		Input: json.RawMessage(`{"kind":"Text"}`), Output: json.RawMessage(`{"kind":"Text"}`),
		Effects: []store.Effect{{Kind: store.EffectPure}}, ImplementationCode: "def execute(x): return x",
		ImplementationLanguage: "python",
	}
	for _, tc := range []struct {
		name    string
		key     ed25519.PrivateKey
		trusted bool
	}{
		{"trusted key", trustedKey, true},
		{"untrusted key", otherKey, false},
		{"unsigned", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := store.BuildStage(spec, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			err = policy.Accept(s)
			if tc.trusted && err != nil {
				t.Fatalf("Accept = %v, want nil", err)
			}
			if !tc.trusted && !errors.Is(err, store.ErrUntrusted) {
				t.Fatalf("Accept = %v, want ErrUntrusted", err)
			}
			if name, ok := policy.Signer(s); ok != tc.trusted || (ok && name != "alice") {
				t.Fatalf("Signer = %q, %v", name, ok)
			}
		})
	}
}

func TestParseTrustPolicyErrors(t *testing.T) {
	good := strings.Repeat("ab", 32)
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "# nothing\n", "no keys"},
		{"one field", "alice\n", "want \"NAME HEX-PUBLIC-KEY\""},
		{"short key", "alice abcd\n", "64 hex characters"},
		{"not hex", "alice " + strings.Repeat("zz", 32) + "\n", "64 hex characters"},
		{"duplicate", "alice " + good + "\nbob " + good + "\n", "already listed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.ParseTrustPolicy(strings.NewReader(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
