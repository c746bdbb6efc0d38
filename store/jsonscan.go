package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A small validating JSON scanner. Decoding a 5 KB stage with
// encoding/json's token API costs hundreds of microseconds, which made
// decoding, not the network, the bottleneck of a sync. This scanner
// validates the RFC 8259 grammar (UTF-8 validity is checked once by the
// caller) and returns byte offsets, so values can be sliced out of the
// original bytes without copying.

// ErrTooDeep marks JSON nested deeper than a decoder's limit.
var ErrTooDeep = errors.New("JSON nests too deep")

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

func synErr(off int, format string, args ...any) error {
	return &syntaxError{off: off, msg: fmt.Sprintf(format, args...)}
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanValue validates the value starting at b[i] (no leading whitespace)
// and returns the offset just past it. depth counts enclosing containers.
func scanValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, synErr(i, "unexpected end of input")
	}
	switch c := b[i]; {
	case c == '{':
		return scanObject(b, i, depth+1)
	case c == '[':
		return scanArray(b, i, depth+1)
	case c == '"':
		end, _, err := scanString(b, i)
		return end, err
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	default:
		return i, synErr(i, "unexpected character %q", c)
	}
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, synErr(i, "invalid literal")
	}
	return i + len(lit), nil
}

func scanObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, ErrTooDeep
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, synErr(i, "want an object key")
		}
		var err error
		if i, _, err = scanString(b, i); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, synErr(i, "want ':' after an object key")
		}
		i = skipWS(b, i+1)
		if i, err = scanValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, synErr(i, "unterminated object")
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return i, synErr(i, "want ',' or '}' in an object")
		}
	}
}

func scanArray(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, ErrTooDeep
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = scanValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return i, synErr(i, "unterminated array")
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return i, synErr(i, "want ',' or ']' in an array")
		}
	}
}

// scanString validates the string starting at b[i] == '"' and returns the
// offset past its closing quote, and whether it contains escapes.
func scanString(b []byte, i int) (int, bool, error) {
	start := i
	i++
	escaped := false
	for i < len(b) {
		// Skip eight plain bytes at a time: stage code is long strings.
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			if special := specialBytes(w); special != 0 {
				i += bits.TrailingZeros64(special) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		if plainStringByte[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return i, false, synErr(i, "unterminated escape")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex4(b[i+2:i+6]) {
					return i, false, synErr(i, `invalid \u escape`)
				}
				i += 6
			default:
				return i, false, synErr(i, "invalid escape %q", b[i+1])
			}
		case c < 0x20:
			return i, false, synErr(i, "control character in a string")
		default:
			i++
		}
	}
	return start, false, synErr(start, "unterminated string")
}

// specialBytes returns a word whose lowest set bit is the high bit of the
// first byte of w (little-endian) that is '"', '\\' or a control
// character, or 0 if there is none. Bits above the first match may be
// set spuriously (borrows propagate), which is why only the lowest counts.
func specialBytes(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	return ((w-ones*0x20) & ^w | (quote-ones) & ^quote | (backslash-ones) & ^backslash) & highs
}

// plainStringByte marks bytes that stand for themselves inside a string:
// everything but '"', '\\' and control characters.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func scanNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return start, synErr(start, "invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return start, synErr(start, "invalid number: no digits after '.'")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return start, synErr(start, "invalid number: no digits in exponent")
		}
	}
	return i, nil
}

// unquote decodes a scanned JSON string token (with its quotes).
func unquote(tok []byte, escaped bool) (string, error) {
	body := tok[1 : len(tok)-1]
	if !escaped {
		return string(body), nil
	}
	var sb strings.Builder
	sb.Grow(len(body))
	for i := 0; i < len(body); {
		j := bytes.IndexByte(body[i:], '\\')
		if j < 0 {
			sb.Write(body[i:])
			break
		}
		sb.Write(body[i : i+j])
		i += j
		switch body[i+1] {
		case '"', '\\', '/':
			sb.WriteByte(body[i+1])
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r := hex4(body[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				// A high surrogate followed by a low one is one rune; a
				// lone surrogate becomes U+FFFD, as encoding/json does.
				if r < 0xdc00 && i+6 <= len(body) && body[i] == '\\' && body[i+1] == 'u' {
					if r2 := hex4(body[i+2 : i+6]); r2 >= 0xdc00 && r2 <= 0xdfff {
						sb.WriteRune(utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			sb.WriteRune(r)
			continue
		}
		i += 2
	}
	return sb.String(), nil
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// ValidJSON reports (nil) whether b holds exactly one JSON value, with
// surrounding whitespace allowed, nesting at most depth levels (at most
// 128, the limit of every decoder in this package). It accepts exactly
// what encoding/json.Valid accepts within that depth (it does not check
// UTF-8), in one pass and several times faster, and its error says what
// is wrong where.
func ValidJSON(b []byte, depth int) error {
	depth = min(max(depth, 0), maxDepth)
	i := skipWS(b, 0)
	end, err := scanValue(b, i, maxDepth-depth)
	if err != nil {
		if errors.Is(err, ErrTooDeep) {
			return fmt.Errorf("%w: deeper than %d levels", ErrTooDeep, depth)
		}
		return err
	}
	if skipWS(b, end) != len(b) {
		return synErr(end, "trailing data after the JSON value")
	}
	return nil
}
