package store

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// ErrUntrusted marks a stage whose signer is not in the trust policy.
var ErrUntrusted = errors.New("signer not trusted")

// TrustPolicy is a set of named Ed25519 public keys. With a policy in
// force, only stages signed by one of its keys are accepted. It is
// immutable after parsing and safe for concurrent use.
//
// noether's stdlib signing key is public (spec §2.5): anyone can mint a
// "stdlib-signed" stage, so trusting StdlibPublicKeyHex proves nothing
// about where a stage came from.
type TrustPolicy struct {
	byKey map[string]string // lowercase hex key → name
}

// ParseTrustPolicy reads a trusted-keys file: one "NAME HEX-PUBLIC-KEY"
// per line (64 hex characters, either case); blank lines and lines
// starting with # are ignored.
func ParseTrustPolicy(r io.Reader) (*TrustPolicy, error) {
	p := &TrustPolicy{byKey: map[string]string{}}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"NAME HEX-PUBLIC-KEY\", got %d fields", n, len(fields))
		}
		name, key := fields[0], strings.ToLower(fields[1])
		raw, err := hex.DecodeString(key)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("line %d: key for %q must be 64 hex characters (an Ed25519 public key)", n, name)
		}
		if prev, dup := p.byKey[key]; dup {
			return nil, fmt.Errorf("line %d: key for %q is already listed as %q", n, name, prev)
		}
		p.byKey[key] = name
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(p.byKey) == 0 {
		return nil, errors.New("no keys: a trust policy with no keys would quarantine every stage")
	}
	return p, nil
}

// LoadTrustPolicy parses the trusted-keys file at path.
func LoadTrustPolicy(path string) (*TrustPolicy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("trusted keys: %w", err)
	}
	defer f.Close()
	p, err := ParseTrustPolicy(f)
	if err != nil {
		return nil, fmt.Errorf("trusted keys %s: %w", path, err)
	}
	return p, nil
}

// Accept returns nil when s is signed by a trusted key, else an error
// wrapping ErrUntrusted. It checks who signed, not whether the signature
// is valid: Verify does that.
func (p *TrustPolicy) Accept(s *Stage) error {
	if s.SignerPublicKey == "" {
		return fmt.Errorf("%w: stage %s is unsigned", ErrUntrusted, s)
	}
	if _, ok := p.byKey[strings.ToLower(s.SignerPublicKey)]; !ok {
		return fmt.Errorf("%w: stage %s is signed by %s, which is not in the trusted keys", ErrUntrusted, s, s.SignerPublicKey)
	}
	return nil
}

// Signer names the trusted key that signed s, if any.
func (p *TrustPolicy) Signer(s *Stage) (string, bool) {
	name, ok := p.byKey[strings.ToLower(s.SignerPublicKey)]
	return name, ok && s.SignerPublicKey != ""
}

// Names lists the policy's key names, sorted.
func (p *TrustPolicy) Names() []string {
	out := make([]string, 0, len(p.byKey))
	for _, n := range p.byKey {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
