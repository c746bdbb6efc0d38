package store

import (
	"encoding/json"
	"fmt"
	"strings"
)

// TypeKind names an NType variant, exactly as on the wire ("Text", "List", …).
type TypeKind string

// The NType kinds noether v0.8.2 knows, in declaration order.
const (
	KindAny        TypeKind = "Any"
	KindBool       TypeKind = "Bool"
	KindBytes      TypeKind = "Bytes"
	KindList       TypeKind = "List"
	KindMap        TypeKind = "Map"
	KindNull       TypeKind = "Null"
	KindNumber     TypeKind = "Number"
	KindRecord     TypeKind = "Record"
	KindStream     TypeKind = "Stream"
	KindText       TypeKind = "Text"
	KindUnion      TypeKind = "Union"
	KindVNode      TypeKind = "VNode"
	KindVar        TypeKind = "Var"
	KindRecordWith TypeKind = "RecordWith"
	KindRefined    TypeKind = "Refined"
)

// Known reports whether noether v0.8.2 knows k.
func (k TypeKind) Known() bool {
	switch k {
	case KindAny, KindBool, KindBytes, KindList, KindMap, KindNull, KindNumber,
		KindRecord, KindStream, KindText, KindUnion, KindVNode, KindVar,
		KindRecordWith, KindRefined:
		return true
	}
	return false
}

// NType is noether's structural type, adjacently tagged on "kind"/"value".
// Which fields are set depends on Kind. A kind from a newer noether keeps
// only Kind and Raw.
type NType struct {
	Kind TypeKind
	// Elem is the element type of List and Stream.
	Elem *NType
	// Key and Value are Map's types.
	Key, Value *NType
	// Fields are Record's and RecordWith's fields, sorted bytewise by
	// name; a duplicate key keeps the last value, as serde does.
	Fields []Field
	// Rest is RecordWith's row variable; Var is Var's name.
	Rest, Var string
	// Union keeps its members in wire order (that order is hashed).
	Union []NType
	// Base and Refinement are Refined's payload.
	Base       *NType
	Refinement *Refinement
	// Raw is the type's JSON as received.
	Raw json.RawMessage
}

// Field is one named field of a Record or RecordWith type.
type Field struct {
	Name string
	Type NType
}

// Refinement narrows a Refined type. Kind is PascalCase: Range, OneOf,
// NonEmpty.
type Refinement struct {
	Kind     string
	Min, Max *float64
	Options  []json.RawMessage
	Raw      json.RawMessage
}

// EffectKind names an Effect variant ("Pure", "Cost", …).
type EffectKind string

// The effects noether v0.8.2 knows, in declaration (= sort) order.
const (
	EffectCost             EffectKind = "Cost"
	EffectFallible         EffectKind = "Fallible"
	EffectFsRead           EffectKind = "FsRead"
	EffectFsWrite          EffectKind = "FsWrite"
	EffectLlm              EffectKind = "Llm"
	EffectNetwork          EffectKind = "Network"
	EffectNonDeterministic EffectKind = "NonDeterministic"
	EffectProcess          EffectKind = "Process"
	EffectPure             EffectKind = "Pure"
	EffectUnknown          EffectKind = "Unknown"
)

// effectRank is the declaration order; unknown kinds sort last.
func effectRank(k EffectKind) int {
	switch k {
	case EffectCost:
		return 0
	case EffectFallible:
		return 1
	case EffectFsRead:
		return 2
	case EffectFsWrite:
		return 3
	case EffectLlm:
		return 4
	case EffectNetwork:
		return 5
	case EffectNonDeterministic:
		return 6
	case EffectProcess:
		return 7
	case EffectPure:
		return 8
	case EffectUnknown:
		return 9
	}
	return 10
}

// Known reports whether noether v0.8.2 knows k. (EffectUnknown is a known
// variant: noether's own "effects unknown" marker.)
func (k EffectKind) Known() bool { return effectRank(k) < 10 }

// Effect is one side effect a stage declares. Cents is set for Cost, Model
// for Llm, Path for FsRead and FsWrite.
type Effect struct {
	Kind  EffectKind
	Cents uint64
	Model string
	Path  string
	// Raw is the effect object as received.
	Raw json.RawMessage
}

// DebugKey renders e the way Rust's Debug does, which is how noether keys
// stats.by_effect: `Pure`, `Cost { cents: 5 }`, `Llm { model: "x" }`.
func (e Effect) DebugKey() string {
	switch e.Kind {
	case EffectCost:
		return fmt.Sprintf("Cost { cents: %d }", e.Cents)
	case EffectLlm:
		return fmt.Sprintf("Llm { model: %s }", rustDebugString(e.Model))
	case EffectFsRead, EffectFsWrite:
		return fmt.Sprintf("%s { path: %s }", e.Kind, rustDebugString(e.Path))
	}
	return string(e.Kind)
}

// rustDebugString quotes s as Rust's <str as Debug> does.
func rustDebugString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case 0:
			b.WriteString(`\0`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u{%x}`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// EffectSet is a stage's effects, sorted and deduplicated as noether's
// BTreeSet is. That sorted order is what gets hashed.
type EffectSet []Effect

// LifecycleKind is the variant of a Lifecycle.
type LifecycleKind uint8

// Lifecycle variants. LifecycleUnknown is a value from a newer noether.
const (
	LifecycleUnknown LifecycleKind = iota
	LifecycleDraft
	LifecycleActive
	LifecycleDeprecated
	LifecycleTombstone
)

// Lifecycle is a stage's lifecycle state. Successor is set only for
// Deprecated; Other holds the raw JSON of a lifecycle this version does
// not know.
type Lifecycle struct {
	Kind      LifecycleKind
	Successor StageID
	Other     string
}

// Convenience constructors for lifecycles.
var (
	Draft     = Lifecycle{Kind: LifecycleDraft}
	Active    = Lifecycle{Kind: LifecycleActive}
	Tombstone = Lifecycle{Kind: LifecycleTombstone}
)

// Deprecated returns the Deprecated lifecycle pointing at successor.
func Deprecated(successor StageID) Lifecycle {
	return Lifecycle{Kind: LifecycleDeprecated, Successor: successor}
}

// Name returns the lowercase name used in stats keys, the list query
// parameter and the PATCH body: draft, active, deprecated, tombstone
// (or "unknown").
func (k LifecycleKind) Name() string {
	switch k {
	case LifecycleDraft:
		return "draft"
	case LifecycleActive:
		return "active"
	case LifecycleDeprecated:
		return "deprecated"
	case LifecycleTombstone:
		return "tombstone"
	}
	return "unknown"
}

// ParseLifecycleKind parses a lowercase lifecycle name.
func ParseLifecycleKind(s string) (LifecycleKind, error) {
	switch s {
	case "draft":
		return LifecycleDraft, nil
	case "active":
		return LifecycleActive, nil
	case "deprecated":
		return LifecycleDeprecated, nil
	case "tombstone":
		return LifecycleTombstone, nil
	}
	return LifecycleUnknown, fmt.Errorf("unknown lifecycle %q: want draft, active, deprecated or tombstone", s)
}

// AllLifecycleKinds lists the known lifecycle kinds in order.
func AllLifecycleKinds() []LifecycleKind {
	return []LifecycleKind{LifecycleDraft, LifecycleActive, LifecycleDeprecated, LifecycleTombstone}
}

// String renders l like Rust's Debug, as noether's error messages do:
// Active, Deprecated { successor_id: StageId("…") }.
func (l Lifecycle) String() string {
	switch l.Kind {
	case LifecycleDraft:
		return "Draft"
	case LifecycleActive:
		return "Active"
	case LifecycleTombstone:
		return "Tombstone"
	case LifecycleDeprecated:
		return fmt.Sprintf("Deprecated { successor_id: StageId(%q) }", string(l.Successor))
	}
	return "Unknown(" + l.Other + ")"
}

// WireJSON returns l as it appears in a Stage's "lifecycle" field.
func (l Lifecycle) WireJSON() ([]byte, error) {
	switch l.Kind {
	case LifecycleDraft:
		return []byte(`"Draft"`), nil
	case LifecycleActive:
		return []byte(`"Active"`), nil
	case LifecycleTombstone:
		return []byte(`"Tombstone"`), nil
	case LifecycleDeprecated:
		succ, err := json.Marshal(string(l.Successor))
		if err != nil {
			return nil, err
		}
		return []byte(`{"Deprecated":{"successor_id":` + string(succ) + `}}`), nil
	}
	if l.Other != "" {
		return []byte(l.Other), nil
	}
	return nil, fmt.Errorf("cannot encode an unknown lifecycle")
}
