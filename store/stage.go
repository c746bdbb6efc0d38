// Package store is noether's data model with no I/O: the Stage wire format,
// its identity rules (canonical JSON, SHA-256 ids, Ed25519), the StageStore
// contract every backend implements, and MemoryStore, the reference
// implementation with noether's exact semantics.
//
// Every type here is a plain value. A *Stage is immutable once decoded:
// share it freely between goroutines, but never modify it in place; derive
// a new one with WithLifecycle.
package store

import (
	"encoding/json"
	"fmt"
)

// StageID is a stage's implementation id: 64 lowercase hex characters, the
// SHA-256 of the canonical JSON of (name, input, output, effects,
// implementation_hash).
type StageID string

// SignatureID identifies a stage's interface: the SHA-256 of the canonical
// JSON of (name, input, output, effects). Implementations that share it are
// interchangeable versions of one stage.
type SignatureID string

// ValidID reports whether s has the shape of a stage or signature id:
// exactly 64 lowercase hex characters. Only such strings may go into a URL
// path or a file name.
func ValidID(s string) bool {
	_, ok := IDBytes(s)
	return ok
}

// IDBytes returns the 32 bytes a stage or signature id encodes, and false
// when s is not exactly 64 lowercase hex characters. Lowercase hex sorts
// like the bytes it encodes, so ids can be kept and compared as bytes.
func IDBytes(s string) (b [32]byte, ok bool) {
	if len(s) != 64 {
		return b, false
	}
	for i := range b {
		hi, ok1 := lowerHex(s[2*i])
		lo, ok2 := lowerHex(s[2*i+1])
		if !ok1 || !ok2 {
			return [32]byte{}, false
		}
		b[i] = hi<<4 | lo
	}
	return b, true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Stage is one noether stage as served by a registry. Raw holds the exact
// bytes it was decoded from; the typed fields are a read-only view of them.
// A Stage is immutable: never modify one in place.
type Stage struct {
	ID StageID
	// SignatureID is empty when the stage has none.
	SignatureID SignatureID
	// LegacyCanonicalID is true when SignatureID came from the v0.5-era
	// "canonical_id" key.
	LegacyCanonicalID bool
	Signature         Signature
	Capabilities      []Capability
	Cost              CostEstimate
	Description       string
	Examples          []Example
	Lifecycle         Lifecycle
	// Ed25519Signature is the 128-hex signature over the id, or empty.
	Ed25519Signature string
	// SignerPublicKey is the 64-hex Ed25519 public key, or empty.
	SignerPublicKey        string
	ImplementationCode     string
	HasImplementationCode  bool
	ImplementationLanguage string
	UIStyle                string
	Tags                   []string
	Aliases                []string
	// Name is the human name; HasName is false when the key is absent.
	Name       string
	HasName    bool
	Properties []Property
	// Unknown lists values this version of noether-mirror does not know
	// (an effect, type kind, capability, lifecycle or refinement from a
	// newer noether), e.g. `effect "Teleport"`. Such a stage is kept, its
	// bytes intact, and flagged rather than rejected.
	Unknown []string
	// Raw is the stage's JSON exactly as received.
	Raw json.RawMessage

	lifecycleSpan [2]int // offsets of the lifecycle value in Raw
}

// Signature is the hashed part of a stage besides its name.
type Signature struct {
	Input              NType
	Output             NType
	Effects            EffectSet
	ImplementationHash string
	// Raw is the signature object's JSON as received.
	Raw json.RawMessage
}

// CostEstimate holds noether's cost hints; a nil field was null or absent.
type CostEstimate struct {
	TimeMsP50 *uint64
	TokensEst *uint64
	MemoryMB  *uint64
}

// Example is an input/output pair. Both are opaque JSON, kept as received.
type Example struct {
	Input  json.RawMessage
	Output json.RawMessage
}

// Property is a declarative check over examples. Kind is the snake_case
// kind (set_member, range, …); Raw is the whole object as received, so
// kinds this version does not know survive untouched.
type Property struct {
	Kind string
	Raw  json.RawMessage
}

// Capability is a permission a stage needs at run time.
type Capability string

// Capabilities noether v0.8.2 knows, in its sort order.
const (
	CapNetwork Capability = "Network"
	CapFsRead  Capability = "FsRead"
	CapFsWrite Capability = "FsWrite"
	CapGpu     Capability = "Gpu"
	CapLlm     Capability = "Llm"
	CapProcess Capability = "Process"
)

// Known reports whether noether v0.8.2 knows c.
func (c Capability) Known() bool {
	switch c {
	case CapNetwork, CapFsRead, CapFsWrite, CapGpu, CapLlm, CapProcess:
		return true
	}
	return false
}

// String returns the short form "name (id[:8])" used in messages.
func (s *Stage) String() string {
	id := string(s.ID)
	if len(id) > 8 {
		id = id[:8]
	}
	if s.HasName {
		return fmt.Sprintf("%s (%s)", s.Name, id)
	}
	return id
}

// MarshalJSON returns the stage's bytes exactly as received.
func (s *Stage) MarshalJSON() ([]byte, error) {
	if len(s.Raw) == 0 {
		return nil, fmt.Errorf("stage %s has no raw bytes", s.ID)
	}
	return s.Raw, nil
}
