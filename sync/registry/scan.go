package registry

import (
	"bytes"
	"encoding/json"
	"errors"
)

// The helpers below walk JSON that json.Valid has already accepted, so a
// page is validated once and then split without a second full decode
// (encoding/json would re-validate the whole result at every level). They
// still check bounds everywhere and never panic on any input.

var errShape = errors.New("unexpected JSON structure")

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(p []byte, i int) int {
	for i < len(p) && isSpace(p[i]) {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at p[i].
func valueEnd(p []byte, i int) int {
	if i >= len(p) {
		return len(p)
	}
	switch p[i] {
	case '"':
		return stringEnd(p, i)
	case '{', '[':
		depth := 0
		for ; i < len(p); i++ {
			switch p[i] {
			case '"':
				i = stringEnd(p, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(p)
	}
	for i < len(p) && !isSpace(p[i]) && p[i] != ',' && p[i] != '}' && p[i] != ']' {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at p[i] ('"').
// It jumps between quotes with bytes.IndexByte: strings (implementation
// code) are most of a page's bytes.
func stringEnd(p []byte, i int) int {
	j := i + 1
	for j < len(p) {
		k := bytes.IndexByte(p[j:], '"')
		if k < 0 {
			return len(p)
		}
		j += k
		n := 0 // backslashes right before the quote
		for b := j - 1; b > i && p[b] == '\\'; b-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
	return len(p)
}

// objectMembers calls fn for each member of the object p (valid JSON,
// no surrounding space), in order. Keys are unescaped.
func objectMembers(p []byte, fn func(key string, value []byte)) error {
	if len(p) < 2 || p[0] != '{' {
		return errShape
	}
	i := skipSpace(p, 1)
	if i < len(p) && p[i] == '}' {
		return nil
	}
	for i < len(p) {
		if p[i] != '"' {
			return errShape
		}
		kend := stringEnd(p, i)
		rawKey := p[i:kend]
		key := string(rawKey[1 : len(rawKey)-1])
		for _, c := range rawKey {
			if c == '\\' {
				if json.Unmarshal(rawKey, &key) != nil {
					return errShape
				}
				break
			}
		}
		i = skipSpace(p, kend)
		if i >= len(p) || p[i] != ':' {
			return errShape
		}
		i = skipSpace(p, i+1)
		vend := valueEnd(p, i)
		if vend <= i {
			return errShape
		}
		fn(key, p[i:vend])
		i = skipSpace(p, vend)
		if i >= len(p) {
			return errShape
		}
		switch p[i] {
		case '}':
			return nil
		case ',':
			i = skipSpace(p, i+1)
		default:
			return errShape
		}
	}
	return errShape
}

// arrayElements returns each element of the array p (valid JSON, no
// surrounding space) as a subslice of p.
func arrayElements(p []byte) ([]json.RawMessage, error) {
	if len(p) < 2 || p[0] != '[' {
		return nil, errShape
	}
	out := []json.RawMessage{}
	i := skipSpace(p, 1)
	if i < len(p) && p[i] == ']' {
		return out, nil
	}
	for i < len(p) {
		end := valueEnd(p, i)
		if end <= i {
			return nil, errShape
		}
		out = append(out, json.RawMessage(p[i:end:end]))
		i = skipSpace(p, end)
		if i >= len(p) {
			return nil, errShape
		}
		switch p[i] {
		case ']':
			return out, nil
		case ',':
			i = skipSpace(p, i+1)
		default:
			return nil, errShape
		}
	}
	return nil, errShape
}
