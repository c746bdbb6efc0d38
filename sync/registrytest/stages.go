package registrytest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/noether-mirror/mirror/store"
)

// StdlibFixture is the repository path of noether's 85 stdlib stages.
const StdlibFixture = "testdata/noether-stdlib-stages.json"

// StdlibStages loads the stdlib fixture, found by walking up from the
// working directory to the directory holding go.mod. Each element keeps
// its exact bytes.
func StdlibStages() ([]json.RawMessage, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	return LoadStages(filepath.Join(root, StdlibFixture))
}

// ModuleRoot returns the nearest directory at or above the working
// directory that holds a go.mod.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod in the working directory or above it: run from inside the noether-mirror repository or pass the stages file explicitly")
		}
		dir = parent
	}
}

// LoadStages reads a JSON array of stages (or a {"stages":[…]} object, the
// JsonFileStore layout) and returns each element's exact bytes.
func LoadStages(path string) ([]json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load stages: %w", err)
	}
	return SplitStages(b, path)
}

// SplitStages splits a JSON array of stages, or an object whose "stages"
// member is one, into each element's exact bytes. name labels errors.
func SplitStages(b []byte, name string) ([]json.RawMessage, error) {
	var stages []json.RawMessage
	if err := json.Unmarshal(b, &stages); err != nil {
		var file struct {
			Stages []json.RawMessage `json:"stages"`
		}
		if err2 := json.Unmarshal(b, &file); err2 != nil || file.Stages == nil {
			return nil, fmt.Errorf("load stages from %s: want a JSON array of stages or {\"stages\":[…]}: %v", name, err)
		}
		stages = file.Stages
	}
	return stages, nil
}

// GeneratedKey returns the Ed25519 key GenerateStages signs with for seed.
func GeneratedKey(seed int64) ed25519.PrivateKey {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	h := sha256.Sum256(append([]byte("noether-mirror registrytest signing key "), b[:]...))
	return ed25519.NewKeyFromSeed(h[:])
}

var (
	genTypes = []string{
		`{"kind":"Text"}`, `{"kind":"Number"}`, `{"kind":"Bool"}`, `{"kind":"Any"}`, `{"kind":"Bytes"}`,
		`{"kind":"List","value":{"kind":"Text"}}`, `{"kind":"List","value":{"kind":"Number"}}`,
		`{"kind":"Record","value":{"count":{"kind":"Number"},"text":{"kind":"Text"}}}`,
		`{"kind":"Map","value":{"key":{"kind":"Text"},"value":{"kind":"Any"}}}`,
		`{"kind":"Union","value":[{"kind":"Null"},{"kind":"Text"}]}`,
	}
	genWords = []string{"text", "list", "json", "csv", "http", "math", "date", "hash", "llm", "file", "regex", "stats"}
	genVerbs = []string{"parse", "format", "split", "join", "filter", "map", "count", "fetch", "summarize", "normalize", "encode", "decode"}
)

// GenerateStages returns n valid stages signed with GeneratedKey(seed),
// deterministic for (n, seed, size). They look like real user stages:
// unique names, implementation_code of about size bytes (default 5000)
// with implementation_hash = sha256(code), 2–3 examples, tags, a mix of
// types and effects. Every tenth stage is a Deprecated older version of
// the stage before it (same signature_id, other code, successor = that
// stage, which is Active), so at most one Active stage per signature_id
// holds; a few are Draft or Tombstone; the rest are Active.
func GenerateStages(n int, seed int64, size int) ([]json.RawMessage, error) {
	if n < 0 {
		return nil, fmt.Errorf("generate stages: n = %d, want ≥ 0", n)
	}
	if size <= 0 {
		size = 5000
	}
	key := GeneratedKey(seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6e6f65746865722d))
	out := make([]json.RawMessage, 0, n)
	var prev store.StageSpec
	var prevID store.StageID
	for i := range n {
		var spec store.StageSpec
		if i%10 == 9 && i > 0 {
			// An older implementation of the previous stage's interface.
			spec = prev
			spec.ImplementationCode = genCode(rng, prev.Name, i, size, "legacy")
			spec.ImplementationHash = ""
			spec.Examples = genExamples(rng, 2)
			spec.Description = prev.Description + " (previous implementation)"
			spec.Lifecycle = store.Deprecated(prevID)
		} else {
			spec = genSpec(rng, i, seed, size)
			switch {
			case i%10 == 8:
				spec.Lifecycle = store.Active
			case i%25 == 3:
				spec.Lifecycle = store.Draft
			case i%25 == 7:
				spec.Lifecycle = store.Tombstone
			default:
				spec.Lifecycle = store.Active
			}
		}
		s, err := store.BuildStage(spec, key)
		if err != nil {
			return nil, fmt.Errorf("generate stage %d: %w", i, err)
		}
		out = append(out, s.Raw)
		prev, prevID = spec, s.ID
	}
	return out, nil
}

func genSpec(rng *rand.Rand, i int, seed int64, size int) store.StageSpec {
	word := genWords[rng.IntN(len(genWords))]
	verb := genVerbs[rng.IntN(len(genVerbs))]
	name := fmt.Sprintf("gen_%s_%s_%d", verb, word, i)
	if seed != 1 {
		name = fmt.Sprintf("gen%d_%s_%s_%d", seed, verb, word, i)
	}
	var effects []store.Effect
	var caps []store.Capability
	switch r := rng.IntN(20); {
	case r < 9:
		effects = []store.Effect{{Kind: store.EffectPure}}
	case r < 13:
		effects = []store.Effect{{Kind: store.EffectFallible}}
	case r < 15:
		effects = []store.Effect{{Kind: store.EffectNetwork}, {Kind: store.EffectFallible}}
		caps = []store.Capability{store.CapNetwork}
	case r < 16:
		effects = []store.Effect{{Kind: store.EffectNonDeterministic}}
	case r < 17:
		effects = []store.Effect{{Kind: store.EffectLlm, Model: "claude-sonnet"}, {Kind: store.EffectCost, Cents: uint64(1 + rng.IntN(5))}, {Kind: store.EffectNonDeterministic}}
		caps = []store.Capability{store.CapLlm}
	case r < 18:
		effects = []store.Effect{{Kind: store.EffectFsRead, Path: "/tmp"}, {Kind: store.EffectFallible}}
		caps = []store.Capability{store.CapFsRead}
	case r < 19:
		effects = []store.Effect{{Kind: store.EffectProcess}, {Kind: store.EffectFallible}}
		caps = []store.Capability{store.CapProcess}
	default:
		effects = []store.Effect{{Kind: store.EffectPure}, {Kind: store.EffectFallible}}
	}
	return store.StageSpec{
		Name:                   name,
		Description:            fmt.Sprintf("%s %s input (generated stage %d)", strings.ToUpper(verb[:1])+verb[1:], word, i),
		Input:                  json.RawMessage(genTypes[rng.IntN(len(genTypes))]),
		Output:                 json.RawMessage(genTypes[rng.IntN(len(genTypes))]),
		Effects:                effects,
		ImplementationCode:     genCode(rng, name, i, size, "current"),
		ImplementationLanguage: "python",
		Capabilities:           caps,
		Examples:               genExamples(rng, 2+rng.IntN(2)),
		Tags:                   []string{"generated", word, verb},
		Aliases:                []string{verb + "_" + word},
	}
}

// genCode returns Python source of about size bytes.
func genCode(rng *rand.Rand, name string, i, size int, variant string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s (%s implementation)\nimport json\n\n\ndef execute(input):\n    \"\"\"Generated stage %d.\"\"\"\n", name, variant, i)
	for line := 0; b.Len() < size-40; line++ {
		fmt.Fprintf(&b, "    step_%d = %d  # padding %08x\n", line, rng.IntN(1_000_000), rng.Uint32())
	}
	b.WriteString("    return input\n")
	return b.String()
}

func genExamples(rng *rand.Rand, n int) []store.Example {
	ex := make([]store.Example, n)
	for j := range ex {
		v := rng.IntN(1000)
		ex[j] = store.Example{
			Input:  json.RawMessage(fmt.Sprintf(`{"value":%d,"text":"sample %d"}`, v, j)),
			Output: json.RawMessage(fmt.Sprintf(`%d.0`, v*2)),
		}
	}
	return ex
}
