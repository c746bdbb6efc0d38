package store

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
)

// StdlibPublicKeyHex is noether's public, deterministic stdlib key (spec
// §2.5). Anyone can derive its private half (StdlibSigningKey), so a
// signature under it proves nothing about origin.
const StdlibPublicKeyHex = "1d17f5b0d9afdb8724a4e7d86620534b26dbedf5e988ed2dd4a48afb1a9ca4f7"

// stdlibSeedLabel and stdlibHashPrefix are noether's stdlib constants.
const (
	stdlibSeedLabel  = "noether-stdlib-signing-key-v0.1.0"
	stdlibHashPrefix = "noether-stdlib-v0.1.0:"
)

// StdlibSigningKey derives noether's stdlib private key: the Ed25519 key
// whose seed is SHA-256("noether-stdlib-signing-key-v0.1.0"). Each call
// returns a fresh slice the caller owns.
func StdlibSigningKey() ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(stdlibSeedLabel))
	return ed25519.NewKeyFromSeed(seed[:])
}

// StdlibImplementationHash returns hex(SHA-256("noether-stdlib-v0.1.0:"+name)),
// the implementation_hash noether gives every stdlib stage.
func StdlibImplementationHash(name string) string {
	return sha256Hex([]byte(stdlibHashPrefix + name))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IdentityPreimages returns the exact bytes hashed for the StageId and the
// SignatureId (spec §2.1): the canonical JSON, members ordered per order,
// of {"name","input","output","effects","implementation_hash"} and of the
// same object without implementation_hash. input, output and effects are
// the typed round-trip of sig: unknown keys dropped, the EffectSet as the
// decoder sorted and deduplicated it, Range bounds as f64, Union order
// kept, Record fields sorted, OneOf options as serde_json values. name is
// "" when the stage has no name.
//
// A type kind, effect or refinement from a newer noether has no typed form
// here; its raw JSON is canonicalized instead, a best effort that matches
// only if the newer noether drops no keys from it.
func IdentityPreimages(name string, sig Signature, order KeyOrder) (stageID, signatureID []byte, err error) {
	tv, err := typedSignature(&sig)
	if err != nil {
		return nil, nil, err
	}
	stageID, signatureID = tv.preimages(name, order)
	return stageID, signatureID, nil
}

// ComputeIDs returns the StageId and SignatureId noether 0.8.2 computes
// for a stage with this name and signature (serde_jcs member order).
func ComputeIDs(name string, sig Signature) (StageID, SignatureID, error) {
	st, si, err := IdentityPreimages(name, sig, OrderSerdeJCS)
	if err != nil {
		return "", "", err
	}
	return StageID(sha256Hex(st)), SignatureID(sha256Hex(si)), nil
}

// typedSig is a Signature converted to serde_json values, ready to hash.
type typedSig struct {
	input, output, effects jvalue
	hash                   string
}

func typedSignature(sig *Signature) (*typedSig, error) {
	in, err := ntypeValue(&sig.Input, 0)
	if err != nil {
		return nil, fmt.Errorf("signature input: %w", err)
	}
	out, err := ntypeValue(&sig.Output, 0)
	if err != nil {
		return nil, fmt.Errorf("signature output: %w", err)
	}
	eff, err := effectSetValue(sig.Effects)
	if err != nil {
		return nil, fmt.Errorf("signature effects: %w", err)
	}
	return &typedSig{input: in, output: out, effects: eff, hash: sig.ImplementationHash}, nil
}

// preimages builds the v2 (noether ≥ 0.6.0) StageId and SignatureId bytes.
func (t *typedSig) preimages(name string, order KeyOrder) (stageID, signatureID []byte) {
	obj := jstruct(
		jmember{"name", jstr(name)},
		jmember{"input", t.input},
		jmember{"output", t.output},
		jmember{"effects", t.effects},
		jmember{"implementation_hash", jstr(t.hash)},
	)
	stageID = appendJCS(nil, &obj, order)
	obj.obj = obj.obj[:4]
	signatureID = appendJCS(nil, &obj, order)
	return stageID, signatureID
}

// legacyV1ID is the v1 (noether 0.2–0.4) StageId preimage: the canonical
// JSON of the signature object alone, without the name.
func (t *typedSig) legacyV1ID(order KeyOrder) []byte {
	obj := t.structObject()
	return appendJCS(nil, &obj, order)
}

// legacyV0ID is the v0 (noether ≤ 0.1) StageId preimage: compact
// serde_json of the signature struct in declaration order.
func (t *typedSig) legacyV0ID() []byte {
	obj := t.structObject()
	return appendCompact(nil, &obj)
}

// legacyV0SignatureID is the v0 canonical_id preimage: compact serde_json
// of the map {effects,input,name,output}, keys sorted bytewise.
func (t *typedSig) legacyV0SignatureID(name string) []byte {
	obj := jstruct(
		jmember{"effects", t.effects},
		jmember{"input", t.input},
		jmember{"name", jstr(name)},
		jmember{"output", t.output},
	)
	obj.isMap = true
	return appendCompact(nil, &obj)
}

func (t *typedSig) structObject() jvalue {
	return jstruct(
		jmember{"input", t.input},
		jmember{"output", t.output},
		jmember{"effects", t.effects},
		jmember{"implementation_hash", jstr(t.hash)},
	)
}

var errNoKind = errors.New("type has no kind")

// rawValue parses raw JSON of a value this version does not know.
func rawValue(what string, raw []byte) (jvalue, error) {
	if len(raw) == 0 {
		return jvalue{}, fmt.Errorf("%s has no JSON to hash", what)
	}
	v, err := parseJSON(raw)
	if err != nil {
		return jvalue{}, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// ntypeValue is serde_json::to_value of an NType: {"kind":K} for unit
// variants, {"kind":K,"value":…} otherwise.
func ntypeValue(t *NType, depth int) (jvalue, error) {
	if depth > maxDepth {
		return jvalue{}, errors.New("type nests too deep")
	}
	if t.Kind == "" {
		return jvalue{}, errNoKind
	}
	if !t.Kind.Known() {
		return rawValue(fmt.Sprintf("type kind %q", string(t.Kind)), t.Raw)
	}
	sub := func(what string, n *NType) (jvalue, error) {
		if n == nil {
			return jvalue{}, fmt.Errorf("%s type has no %s", t.Kind, what)
		}
		return ntypeValue(n, depth+1)
	}
	kind := jmember{"kind", jstr(string(t.Kind))}
	var value jvalue
	var err error
	switch t.Kind {
	case KindAny, KindBool, KindBytes, KindNull, KindNumber, KindText, KindVNode:
		return jstruct(kind), nil
	case KindList, KindStream:
		value, err = sub("element", t.Elem)
	case KindMap:
		var k, v jvalue
		if k, err = sub("key", t.Key); err != nil {
			return jvalue{}, err
		}
		if v, err = sub("value", t.Value); err != nil {
			return jvalue{}, err
		}
		value = jstruct(jmember{"key", k}, jmember{"value", v})
	case KindRecord:
		value, err = fieldsValue(t.Fields, depth)
	case KindRecordWith:
		var fields jvalue
		if fields, err = fieldsValue(t.Fields, depth); err != nil {
			return jvalue{}, err
		}
		value = jstruct(jmember{"fields", fields}, jmember{"rest", jstr(t.Rest)})
	case KindUnion:
		value = jvalue{kind: jArray, arr: make([]jvalue, 0, len(t.Union))}
		for i := range t.Union {
			var m jvalue
			if m, err = ntypeValue(&t.Union[i], depth+1); err != nil {
				return jvalue{}, err
			}
			value.arr = append(value.arr, m)
		}
	case KindVar:
		value = jstr(t.Var)
	case KindRefined:
		var base, ref jvalue
		if base, err = sub("base", t.Base); err != nil {
			return jvalue{}, err
		}
		if t.Refinement == nil {
			return jvalue{}, errors.New("refined type has no refinement")
		}
		if ref, err = refinementValue(t.Refinement); err != nil {
			return jvalue{}, err
		}
		value = jstruct(jmember{"base", base}, jmember{"refinement", ref})
	}
	if err != nil {
		return jvalue{}, err
	}
	return jstruct(kind, jmember{"value", value}), nil
}

// fieldsValue is a Record's BTreeMap of fields. Duplicate names keep the
// last, as serde does.
func fieldsValue(fields []Field, depth int) (jvalue, error) {
	v := jvalue{kind: jObject, isMap: true, obj: make([]jmember, 0, len(fields))}
	for i := range fields {
		t, err := ntypeValue(&fields[i].Type, depth+1)
		if err != nil {
			return jvalue{}, fmt.Errorf("field %q: %w", fields[i].Name, err)
		}
		dup := false
		for j := range v.obj {
			if v.obj[j].key == fields[i].Name {
				v.obj[j].val, dup = t, true
				break
			}
		}
		if !dup {
			v.obj = append(v.obj, jmember{fields[i].Name, t})
		}
	}
	return v, nil
}

// refinementValue is serde_json::to_value of a Refinement (internally
// tagged on "kind"; Range bounds are f64, each omitted when absent).
func refinementValue(r *Refinement) (jvalue, error) {
	kind := jmember{"kind", jstr(r.Kind)}
	switch r.Kind {
	case "NonEmpty":
		return jstruct(kind), nil
	case "Range":
		v := jstruct(kind)
		for _, b := range []struct {
			key string
			f   *float64
		}{{"min", r.Min}, {"max", r.Max}} {
			if b.f == nil {
				continue
			}
			if math.IsNaN(*b.f) || math.IsInf(*b.f, 0) {
				return jvalue{}, fmt.Errorf("refinement Range %s is not a finite number", b.key)
			}
			v.obj = append(v.obj, jmember{b.key, jvalue{kind: jFloat, f: *b.f}})
		}
		return v, nil
	case "OneOf":
		opts := jvalue{kind: jArray, arr: make([]jvalue, 0, len(r.Options))}
		for i, raw := range r.Options {
			o, err := rawValue(fmt.Sprintf("refinement OneOf option %d", i), raw)
			if err != nil {
				return jvalue{}, err
			}
			opts.arr = append(opts.arr, o)
		}
		return jstruct(kind, jmember{"options", opts}), nil
	}
	return rawValue(fmt.Sprintf("refinement %q", r.Kind), r.Raw)
}

// effectSetValue is serde_json::to_value of an EffectSet:
// {"effects":[…]} in the set's (already sorted) order.
func effectSetValue(set EffectSet) (jvalue, error) {
	arr := jvalue{kind: jArray, arr: make([]jvalue, 0, len(set))}
	for i := range set {
		e, err := effectValue(&set[i])
		if err != nil {
			return jvalue{}, fmt.Errorf("effect %d: %w", i, err)
		}
		arr.arr = append(arr.arr, e)
	}
	return jstruct(jmember{"effects", arr}), nil
}

// effectValue is serde_json::to_value of an Effect (internally tagged on
// "effect", the tag first).
func effectValue(e *Effect) (jvalue, error) {
	tag := jmember{"effect", jstr(string(e.Kind))}
	switch e.Kind {
	case EffectCost:
		return jstruct(tag, jmember{"cents", jvalue{kind: jUint, u: e.Cents}}), nil
	case EffectLlm:
		return jstruct(tag, jmember{"model", jstr(e.Model)}), nil
	case EffectFsRead, EffectFsWrite:
		return jstruct(tag, jmember{"path", jstr(e.Path)}), nil
	case "":
		return jvalue{}, errors.New("effect has no kind")
	}
	if e.Kind.Known() {
		return jstruct(tag), nil
	}
	return rawValue(fmt.Sprintf("effect %q", string(e.Kind)), e.Raw)
}

// signatureUnknowns lists the values in sig that this version does not
// know (a type kind, effect or refinement from a newer noether).
func signatureUnknowns(sig *Signature) []string {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	var walk func(t *NType, depth int)
	walk = func(t *NType, depth int) {
		if t == nil || depth > maxDepth {
			return
		}
		if !t.Kind.Known() {
			add(fmt.Sprintf("type kind %q", string(t.Kind)))
			return
		}
		walk(t.Elem, depth+1)
		walk(t.Key, depth+1)
		walk(t.Value, depth+1)
		walk(t.Base, depth+1)
		for i := range t.Fields {
			walk(&t.Fields[i].Type, depth+1)
		}
		for i := range t.Union {
			walk(&t.Union[i], depth+1)
		}
		if r := t.Refinement; r != nil {
			switch r.Kind {
			case "Range", "OneOf", "NonEmpty":
			default:
				add(fmt.Sprintf("refinement %q", r.Kind))
			}
		}
	}
	walk(&sig.Input, 0)
	walk(&sig.Output, 0)
	for _, e := range sig.Effects {
		if !e.Kind.Known() {
			add(fmt.Sprintf("effect %q", string(e.Kind)))
		}
	}
	return out
}
