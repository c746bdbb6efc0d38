package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
// sees every member and decides. Values are sub-slices of raw.
func objectMembers(raw []byte) ([]member, error) {
	b := raw
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errNotObject
	}
	i = skipWS(b, i+1)
	out := make([]member, 0, 8)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return nil, synErr(i, "want an object key")
			}
			ks := i
			ke, esc, err := scanString(b, i)
			if err != nil {
				return nil, err
			}
			key, err := unquote(b[ks:ke], esc)
			if err != nil {
				return nil, err
			}
			i = skipWS(b, ke)
			if i >= len(b) || b[i] != ':' {
				return nil, synErr(i, "want ':' after an object key")
			}
			vs := skipWS(b, i+1)
			ve, err := scanValue(b, vs, 1)
			if err != nil {
				return nil, fmt.Errorf("member %q: %w", key, err)
			}
			out = append(out, member{Key: key, Value: json.RawMessage(b[vs:ve:ve]), Start: vs, End: ve})
			i = skipWS(b, ve)
			if i >= len(b) {
				return nil, synErr(i, "unterminated object")
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return nil, synErr(i, "want ',' or '}' in an object")
			}
			i = skipWS(b, i+1)
		}
	}
	if skipWS(b, i) != len(b) {
		return nil, fmt.Errorf("trailing data after JSON object")
	}
	return out, nil
}

// isNull reports whether a raw JSON value is the literal null.
func isNull(v json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

// decodeString decodes a raw JSON string value.
func decodeString(v json.RawMessage) (string, error) {
	if len(v) == 0 || v[0] != '"' {
		return "", fmt.Errorf("want a string, got %s", JSONKind(v))
	}
	end, esc, err := scanString(v, 0)
	if err != nil {
		return "", err
	}
	if skipWS(v, end) != len(v) {
		return "", synErr(end, "trailing data after a string")
	}
	return unquote(v[:end], esc)
}

// decodeUint decodes a raw JSON unsigned integer the way serde decodes u64:
// no fraction, no exponent, no sign.
func decodeUint(v json.RawMessage) (uint64, error) {
	var n uint64
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return 0, fmt.Errorf("want an unsigned integer, got %s", JSONKind(v))
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
		return 0, fmt.Errorf("want a number, got %s", JSONKind(v))
	}
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, err
	}
	return f, nil
}

// JSONKind names the JSON type of a raw value for error messages: "an
// object", "an array", "a string", "a boolean", "null", "a number", or
// "nothing" for no bytes. v must not start with white space.
func JSONKind(v json.RawMessage) string {
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

// arrayElems splits a raw JSON array into its elements (sub-slices of v).
func arrayElems(v json.RawMessage) ([]json.RawMessage, error) {
	if len(v) == 0 || v[0] != '[' {
		return nil, fmt.Errorf("want an array, got %s", JSONKind(v))
	}
	var out []json.RawMessage
	i := skipWS(v, 1)
	if i < len(v) && v[i] == ']' {
		return out, nil
	}
	for {
		end, err := scanValue(v, i, 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v[i:end:end])
		i = skipWS(v, end)
		if i >= len(v) {
			return nil, synErr(i, "unterminated array")
		}
		if v[i] == ']' {
			return out, nil
		}
		if v[i] != ',' {
			return nil, synErr(i, "want ',' or ']' in an array")
		}
		i = skipWS(v, i+1)
	}
}
