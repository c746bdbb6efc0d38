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
// compact and unsigned. A Gen from NewGen gives them random 64-hex ids and
// signature ids, not hashes: store semantics never verify them. A Gen from
// NewVerifiableGen computes them as noether does, so that every stage
// passes store.Verify. A Gen is not safe for concurrent use; give each
// goroutine its own.
type Gen struct {
	rng *rand.Rand
	n   int
	// sigs holds the options each SigID was made with; WithSig applies
	// them again.
	sigs map[store.SignatureID][]Option

	// verifiable is set by NewVerifiableGen; made then holds the identity
	// of every stage made, for WithID.
	verifiable bool
	made       map[store.StageID]identity
}

// identity is what a verifiable stage's id is computed from, apart from
// input and output, which Gen never varies.
type identity struct {
	hasName  bool
	name     string
	effects  []string
	implHash string
}

// NewGen returns a Gen seeded with seed whose stages have random ids.
func NewGen(seed int64) *Gen {
	return &Gen{
		rng:  rand.New(rand.NewPCG(uint64(seed), 0x6e6f65746865720a)),
		sigs: map[store.SignatureID][]Option{},
	}
}

// NewVerifiableGen returns a Gen seeded with seed whose stages pass
// store.Verify: each id is the SHA-256 of the stage's canonical name,
// input, output, effects and implementation_hash, each signature_id that
// of its name, input, output and effects (spec §2.1). Content then decides
// identity, so the options that name an id or a signature id choose
// content instead:
//
//   - WithSig(sig) gives the stage the name and effects of sig, as SigID
//     made it (a unique name and a single Pure, unless SigID's options say
//     otherwise);
//   - WithID(id) gives it the name, effects and implementation_hash of the
//     stage this Gen made with id (any other id panics);
//   - WithIDPrefix(p) draws implementation hashes until the id starts
//     with p.
//
// An option given after one of those that changes what they chose (say
// WithName after WithSig) makes Stage panic, since the stage could not
// have that id.
func NewVerifiableGen(seed int64) *Gen {
	g := NewGen(seed)
	g.verifiable = true
	g.made = map[store.StageID]identity{}
	return g
}

// ID returns a fresh random stage id.
func (g *Gen) ID() store.StageID { return store.StageID(g.hex64()) }

// SigID returns a fresh signature id. Stages made WithSig of it share
// its interface: opts (WithName, WithoutName, WithEffects) are applied to
// every one of them where WithSig appears. A NewGen's id is random; a
// NewVerifiableGen's is computed from that interface, with a unique name
// unless opts set one.
func (g *Gen) SigID(opts ...Option) store.SignatureID {
	if !g.verifiable {
		sig := store.SignatureID(g.hex64())
		g.sigs[sig] = opts
		return sig
	}
	g.n++
	opts = append([]Option{WithName(fmt.Sprintf("gen_sig_%d", g.n))}, opts...)
	sp := spec{g: g, effects: []string{`{"effect":"Pure"}`}, lifecycle: `"Active"`}
	for _, o := range opts {
		o(&sp)
	}
	_, sig := computeIDs(sp, placeholderHash)
	g.sigs[sig] = opts
	return sig
}

// IDWithPrefix returns a random stage id starting with prefix (lowercase
// hex, at most 64 characters). It is only an id: a NewVerifiableGen
// cannot make a stage with it (use WithIDPrefix).
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
	g           *Gen
	id          store.StageID
	idPrefix    string
	implHash    string // set by WithID in a verifiable Gen
	sig         store.SignatureID
	hasName     bool
	name        string
	lifecycle   string // wire JSON
	effects     []string
	description string
}

// WithID sets the stage id (default: a fresh random id). In a
// NewVerifiableGen, id must be that of a stage the Gen made, whose
// identity the new stage takes.
func WithID(id store.StageID) Option {
	return func(s *spec) {
		s.id, s.idPrefix, s.implHash = id, "", ""
		if !s.g.verifiable {
			return
		}
		idt, ok := s.g.made[id]
		if !ok {
			panic(fmt.Sprintf("storetest.WithID(%s): a verifiable Gen can only reuse the id of a stage it made", id))
		}
		s.hasName, s.name, s.effects, s.implHash = idt.hasName, idt.name, idt.effects, idt.implHash
	}
}

// WithIDPrefix makes the stage's id start with prefix (lowercase hex, at
// most 64 characters; a verifiable Gen takes about 16^len(prefix) draws).
func WithIDPrefix(prefix string) Option {
	return func(s *spec) { s.id, s.idPrefix, s.implHash = "", prefix, "" }
}

// WithName sets the stage's "name" (default: a unique "gen_<n>").
func WithName(name string) Option {
	return func(s *spec) { s.name, s.hasName = name, true }
}

// WithoutName leaves "name" out of the stage.
func WithoutName() Option { return func(s *spec) { s.hasName = false } }

// WithSig sets "signature_id" and applies the options sig was made with
// (see SigID); the empty string leaves the key out, which is the default.
func WithSig(sig store.SignatureID) Option {
	return func(s *spec) {
		s.sig = sig
		if sig == "" {
			return
		}
		opts, ok := s.g.sigs[sig]
		if !ok && s.g.verifiable {
			panic(fmt.Sprintf("storetest.WithSig(%s): a verifiable Gen can only use signature ids from its SigID", sig))
		}
		for _, o := range opts {
			o(s)
		}
	}
}

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
		g:         g,
		hasName:   true,
		name:      fmt.Sprintf("gen_%d", g.n),
		lifecycle: `"Active"`,
		effects:   []string{`{"effect":"Pure"}`},
	}
	if !g.verifiable {
		sp.id = g.ID()
	}
	sp.description = fmt.Sprintf("generated stage %d (%08x)", g.n, g.rng.Uint32())
	for _, o := range opts {
		o(&sp)
	}
	hash := g.hex64()
	if g.verifiable {
		hash = g.identify(&sp, hash)
	} else if sp.idPrefix != "" {
		sp.id = g.IDWithPrefix(sp.idPrefix)
	}
	raw := sp.json(hash)
	s, err := store.DecodeStage(raw)
	if err != nil {
		panic(fmt.Sprintf("storetest.Gen built an undecodable stage (bad option?): %v\n%s", err, raw))
	}
	return s
}

// placeholderHash stands in for implementation_hash where only the
// signature id is wanted.
const placeholderHash = "0000000000000000000000000000000000000000000000000000000000000000"

// computeIDs returns the id and signature id of sp's content with the
// implementation hash hash.
func computeIDs(sp spec, hash string) (store.StageID, store.SignatureID) {
	sp.id = placeholderHash
	raw := sp.json(hash)
	s, err := store.DecodeStage(raw)
	if err != nil {
		panic(fmt.Sprintf("storetest.Gen built an undecodable stage (bad option?): %v\n%s", err, raw))
	}
	id, sig, err := store.ComputeIDs(s.Name, s.Signature)
	if err != nil {
		panic(fmt.Sprintf("storetest.Gen: cannot compute the ids of %s: %v", raw, err))
	}
	return id, sig
}

// identify gives sp its computed id and signature id in a verifiable
// Gen, and returns the implementation hash they were computed with: the
// one WithID chose, else fresh (starting with fresh) until the id has
// sp's prefix. It panics if a later option contradicted WithID or WithSig.
func (g *Gen) identify(sp *spec, fresh string) string {
	hash := fresh
	if sp.implHash != "" {
		hash = sp.implHash
	}
	id, sig := computeIDs(*sp, hash)
	for sp.implHash == "" && !strings.HasPrefix(string(id), sp.idPrefix) {
		hash = g.hex64()
		id, sig = computeIDs(*sp, hash)
	}
	if sp.id != "" && id != sp.id {
		panic(fmt.Sprintf("storetest: a verifiable Gen cannot make a stage with id %s and this content: an option after WithID changed its name or effects", sp.id))
	}
	if sp.sig != "" && sig != sp.sig {
		panic(fmt.Sprintf("storetest: a verifiable Gen cannot make a stage with signature_id %s and this content: an option after WithSig changed its name or effects", sp.sig))
	}
	sp.id = id
	g.made[id] = identity{hasName: sp.hasName, name: sp.name, effects: sp.effects, implHash: hash}
	return hash
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
