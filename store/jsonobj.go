package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// member is one key/value pair of a JSON object, in document order.
// Start and End are the byte offsets of the value inside the object's
// source, so a caller can splice a new value in without re-encoding
// anything else.
type member struct {
	Key        string
	Value      json.RawMessage
	Start, End int
}

// maxDepth bounds nesting in every decoder of this package, so hostile
// input cannot exhaust the stack. noether's own types never nest deeply.
const maxDepth = 128

var errNotObject = errors.New("not a JSON object")

// objectMembers splits a JSON object into its members, in order, with
// exact (case-sensitive) keys. Unlike encoding/json struct decoding it
// neither folds case nor silently lets a later duplicate win: the caller
// sees every member and decides.
func objectMembers(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errNotObject
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("member %q: %w", key, err)
		}
		end := int(dec.InputOffset())
		start := end - len(v)
		out = append(out, member{Key: key, Value: v, Start: start, End: end})
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON object")
	}
	return out, nil
}

// jsonDepth reports the maximum nesting depth of a syntactically valid
// JSON document, scanning bytes only (strings are skipped correctly).
func jsonDepth(raw []byte) int {
	depth, max := 0, 0
	inStr, esc := false, false
	for _, c := range raw {
		if inStr {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > max {
				max = depth
			}
		case '}', ']':
			depth--
		}
	}
	return max
}

// isNull reports whether a raw JSON value is the literal null.
func isNull(v json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// decodeString decodes a raw JSON string value.
func decodeString(v json.RawMessage) (string, error) {
	var s string
	if len(v) == 0 || v[0] != '"' {
		return "", fmt.Errorf("want a string, got %s", kindOf(v))
	}
	if err := json.Unmarshal(v, &s); err != nil {
		return "", err
	}
	return s, nil
}

// decodeUint decodes a raw JSON unsigned integer the way serde decodes u64:
// no fraction, no exponent, no sign.
func decodeUint(v json.RawMessage) (uint64, error) {
	var n uint64
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, fmt.Errorf("want an unsigned integer, got %s", kindOf(v))
	}
	if err := json.Unmarshal(v, &n); err != nil {
		return 0, fmt.Errorf("want an unsigned 64-bit integer, got %s", v)
	}
	return n, nil
}

// decodeFloat decodes a raw JSON number as an f64, as serde does for f64
// fields (integers are accepted and widened).
func decodeFloat(v json.RawMessage) (float64, error) {
	var f float64
	if len(v) == 0 || !(v[0] == '-' || (v[0] >= '0' && v[0] <= '9')) {
		return 0, fmt.Errorf("want a number, got %s", kindOf(v))
	}
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, err
	}
	return f, nil
}

// kindOf names the JSON type of a raw value for error messages.
func kindOf(v json.RawMessage) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// arrayElems splits a raw JSON array into its elements.
func arrayElems(v json.RawMessage) ([]json.RawMessage, error) {
	if len(v) == 0 || v[0] != '[' {
		return nil, fmt.Errorf("want an array, got %s", kindOf(v))
	}
	var out []json.RawMessage
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, err
	}
	return out, nil
}
