package store

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// StageSpec describes a stage for BuildStage. Only Input and Output are
// required.
type StageSpec struct {
	Name, Description string
	// Input and Output are NType JSON, e.g. {"kind":"Text"}; they are
	// written compacted but otherwise as given.
	Input, Output json.RawMessage
	// Effects are sorted and deduplicated as noether's EffectSet is. An
	// effect of a kind this version does not know is written from its Raw
	// bytes when it has them.
	Effects []Effect
	// ImplementationHash defaults to hex(SHA-256(ImplementationCode)) when
	// empty and ImplementationCode is set.
	ImplementationHash string
	// ImplementationCode and ImplementationLanguage are written only when
	// non-empty.
	ImplementationCode, ImplementationLanguage string
	// Capabilities are written as noether's sorted set.
	Capabilities []Capability
	Examples     []Example
	// Tags and Aliases are written only when non-empty.
	Tags, Aliases []string
	// Lifecycle's zero value (LifecycleUnknown) means Active.
	Lifecycle Lifecycle
	// Extra members are appended after every known field, in order (use
	// them to test unknown top-level fields).
	Extra []ExtraField
}

// ExtraField is one extra top-level member of a built stage.
type ExtraField struct {
	Key   string
	Value json.RawMessage
}

// BuildStage mints a valid stage: it writes spec as compact JSON in serde's
// field order (spec §1.1), computes the id and signature_id the way noether
// 0.8.2 does, signs the id with key (a nil key leaves the stage unsigned:
// ed25519_signature and signer_public_key are null) and returns
// DecodeStage of those bytes. It is meant for fakes, tests and benchmarks.
func BuildStage(spec StageSpec, key ed25519.PrivateKey) (*Stage, error) {
	if key != nil && len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("build stage: private key is %d bytes, want %d (an ed25519.PrivateKey)", len(key), ed25519.PrivateKeySize)
	}
	input, err := compactJSON("Input", spec.Input)
	if err != nil {
		return nil, err
	}
	output, err := compactJSON("Output", spec.Output)
	if err != nil {
		return nil, err
	}
	implHash := spec.ImplementationHash
	if implHash == "" && spec.ImplementationCode != "" {
		implHash = sha256Hex([]byte(spec.ImplementationCode))
	}

	var sigJSON []byte
	sigJSON = append(sigJSON, `{"input":`...)
	sigJSON = append(sigJSON, input...)
	sigJSON = append(sigJSON, `,"output":`...)
	sigJSON = append(sigJSON, output...)
	sigJSON = append(sigJSON, `,"effects":{"effects":[`...)
	var set EffectSet
	for _, e := range spec.Effects {
		set = set.insert(e)
	}
	for i, e := range set {
		if i > 0 {
			sigJSON = append(sigJSON, ',')
		}
		if sigJSON, err = appendEffectJSON(sigJSON, e); err != nil {
			return nil, err
		}
	}
	sigJSON = append(sigJSON, `]},"implementation_hash":`...)
	sigJSON = appendQuoted(sigJSON, implHash)
	sigJSON = append(sigJSON, '}')

	var flags unknownFlags
	sig, err := decodeSignature(sigJSON, &flags)
	if err != nil {
		return nil, fmt.Errorf("build stage: signature: %w", err)
	}
	id, sigID, err := ComputeIDs(spec.Name, sig)
	if err != nil {
		return nil, fmt.Errorf("build stage: %w", err)
	}

	b := make([]byte, 0, 512+len(sigJSON)+len(spec.ImplementationCode))
	b = append(b, `{"id":`...)
	b = appendQuoted(b, string(id))
	b = append(b, `,"signature_id":`...)
	b = appendQuoted(b, string(sigID))
	b = append(b, `,"signature":`...)
	b = append(b, sigJSON...)
	b = append(b, `,"capabilities":[`...)
	for i, c := range sortedCapabilities(spec.Capabilities) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, string(c))
	}
	b = append(b, `],"cost":{"time_ms_p50":null,"tokens_est":null,"memory_mb":null},"description":`...)
	b = appendQuoted(b, spec.Description)
	b = append(b, `,"examples":[`...)
	for i, ex := range spec.Examples {
		if i > 0 {
			b = append(b, ',')
		}
		in, err := compactOrNull(fmt.Sprintf("Examples[%d].Input", i), ex.Input)
		if err != nil {
			return nil, err
		}
		out, err := compactOrNull(fmt.Sprintf("Examples[%d].Output", i), ex.Output)
		if err != nil {
			return nil, err
		}
		b = append(b, `{"input":`...)
		b = append(b, in...)
		b = append(b, `,"output":`...)
		b = append(b, out...)
		b = append(b, '}')
	}
	lc := spec.Lifecycle
	if lc.Kind == LifecycleUnknown && lc.Other == "" {
		lc = Active
	}
	wire, err := lc.WireJSON()
	if err != nil {
		return nil, fmt.Errorf("build stage: lifecycle: %w", err)
	}
	b = append(b, `],"lifecycle":`...)
	b = append(b, wire...)
	if key == nil {
		b = append(b, `,"ed25519_signature":null,"signer_public_key":null`...)
	} else {
		sigBytes := ed25519.Sign(key, []byte(id))
		pub := key.Public().(ed25519.PublicKey)
		b = append(b, `,"ed25519_signature":"`...)
		b = hex.AppendEncode(b, sigBytes)
		b = append(b, `","signer_public_key":"`...)
		b = hex.AppendEncode(b, pub)
		b = append(b, '"')
	}
	if spec.ImplementationCode != "" {
		b = append(b, `,"implementation_code":`...)
		b = appendQuoted(b, spec.ImplementationCode)
	}
	if spec.ImplementationLanguage != "" {
		b = append(b, `,"implementation_language":`...)
		b = appendQuoted(b, spec.ImplementationLanguage)
	}
	for _, list := range []struct {
		key  string
		vals []string
	}{{"tags", spec.Tags}, {"aliases", spec.Aliases}} {
		if len(list.vals) == 0 {
			continue
		}
		b = append(b, `,"`+list.key+`":[`...)
		for i, v := range list.vals {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoted(b, v)
		}
		b = append(b, ']')
	}
	if spec.Name != "" {
		b = append(b, `,"name":`...)
		b = appendQuoted(b, spec.Name)
	}
	for _, x := range spec.Extra {
		v, err := compactJSON("Extra["+strconv.Quote(x.Key)+"]", x.Value)
		if err != nil {
			return nil, err
		}
		b = append(b, ',')
		b = appendQuoted(b, x.Key)
		b = append(b, ':')
		b = append(b, v...)
	}
	b = append(b, '}')
	s, err := DecodeStage(b)
	if err != nil {
		return nil, fmt.Errorf("build stage: %w", err)
	}
	return s, nil
}

func compactJSON(what string, raw json.RawMessage) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("build stage: %s is empty: give JSON such as {\"kind\":\"Text\"}", what)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("build stage: %s is not valid JSON: %w", what, err)
	}
	return buf.Bytes(), nil
}

func compactOrNull(what string, raw json.RawMessage) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return []byte("null"), nil
	}
	return compactJSON(what, raw)
}

// appendEffectJSON writes e as serde does: the "effect" tag first, then
// its payload.
func appendEffectJSON(b []byte, e Effect) ([]byte, error) {
	if e.Kind == "" {
		return nil, fmt.Errorf("build stage: an effect has no Kind")
	}
	if !e.Kind.Known() && len(e.Raw) > 0 {
		raw, err := compactJSON("effect "+strconv.Quote(string(e.Kind)), e.Raw)
		if err != nil {
			return nil, err
		}
		return append(b, raw...), nil
	}
	b = append(b, `{"effect":`...)
	b = appendQuoted(b, string(e.Kind))
	switch e.Kind {
	case EffectCost:
		b = append(b, `,"cents":`...)
		b = strconv.AppendUint(b, e.Cents, 10)
	case EffectLlm:
		b = append(b, `,"model":`...)
		b = appendQuoted(b, e.Model)
	case EffectFsRead, EffectFsWrite:
		b = append(b, `,"path":`...)
		b = appendQuoted(b, e.Path)
	}
	return append(b, '}'), nil
}

// capabilityRank is noether's declaration order; unknown ones sort last.
func capabilityRank(c Capability) int {
	i := slices.Index([]Capability{CapNetwork, CapFsRead, CapFsWrite, CapGpu, CapLlm, CapProcess}, c)
	if i < 0 {
		return 6
	}
	return i
}

// sortedCapabilities returns caps as noether's BTreeSet writes them.
func sortedCapabilities(caps []Capability) []Capability {
	out := slices.Clone(caps)
	slices.SortFunc(out, func(a, b Capability) int {
		if ra, rb := capabilityRank(a), capabilityRank(b); ra != rb {
			return cmpInt(ra, rb)
		}
		return cmpStrings(string(a), string(b))
	})
	return slices.Compact(out)
}
