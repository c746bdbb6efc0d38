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
	end, err := objectWalk(p, 0, func(key string, at int) int {
		end := valueEnd(p, at)
		if end > at {
			fn(key, p[at:end])
		}
		return end
	})
	if err == nil && end != len(p) {
		err = errShape
	}
	return err
}

// objectWalk walks the object starting at p[i] (valid JSON): for each
// member, in order, it calls walk with the unescaped key and the offset of
// the value, and walk returns the offset just past the value (by
// valueEnd, or by splitting the value on the way). It returns the offset
// just past the object.
func objectWalk(p []byte, i int, walk func(key string, at int) int) (int, error) {
	if i >= len(p) || p[i] != '{' {
		return 0, errShape
	}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == '}' {
		return i + 1, nil
	}
	for i < len(p) {
		if p[i] != '"' {
			return 0, errShape
		}
		kend := stringEnd(p, i)
		rawKey := p[i:kend]
		if len(rawKey) < 2 {
			return 0, errShape
		}
		key := string(rawKey[1 : len(rawKey)-1])
		for _, c := range rawKey {
			if c == '\\' {
				if json.Unmarshal(rawKey, &key) != nil {
					return 0, errShape
				}
				break
			}
		}
		i = skipSpace(p, kend)
		if i >= len(p) || p[i] != ':' {
			return 0, errShape
		}
		i = skipSpace(p, i+1)
		vend := walk(key, i)
		if vend <= i {
			return 0, errShape
		}
		i = skipSpace(p, vend)
		if i >= len(p) {
			return 0, errShape
		}
		switch p[i] {
		case '}':
			return i + 1, nil
		case ',':
			i = skipSpace(p, i+1)
		default:
			return 0, errShape
		}
	}
	return 0, errShape
}

// arrayElements returns each element of the array p (valid JSON, no
// surrounding space) as a subslice of p.
func arrayElements(p []byte) ([]json.RawMessage, error) {
	out, end, err := arrayWalk(p, 0)
	if err == nil && end != len(p) {
		err = errShape
	}
	return out, err
}

// arrayWalk returns each element of the array starting at p[i] (valid
// JSON) as a subslice of p (an empty, non-nil slice for []), and the
// offset just past the array.
func arrayWalk(p []byte, i int) ([]json.RawMessage, int, error) {
	if i >= len(p) || p[i] != '[' {
		return nil, 0, errShape
	}
	out := []json.RawMessage{}
	i = skipSpace(p, i+1)
	if i < len(p) && p[i] == ']' {
		return out, i + 1, nil
	}
	for i < len(p) {
		end := valueEnd(p, i)
		if end <= i {
			return nil, 0, errShape
		}
		out = append(out, json.RawMessage(p[i:end:end]))
		i = skipSpace(p, end)
		if i >= len(p) {
			return nil, 0, errShape
		}
		switch p[i] {
		case ']':
			return out, i + 1, nil
		case ',':
			i = skipSpace(p, i+1)
		default:
			return nil, 0, errShape
		}
	}
	return nil, 0, errShape
}
