package storetest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/noether-mirror/mirror/store"
)

// Gen makes test stages from a seed, reproducibly: the same seed and the
// same sequence of calls give the same stages, byte for byte.
//
// The stages are well-formed noether JSON written in serde field order,
// compact, but their ids and signature ids are random 64-hex strings, not
// hashes: store semantics never verify them. A Gen is not safe for
// concurrent use; give each goroutine its own.
type Gen struct {
	rng *rand.Rand
	n   int
}

// NewGen returns a Gen seeded with seed.
func NewGen(seed int64) *Gen {
	return &Gen{rng: rand.New(rand.NewPCG(uint64(seed), 0x6e6f65746865720a))}
}

// ID returns a fresh random stage id.
func (g *Gen) ID() store.StageID { return store.StageID(g.hex64()) }

// SigID returns a fresh random signature id.
func (g *Gen) SigID() store.SignatureID { return store.SignatureID(g.hex64()) }

// IDWithPrefix returns a random stage id starting with prefix (lowercase
// hex, at most 64 characters).
func (g *Gen) IDWithPrefix(prefix string) store.StageID {
	return store.StageID(prefix + g.hex64()[len(prefix):])
}

func (g *Gen) hex64() string {
	var b [32]byte
	for i := 0; i < len(b); i += 8 {
		v := g.rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}

// Option shapes a stage made by Gen.Stage. Later options override
// earlier ones.
type Option func(*spec)

type spec struct {
	id          store.StageID
	sig         store.SignatureID
	hasName     bool
	name        string
	lifecycle   string // wire JSON
	effects     []string
	description string
}

// WithID sets the stage id (default: a fresh random id).
func WithID(id store.StageID) Option { return func(s *spec) { s.id = id } }

// WithName sets the stage's "name" (default: a unique "gen_<n>").
func WithName(name string) Option {
	return func(s *spec) { s.name, s.hasName = name, true }
}

// WithoutName leaves "name" out of the stage.
func WithoutName() Option { return func(s *spec) { s.hasName = false } }

// WithSig sets "signature_id"; the empty string leaves the key out, which
// is the default.
func WithSig(sig store.SignatureID) Option { return func(s *spec) { s.sig = sig } }

// WithLifecycle sets the lifecycle (default Active). The lifecycle must be
// encodable: a known kind, or LifecycleUnknown with Other set.
func WithLifecycle(l store.Lifecycle) Option {
	return func(s *spec) {
		w, err := l.WireJSON()
		if err != nil {
			panic(fmt.Sprintf("storetest.WithLifecycle(%v): %v", l, err))
		}
		s.lifecycle = string(w)
	}
}

// WithRawLifecycle sets the lifecycle's wire JSON verbatim, for values a
// newer noether might send, e.g. `"Archived"`.
func WithRawLifecycle(wire string) Option { return func(s *spec) { s.lifecycle = wire } }

// WithEffects sets the effect objects verbatim, in the order given (pass
// them in noether's sort order), e.g. `{"effect":"Cost","cents":5}` or an
// unknown `{"effect":"Teleport"}`. The default is a single Pure.
func WithEffects(objs ...string) Option {
	return func(s *spec) { s.effects = append([]string(nil), objs...) }
}

// WithDescription sets "description" (default: a unique sentence).
func WithDescription(d string) Option { return func(s *spec) { s.description = d } }

// Stage returns a new stage shaped by opts. Its Raw is compact JSON in
// serde field order with "lifecycle" written as `"lifecycle":<wire>`, so
// tests may find and replace that member textually.
//
// Stage panics if the JSON it built does not decode, which means an option
// was given invalid JSON: a bug in the calling test.
func (g *Gen) Stage(opts ...Option) *store.Stage {
	g.n++
	sp := spec{
		id:          g.ID(),
		hasName:     true,
		name:        fmt.Sprintf("gen_%d", g.n),
		lifecycle:   `"Active"`,
		effects:     []string{`{"effect":"Pure"}`},
		description: fmt.Sprintf("generated stage %d (%08x)", g.n, g.rng.Uint32()),
	}
	for _, o := range opts {
		o(&sp)
	}
	raw := sp.json(g.hex64())
	s, err := store.DecodeStage(raw)
	if err != nil {
		panic(fmt.Sprintf("storetest.Gen built an undecodable stage (bad option?): %v\n%s", err, raw))
	}
	return s
}

func (sp spec) json(implHash string) []byte {
	q := func(s string) string {
		b, _ := json.Marshal(s) // a string always marshals
		return string(b)
	}
	var b strings.Builder
	b.WriteString(`{"id":` + q(string(sp.id)))
	if sp.sig != "" {
		b.WriteString(`,"signature_id":` + q(string(sp.sig)))
	}
	b.WriteString(`,"signature":{"input":{"kind":"Text"},"output":{"kind":"Number"},"effects":{"effects":[`)
	b.WriteString(strings.Join(sp.effects, ","))
	b.WriteString(`]},"implementation_hash":` + q(implHash) + `}`)
	b.WriteString(`,"capabilities":[],"cost":{"time_ms_p50":null,"tokens_est":null,"memory_mb":null}`)
	b.WriteString(`,"description":` + q(sp.description))
	b.WriteString(`,"examples":[{"input":"abc","output":3.0}]`)
	b.WriteString(`,"lifecycle":` + sp.lifecycle)
	b.WriteString(`,"ed25519_signature":null,"signer_public_key":null`)
	if sp.hasName {
		b.WriteString(`,"name":` + q(sp.name))
	}
	b.WriteString(`}`)
	return []byte(b.String())
}
