package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"
)

// ErrMalformed marks stage JSON that noether itself could not deserialize:
// a missing required field, a wrong JSON type, both "signature_id" and
// "canonical_id". Values that are merely unknown to this version (a newer
// effect, type kind, capability or lifecycle) are not malformed; they are
// listed in Stage.Unknown.
var ErrMalformed = errors.New("malformed stage")

// MaxStageBytes bounds a single stage's JSON. Real stages are a few KB;
// user stages with code rarely pass 100 KB.
const MaxStageBytes = 16 << 20

// DecodeStage parses one stage from its JSON bytes. The returned Stage
// keeps raw (not a copy: the caller must not modify raw afterwards).
// Errors wrap ErrMalformed. DecodeStage never panics.
func DecodeStage(raw []byte) (*Stage, error) {
	s, err := decodeStage(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return s, nil
}

func decodeStage(raw []byte) (*Stage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) > MaxStageBytes {
		return nil, fmt.Errorf("stage is %d bytes, over the %d-byte limit", len(raw), MaxStageBytes)
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("stage JSON is not valid UTF-8")
	}
	// objectMembers validates every byte it walks past (grammar and
	// nesting depth), so no separate validation pass is needed.
	ms, err := objectMembers(raw)
	if err != nil {
		if errors.Is(err, ErrTooDeep) {
			return nil, fmt.Errorf("stage JSON nests over the limit of %d levels", maxDepth)
		}
		return nil, fmt.Errorf("stage: %v", err)
	}
	s := &Stage{Raw: json.RawMessage(raw)}
	seen := make(map[string]bool, len(ms))
	var flags unknownFlags
	for _, m := range ms {
		if seen[m.Key] && knownStageKey(m.Key) {
			return nil, fmt.Errorf("duplicate field %q", m.Key)
		}
		seen[m.Key] = true
		if err := s.decodeMember(m, &flags); err != nil {
			return nil, fmt.Errorf("field %q: %v", m.Key, err)
		}
	}
	if seen["signature_id"] && seen["canonical_id"] {
		return nil, errors.New(`both "signature_id" and its legacy alias "canonical_id" are present`)
	}
	for _, req := range []string{"id", "signature", "capabilities", "cost", "description", "examples", "lifecycle"} {
		if !seen[req] {
			return nil, fmt.Errorf("missing required field %q", req)
		}
	}
	s.Unknown = flags.list()
	return s, nil
}

func knownStageKey(k string) bool {
	switch k {
	case "id", "signature_id", "canonical_id", "signature", "capabilities", "cost",
		"description", "examples", "lifecycle", "ed25519_signature", "signer_public_key",
		"implementation_code", "implementation_language", "ui_style", "tags", "aliases",
		"name", "properties":
		return true
	}
	return false
}

// optString decodes a string that serde models as Option<String>.
func optString(v json.RawMessage) (string, bool, error) {
	if isNull(v) {
		return "", false, nil
	}
	s, err := decodeString(v)
	return s, err == nil, err
}

func (s *Stage) decodeMember(m member, flags *unknownFlags) error {
	v := m.Value
	var err error
	switch m.Key {
	case "id":
		var id string
		id, err = decodeString(v)
		s.ID = StageID(id)
	case "signature_id", "canonical_id":
		var id string
		id, _, err = optString(v)
		s.SignatureID = SignatureID(id)
		s.LegacyCanonicalID = m.Key == "canonical_id" && id != ""
	case "signature":
		s.Signature, err = decodeSignature(v, flags)
	case "capabilities":
		s.Capabilities, err = decodeCapabilities(v, flags)
	case "cost":
		s.Cost, err = decodeCost(v)
	case "description":
		s.Description, err = decodeString(v)
	case "examples":
		s.Examples, err = decodeExamples(v)
	case "lifecycle":
		s.Lifecycle, err = decodeLifecycle(v, flags)
		s.lifecycleSpan = [2]int{m.Start, m.End}
	case "ed25519_signature":
		s.Ed25519Signature, _, err = optString(v)
	case "signer_public_key":
		s.SignerPublicKey, _, err = optString(v)
	case "implementation_code":
		s.ImplementationCode, s.HasImplementationCode, err = optString(v)
	case "implementation_language":
		s.ImplementationLanguage, _, err = optString(v)
	case "ui_style":
		s.UIStyle, _, err = optString(v)
	case "tags":
		s.Tags, err = decodeStrings(v)
	case "aliases":
		s.Aliases, err = decodeStrings(v)
	case "name":
		s.Name, s.HasName, err = optString(v)
	case "properties":
		s.Properties, err = decodeProperties(v)
	}
	return err
}

// unknownFlags collects values from a newer noether, deduplicated.
type unknownFlags map[string]bool

func (f *unknownFlags) add(format string, args ...any) {
	if *f == nil {
		*f = make(unknownFlags)
	}
	(*f)[fmt.Sprintf(format, args...)] = true
}

func (f unknownFlags) list() []string {
	if len(f) == 0 {
		return nil
	}
	out := make([]string, 0, len(f))
	for k := range f {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func decodeStrings(v json.RawMessage) ([]string, error) {
	if isNull(v) {
		return nil, nil
	}
	elems, err := arrayElems(v)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		s, err := decodeString(e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeCapabilities(v json.RawMessage, flags *unknownFlags) ([]Capability, error) {
	names, err := decodeStrings(v)
	if err != nil {
		return nil, err
	}
	out := make([]Capability, 0, len(names))
	for _, n := range names {
		c := Capability(n)
		if !c.Known() {
			flags.add("capability %q", n)
		}
		out = append(out, c)
	}
	return out, nil
}

func decodeCost(v json.RawMessage) (CostEstimate, error) {
	var c CostEstimate
	ms, err := objectMembers(v)
	if err != nil {
		return c, err
	}
	for _, m := range ms {
		var dst **uint64
		switch m.Key {
		case "time_ms_p50":
			dst = &c.TimeMsP50
		case "tokens_est":
			dst = &c.TokensEst
		case "memory_mb":
			dst = &c.MemoryMB
		default:
			continue
		}
		if isNull(m.Value) {
			*dst = nil
			continue
		}
		n, err := decodeUint(m.Value)
		if err != nil {
			return c, fmt.Errorf("%s: %v", m.Key, err)
		}
		*dst = &n
	}
	return c, nil
}

func decodeExamples(v json.RawMessage) ([]Example, error) {
	elems, err := arrayElems(v)
	if err != nil {
		return nil, err
	}
	out := make([]Example, 0, len(elems))
	for i, e := range elems {
		ms, err := objectMembers(e)
		if err != nil {
			return nil, fmt.Errorf("example %d: %v", i, err)
		}
		var ex Example
		var in, outSeen bool
		for _, m := range ms {
			switch m.Key {
			case "input":
				ex.Input, in = m.Value, true
			case "output":
				ex.Output, outSeen = m.Value, true
			}
		}
		if !in || !outSeen {
			return nil, fmt.Errorf("example %d: both \"input\" and \"output\" are required", i)
		}
		out = append(out, ex)
	}
	return out, nil
}

func decodeProperties(v json.RawMessage) ([]Property, error) {
	if isNull(v) {
		return nil, nil
	}
	elems, err := arrayElems(v)
	if err != nil {
		return nil, err
	}
	out := make([]Property, 0, len(elems))
	for i, e := range elems {
		ms, err := objectMembers(e)
		if err != nil {
			return nil, fmt.Errorf("property %d: %v", i, err)
		}
		p := Property{Raw: e}
		for _, m := range ms {
			if m.Key == "kind" {
				p.Kind, _ = decodeString(m.Value)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func decodeLifecycle(v json.RawMessage, flags *unknownFlags) (Lifecycle, error) {
	if len(v) > 0 && v[0] == '"' {
		name, err := decodeString(v)
		if err != nil {
			return Lifecycle{}, err
		}
		switch name {
		case "Draft":
			return Draft, nil
		case "Active":
			return Active, nil
		case "Tombstone":
			return Tombstone, nil
		case "Deprecated":
			return Lifecycle{}, errors.New(`"Deprecated" needs {"Deprecated":{"successor_id":…}}`)
		}
		flags.add("lifecycle %q", name)
		return Lifecycle{Kind: LifecycleUnknown, Other: string(v)}, nil
	}
	ms, err := objectMembers(v)
	if err != nil {
		return Lifecycle{}, fmt.Errorf("want a string or an object: %v", err)
	}
	if len(ms) != 1 {
		return Lifecycle{}, fmt.Errorf("want exactly one variant key, got %d", len(ms))
	}
	if ms[0].Key != "Deprecated" {
		flags.add("lifecycle %q", ms[0].Key)
		return Lifecycle{Kind: LifecycleUnknown, Other: string(v)}, nil
	}
	inner, err := objectMembers(ms[0].Value)
	if err != nil {
		return Lifecycle{}, fmt.Errorf("deprecated lifecycle: %v", err)
	}
	for _, m := range inner {
		if m.Key == "successor_id" {
			succ, err := decodeString(m.Value)
			if err != nil {
				return Lifecycle{}, fmt.Errorf("successor_id: %v", err)
			}
			return Deprecated(StageID(succ)), nil
		}
	}
	return Lifecycle{}, errors.New(`deprecated lifecycle: missing "successor_id"`)
}

func decodeSignature(v json.RawMessage, flags *unknownFlags) (Signature, error) {
	sig := Signature{Raw: v}
	ms, err := objectMembers(v)
	if err != nil {
		return sig, err
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.Key] {
			return sig, fmt.Errorf("duplicate field %q", m.Key)
		}
		seen[m.Key] = true
		switch m.Key {
		case "input":
			sig.Input, err = decodeNType(m.Value, flags, 0)
		case "output":
			sig.Output, err = decodeNType(m.Value, flags, 0)
		case "effects":
			sig.Effects, err = decodeEffectSet(m.Value, flags)
		case "implementation_hash":
			sig.ImplementationHash, err = decodeString(m.Value)
		}
		if err != nil {
			return sig, fmt.Errorf("%s: %v", m.Key, err)
		}
	}
	for _, req := range []string{"input", "output", "effects", "implementation_hash"} {
		if !seen[req] {
			return sig, fmt.Errorf("missing required field %q", req)
		}
	}
	return sig, nil
}

func decodeNType(v json.RawMessage, flags *unknownFlags, depth int) (NType, error) {
	t := NType{Raw: v}
	if depth > maxDepth {
		return t, errors.New("type nests too deep")
	}
	ms, err := objectMembers(v)
	if err != nil {
		return t, fmt.Errorf("type: %v", err)
	}
	var value json.RawMessage
	var hasKind, hasValue bool
	for _, m := range ms {
		switch m.Key {
		case "kind":
			if hasKind {
				return t, errors.New(`duplicate field "kind"`)
			}
			k, err := decodeString(m.Value)
			if err != nil {
				return t, fmt.Errorf("kind: %v", err)
			}
			t.Kind, hasKind = TypeKind(k), true
		case "value":
			if hasValue {
				return t, errors.New(`duplicate field "value"`)
			}
			value, hasValue = m.Value, true
		}
	}
	if !hasKind {
		return t, errors.New(`type is missing "kind"`)
	}
	if !t.Kind.Known() {
		flags.add("type kind %q", string(t.Kind))
		return t, nil
	}
	needValue := func() error {
		if !hasValue {
			return fmt.Errorf("type %s is missing \"value\"", t.Kind)
		}
		return nil
	}
	sub := func(raw json.RawMessage) (*NType, error) {
		n, err := decodeNType(raw, flags, depth+1)
		return &n, err
	}
	switch t.Kind {
	case KindList, KindStream:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Elem, err = sub(value)
	case KindMap:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Key, t.Value, err = decodeMapValue(value, sub)
	case KindRecord:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Fields, err = decodeFields(value, flags, depth)
	case KindRecordWith:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Fields, t.Rest, err = decodeRecordWith(value, flags, depth)
	case KindUnion:
		if err := needValue(); err != nil {
			return t, err
		}
		var elems []json.RawMessage
		if elems, err = arrayElems(value); err == nil {
			t.Union = make([]NType, 0, len(elems))
			for _, e := range elems {
				n, err := decodeNType(e, flags, depth+1)
				if err != nil {
					return t, err
				}
				t.Union = append(t.Union, n)
			}
		}
	case KindVar:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Var, err = decodeString(value)
	case KindRefined:
		if err := needValue(); err != nil {
			return t, err
		}
		t.Base, t.Refinement, err = decodeRefined(value, flags, sub)
	}
	return t, err
}

func decodeMapValue(v json.RawMessage, sub func(json.RawMessage) (*NType, error)) (*NType, *NType, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, nil, fmt.Errorf("map type: %v", err)
	}
	var k, val *NType
	for _, m := range ms {
		switch m.Key {
		case "key":
			if k, err = sub(m.Value); err != nil {
				return nil, nil, err
			}
		case "value":
			if val, err = sub(m.Value); err != nil {
				return nil, nil, err
			}
		}
	}
	if k == nil || val == nil {
		return nil, nil, errors.New(`map type needs "key" and "value"`)
	}
	return k, val, nil
}

func decodeFields(v json.RawMessage, flags *unknownFlags, depth int) ([]Field, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, fmt.Errorf("record fields: %v", err)
	}
	byName := make(map[string]NType, len(ms))
	for _, m := range ms {
		n, err := decodeNType(m.Value, flags, depth+1)
		if err != nil {
			return nil, fmt.Errorf("field %q: %v", m.Key, err)
		}
		byName[m.Key] = n // last wins, as in serde's map
	}
	out := make([]Field, 0, len(byName))
	for name, t := range byName {
		out = append(out, Field{Name: name, Type: t})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func decodeRecordWith(v json.RawMessage, flags *unknownFlags, depth int) ([]Field, string, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, "", fmt.Errorf("record-with type: %v", err)
	}
	var fields []Field
	var rest string
	var hasFields, hasRest bool
	for _, m := range ms {
		switch m.Key {
		case "fields":
			if fields, err = decodeFields(m.Value, flags, depth); err != nil {
				return nil, "", err
			}
			hasFields = true
		case "rest":
			if rest, err = decodeString(m.Value); err != nil {
				return nil, "", fmt.Errorf("rest: %v", err)
			}
			hasRest = true
		}
	}
	if !hasFields || !hasRest {
		return nil, "", errors.New(`record-with type needs "fields" and "rest"`)
	}
	return fields, rest, nil
}

func decodeRefined(v json.RawMessage, flags *unknownFlags, sub func(json.RawMessage) (*NType, error)) (*NType, *Refinement, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, nil, fmt.Errorf("refined type: %v", err)
	}
	var base *NType
	var ref *Refinement
	for _, m := range ms {
		switch m.Key {
		case "base":
			if base, err = sub(m.Value); err != nil {
				return nil, nil, err
			}
		case "refinement":
			if ref, err = decodeRefinement(m.Value, flags); err != nil {
				return nil, nil, fmt.Errorf("refinement: %v", err)
			}
		}
	}
	if base == nil || ref == nil {
		return nil, nil, errors.New(`refined type needs "base" and "refinement"`)
	}
	return base, ref, nil
}

func decodeRefinement(v json.RawMessage, flags *unknownFlags) (*Refinement, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, err
	}
	r := &Refinement{Raw: v}
	var hasKind, hasOptions bool
	for _, m := range ms {
		if m.Key == "kind" {
			if r.Kind, err = decodeString(m.Value); err != nil {
				return nil, fmt.Errorf("kind: %v", err)
			}
			hasKind = true
		}
	}
	if !hasKind {
		return nil, errors.New(`missing "kind"`)
	}
	for _, m := range ms {
		switch {
		case r.Kind == "Range" && (m.Key == "min" || m.Key == "max"):
			if isNull(m.Value) {
				continue
			}
			f, err := decodeFloat(m.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", m.Key, err)
			}
			if m.Key == "min" {
				r.Min = &f
			} else {
				r.Max = &f
			}
		case r.Kind == "OneOf" && m.Key == "options":
			if r.Options, err = arrayElems(m.Value); err != nil {
				return nil, fmt.Errorf("options: %v", err)
			}
			hasOptions = true
		}
	}
	switch r.Kind {
	case "Range", "NonEmpty":
	case "OneOf":
		if !hasOptions {
			return nil, errors.New(`refinement OneOf needs "options"`)
		}
	default:
		flags.add("refinement %q", r.Kind)
	}
	return r, nil
}

func decodeEffectSet(v json.RawMessage, flags *unknownFlags) (EffectSet, error) {
	ms, err := objectMembers(v)
	if err != nil {
		return nil, fmt.Errorf("want {\"effects\":[…]}: %v", err)
	}
	var arr json.RawMessage
	for _, m := range ms {
		if m.Key == "effects" {
			arr = m.Value
		}
	}
	if arr == nil {
		return nil, errors.New(`missing "effects"`)
	}
	elems, err := arrayElems(arr)
	if err != nil {
		return nil, err
	}
	set := make(EffectSet, 0, len(elems))
	for i, e := range elems {
		eff, err := decodeEffect(e, flags)
		if err != nil {
			return nil, fmt.Errorf("effect %d: %v", i, err)
		}
		set = set.insert(eff)
	}
	return set, nil
}

func decodeEffect(v json.RawMessage, flags *unknownFlags) (Effect, error) {
	e := Effect{Raw: v}
	ms, err := objectMembers(v)
	if err != nil {
		return e, err
	}
	var hasKind bool
	for _, m := range ms {
		if m.Key == "effect" {
			k, err := decodeString(m.Value)
			if err != nil {
				return e, fmt.Errorf("effect: %v", err)
			}
			e.Kind, hasKind = EffectKind(k), true
		}
	}
	if !hasKind {
		return e, errors.New(`missing "effect"`)
	}
	want := ""
	switch e.Kind {
	case EffectCost:
		want = "cents"
	case EffectLlm:
		want = "model"
	case EffectFsRead, EffectFsWrite:
		want = "path"
	}
	if !e.Kind.Known() {
		flags.add("effect %q", string(e.Kind))
		return e, nil
	}
	if want == "" {
		return e, nil
	}
	for _, m := range ms {
		if m.Key != want {
			continue
		}
		switch want {
		case "cents":
			e.Cents, err = decodeUint(m.Value)
		case "model":
			e.Model, err = decodeString(m.Value)
		case "path":
			e.Path, err = decodeString(m.Value)
		}
		if err != nil {
			return e, fmt.Errorf("%s: %v", want, err)
		}
		return e, nil
	}
	return e, fmt.Errorf("%s effect is missing %q", e.Kind, want)
}

// WithLifecycle returns a copy of s whose lifecycle is l, with Raw
// rewritten in place of the old lifecycle value only; every other byte is
// kept. s itself is not modified.
func (s *Stage) WithLifecycle(l Lifecycle) (*Stage, error) {
	wire, err := l.WireJSON()
	if err != nil {
		return nil, err
	}
	start, end := s.lifecycleSpan[0], s.lifecycleSpan[1]
	if end <= start || end > len(s.Raw) {
		return nil, fmt.Errorf("stage %s: lifecycle position unknown", s.ID)
	}
	raw := make([]byte, 0, len(s.Raw)-(end-start)+len(wire))
	raw = append(raw, s.Raw[:start]...)
	raw = append(raw, wire...)
	raw = append(raw, s.Raw[end:]...)
	return DecodeStage(raw)
}
