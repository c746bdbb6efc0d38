package store

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// KeyOrder selects how object members are ordered in canonical JSON.
type KeyOrder int

const (
	// OrderSerdeJCS is noether 0.8.2's order (the serde_jcs crate): members
	// sorted by the bytes of escape(key)+`"`, i.e. by the key as it is
	// written, closing quote included (spec §2.2).
	OrderSerdeJCS KeyOrder = iota
	// OrderRFC8785 is strict RFC 8785: members sorted by the UTF-16 code
	// units of the unescaped key.
	OrderRFC8785
)

// String returns "serde_jcs" or "rfc8785".
func (o KeyOrder) String() string {
	switch o {
	case OrderSerdeJCS:
		return "serde_jcs"
	case OrderRFC8785:
		return "rfc8785"
	}
	return "KeyOrder(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText renders o as its String form, for JSON reports.
func (o KeyOrder) MarshalText() ([]byte, error) {
	if o != OrderSerdeJCS && o != OrderRFC8785 {
		return nil, fmt.Errorf("invalid key order %d", int(o))
	}
	return []byte(o.String()), nil
}

// UnmarshalText parses "serde_jcs" or "rfc8785".
func (o *KeyOrder) UnmarshalText(b []byte) error {
	switch string(b) {
	case "serde_jcs":
		*o = OrderSerdeJCS
	case "rfc8785":
		*o = OrderRFC8785
	default:
		return fmt.Errorf("unknown key order %q: want serde_jcs or rfc8785", b)
	}
	return nil
}

// maxCanonicalDepth bounds nesting in CanonicalJSON so hostile input cannot
// exhaust the stack.
const maxCanonicalDepth = 512

// CanonicalJSON canonicalizes any JSON document with serde_jcs rules: no
// whitespace; serde_json string escaping (only `"`, `\`, \b \f \n \r \t and
// other U+0000–U+001F as \u00xx, lowercase; nothing else); integers that
// fit u64/i64 written as plain decimal with full 64-bit precision; every
// other number as an f64 in ECMAScript Number.prototype.toString form (−0
// → 0, 1e21 → 1e+21, 1.5e-7 → 1.5e-7). Object members are ordered per
// order; of duplicate keys the last wins.
//
// Like serde_json it rejects invalid UTF-8, lone surrogate escapes and
// numbers outside the f64 range. It never panics; documents nesting deeper
// than 512 levels are rejected.
func CanonicalJSON(raw []byte, order KeyOrder) ([]byte, error) {
	v, err := parseJSON(raw)
	if err != nil {
		return nil, err
	}
	return appendJCS(make([]byte, 0, len(raw)), &v, order), nil
}

// jkind is the variant of a jvalue: serde_json::Value's variants, with
// numbers split the way serde_json stores them.
type jkind uint8

const (
	jNull jkind = iota
	jBool
	jUint
	jInt
	jFloat
	jString
	jArray
	jObject
)

// jvalue is an in-memory JSON value, as serde_json::Value holds it.
// Objects keep member order; isMap marks objects that serde holds as a map
// (a parsed Value or a Record's fields), which serde_json writes sorted
// bytewise, as opposed to structs, written in declaration order.
type jvalue struct {
	kind  jkind
	b     bool
	u     uint64
	i     int64
	f     float64
	s     string
	arr   []jvalue
	obj   []jmember
	isMap bool
}

type jmember struct {
	key string
	val jvalue
}

func jstr(s string) jvalue { return jvalue{kind: jString, s: s} }

// jstruct builds a struct-like object whose members keep the given order.
func jstruct(members ...jmember) jvalue { return jvalue{kind: jObject, obj: members} }

// ---- parsing ----

type jparser struct {
	data []byte
	pos  int
}

var errTrailing = errors.New("trailing data after the JSON value")

// parseJSON parses one JSON document the way serde_json::from_slice does
// into a Value.
func parseJSON(raw []byte) (jvalue, error) {
	p := &jparser{data: raw}
	p.skipWS()
	v, err := p.value(0)
	if err != nil {
		return jvalue{}, err
	}
	p.skipWS()
	if p.pos != len(p.data) {
		return jvalue{}, p.errorf("%v", errTrailing)
	}
	return v, nil
}

func (p *jparser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *jparser) skipWS() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jparser) literal(word string, v jvalue) (jvalue, error) {
	if !bytes.HasPrefix(p.data[p.pos:], []byte(word)) {
		return jvalue{}, p.errorf("unexpected character %q", p.data[p.pos])
	}
	p.pos += len(word)
	return v, nil
}

func (p *jparser) value(depth int) (jvalue, error) {
	if depth > maxCanonicalDepth {
		return jvalue{}, p.errorf("document nests deeper than %d levels", maxCanonicalDepth)
	}
	if p.pos >= len(p.data) {
		return jvalue{}, p.errorf("unexpected end of input")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return jstr(s), err
	case c == 't':
		return p.literal("true", jvalue{kind: jBool, b: true})
	case c == 'f':
		return p.literal("false", jvalue{kind: jBool})
	case c == 'n':
		return p.literal("null", jvalue{kind: jNull})
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return jvalue{}, p.errorf("unexpected character %q", c)
	}
}

func (p *jparser) object(depth int) (jvalue, error) {
	p.pos++ // {
	v := jvalue{kind: jObject, isMap: true}
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	var index map[string]int
	for {
		p.skipWS()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return jvalue{}, p.errorf("want an object key")
		}
		key, err := p.str()
		if err != nil {
			return jvalue{}, err
		}
		p.skipWS()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return jvalue{}, p.errorf("want ':' after object key")
		}
		p.pos++
		p.skipWS()
		val, err := p.value(depth + 1)
		if err != nil {
			return jvalue{}, err
		}
		// Duplicate keys: the last value wins, as in serde_json's Map.
		if index == nil && len(v.obj) >= 8 {
			index = make(map[string]int, 2*len(v.obj))
			for i, m := range v.obj {
				index[m.key] = i
			}
		}
		dup := -1
		if index != nil {
			if i, ok := index[key]; ok {
				dup = i
			}
		} else {
			for i := range v.obj {
				if v.obj[i].key == key {
					dup = i
					break
				}
			}
		}
		if dup >= 0 {
			v.obj[dup].val = val
		} else {
			if index != nil {
				index[key] = len(v.obj)
			}
			v.obj = append(v.obj, jmember{key: key, val: val})
		}
		p.skipWS()
		if p.pos >= len(p.data) {
			return jvalue{}, p.errorf("unterminated object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return v, nil
		default:
			return jvalue{}, p.errorf("want ',' or '}' in object")
		}
	}
}

func (p *jparser) array(depth int) (jvalue, error) {
	p.pos++ // [
	v := jvalue{kind: jArray, arr: []jvalue{}}
	p.skipWS()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for {
		p.skipWS()
		e, err := p.value(depth + 1)
		if err != nil {
			return jvalue{}, err
		}
		v.arr = append(v.arr, e)
		p.skipWS()
		if p.pos >= len(p.data) {
			return jvalue{}, p.errorf("unterminated array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return v, nil
		default:
			return jvalue{}, p.errorf("want ',' or ']' in array")
		}
	}
}

func hexVal(c byte) (rune, bool) {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0'), true
	case c >= 'a' && c <= 'f':
		return rune(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return rune(c-'A') + 10, true
	}
	return 0, false
}

// hex4 reads the four hex digits of a \u escape at p.pos.
func (p *jparser) hex4() (rune, error) {
	if p.pos+4 > len(p.data) {
		return 0, p.errorf("truncated \\u escape")
	}
	var r rune
	for i := 0; i < 4; i++ {
		d, ok := hexVal(p.data[p.pos+i])
		if !ok {
			return 0, p.errorf("invalid \\u escape")
		}
		r = r<<4 | d
	}
	p.pos += 4
	return r, nil
}

// str parses a JSON string at p.pos (which is '"').
func (p *jparser) str() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			s := p.data[start:p.pos]
			if !utf8.Valid(s) {
				return "", p.errorf("string is not valid UTF-8")
			}
			p.pos++
			return string(s), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errorf("control character U+%04X in string: escape it", c)
		}
		p.pos++
	}
	buf := append([]byte(nil), p.data[start:p.pos]...)
	for {
		if p.pos >= len(p.data) {
			return "", p.errorf("unterminated string")
		}
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			if !utf8.Valid(buf) {
				return "", p.errorf("string is not valid UTF-8")
			}
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character U+%04X in string: escape it", c)
		case c != '\\':
			buf = append(buf, c)
			p.pos++
			continue
		}
		p.pos++ // backslash
		if p.pos >= len(p.data) {
			return "", p.errorf("unterminated escape")
		}
		e := p.data[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return "", err
			}
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return "", p.errorf("lone trailing surrogate in \\u escape")
			case r >= 0xD800 && r <= 0xDBFF:
				if p.pos+2 > len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
					return "", p.errorf("lone leading surrogate in \\u escape")
				}
				p.pos += 2
				r2, err := p.hex4()
				if err != nil {
					return "", err
				}
				if r2 < 0xDC00 || r2 > 0xDFFF {
					return "", p.errorf("lone leading surrogate in \\u escape")
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errorf("invalid escape \\%c", e)
		}
	}
}

// number parses a JSON number as serde_json does: an integer without
// fraction or exponent that fits u64 (non-negative) or i64 (negative) stays
// an integer; "-0" and everything else becomes an f64.
func (p *jparser) number() (jvalue, error) {
	start := p.pos
	if p.data[p.pos] == '-' {
		p.pos++
	}
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	intStart := p.pos
	if n := digits(); n == 0 {
		return jvalue{}, p.errorf("invalid number")
	} else if n > 1 && p.data[intStart] == '0' {
		return jvalue{}, p.errorf("invalid number: leading zero")
	}
	isInt := true
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		isInt = false
		if digits() == 0 {
			return jvalue{}, p.errorf("invalid number: no digit after '.'")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		isInt = false
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return jvalue{}, p.errorf("invalid number: no digit in exponent")
		}
	}
	text := string(p.data[start:p.pos])
	if isInt {
		if text[0] != '-' {
			if u, err := strconv.ParseUint(text, 10, 64); err == nil {
				return jvalue{kind: jUint, u: u}, nil
			}
		} else if text != "-0" {
			if i, err := strconv.ParseInt(text, 10, 64); err == nil {
				return jvalue{kind: jInt, i: i}, nil
			}
		}
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) {
		return jvalue{}, fmt.Errorf("invalid JSON at byte %d: number %.40s is out of range for an f64", start, text)
	}
	return jvalue{kind: jFloat, f: f}, nil
}

// ---- writing ----

const hexDigits = "0123456789abcdef"

// appendEscaped writes s as serde_json does, without the quotes: only `"`,
// `\` and control characters are escaped.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	return append(b, s[start:]...)
}

func appendQuoted(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// shortestDigits returns the shortest decimal digits d and exponent n such
// that f (> 0, finite) = 0.d × 10^n, i.e. n is the position of the decimal
// point relative to the digits.
func shortestDigits(f float64) (string, int) {
	var tmp [32]byte
	s := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64) // d.ddde±xx
	e := bytes.IndexByte(s, 'e')
	exp, _ := strconv.Atoi(string(s[e+1:]))
	mant := s[:e]
	digits := make([]byte, 0, len(mant))
	for _, c := range mant {
		if c != '.' {
			digits = append(digits, c)
		}
	}
	return string(digits), exp + 1
}

// appendES writes f as ECMAScript's Number.prototype.toString does (what
// serde_jcs's ryu-js produces). f must be finite.
func appendES(b []byte, f float64) []byte {
	if f == 0 {
		return append(b, '0')
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	d, n := shortestDigits(f)
	k := len(d)
	switch {
	case k <= n && n <= 21:
		b = append(b, d...)
		for i := k; i < n; i++ {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, d[:n]...)
		b = append(b, '.')
		b = append(b, d[n:]...)
	case -6 < n && n <= 0:
		b = append(b, '0', '.')
		for i := n; i < 0; i++ {
			b = append(b, '0')
		}
		b = append(b, d...)
	default:
		b = append(b, d[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, d[1:]...)
		}
		b = append(b, 'e')
		if n-1 >= 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(n-1), 10)
	}
	return b
}

// appendRyu writes f as serde_json does (the ryu crate): 100.0, 0.1,
// 1e21, 1.5e-7, -0.0. f must be finite.
func appendRyu(b []byte, f float64) []byte {
	if math.Signbit(f) {
		b = append(b, '-')
		f = -f
	}
	if f == 0 {
		return append(b, '0', '.', '0')
	}
	d, kk := shortestDigits(f)
	length := len(d)
	switch {
	case length <= kk && kk <= 16:
		b = append(b, d...)
		for i := length; i < kk; i++ {
			b = append(b, '0')
		}
		b = append(b, '.', '0')
	case 0 < kk && kk <= 16:
		b = append(b, d[:kk]...)
		b = append(b, '.')
		b = append(b, d[kk:]...)
	case -5 < kk && kk <= 0:
		b = append(b, '0', '.')
		for i := kk; i < 0; i++ {
			b = append(b, '0')
		}
		b = append(b, d...)
	default:
		b = append(b, d[0])
		if length > 1 {
			b = append(b, '.')
			b = append(b, d[1:]...)
		}
		b = append(b, 'e')
		b = strconv.AppendInt(b, int64(kk-1), 10)
	}
	return b
}

// keyLess reports whether key a sorts before key b under order.
func keyLess(a, b string, order KeyOrder) bool {
	if order == OrderRFC8785 {
		return compareUTF16(a, b) < 0
	}
	return compareSerdeJCS(a, b) < 0
}

// compareSerdeJCS compares escape(a)+`"` with escape(b)+`"` bytewise, which
// is how serde_jcs orders members (it sorts the serialized keys).
func compareSerdeJCS(a, b string) int {
	if !needsEscape(a) && !needsEscape(b) {
		// escape is the identity: compare a+`"` with b+`"` in place.
		n := min(len(a), len(b))
		if c := cmpStrings(a[:n], b[:n]); c != 0 {
			return c
		}
		switch {
		case len(a) == len(b):
			return 0
		case len(a) > n:
			return cmpInt(int(a[n]), '"')
		default:
			return cmpInt('"', int(b[n]))
		}
	}
	var ba, bb [64]byte
	ea := append(appendEscaped(ba[:0], a), '"')
	eb := append(appendEscaped(bb[:0], b), '"')
	return bytes.Compare(ea, eb)
}

// needsEscape reports whether appendEscaped would change s.
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' {
			return true
		}
	}
	return false
}

// compareUTF16 compares a and b by UTF-16 code units (RFC 8785 §3.2.3).
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := utf16Units(ra), utf16Units(rb)
			if ua[0] != ub[0] {
				return cmpInt(int(ua[0]), int(ub[0]))
			}
			return cmpInt(int(ua[1]), int(ub[1]))
		}
		a, b = a[na:], b[nb:]
	}
	return cmpInt(len(a), len(b))
}

// utf16Units returns the one or two UTF-16 code units of r (the second is
// 0 for BMP runes).
func utf16Units(r rune) [2]uint16 {
	if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError || r2 != utf8.RuneError {
		return [2]uint16{uint16(r1), uint16(r2)}
	}
	return [2]uint16{uint16(r), 0}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// appendJCS writes v canonically with members sorted per order.
func appendJCS(b []byte, v *jvalue, order KeyOrder) []byte {
	switch v.kind {
	case jNull:
		return append(b, "null"...)
	case jBool:
		return strconv.AppendBool(b, v.b)
	case jUint:
		return strconv.AppendUint(b, v.u, 10)
	case jInt:
		return strconv.AppendInt(b, v.i, 10)
	case jFloat:
		return appendES(b, v.f)
	case jString:
		return appendQuoted(b, v.s)
	case jArray:
		b = append(b, '[')
		for i := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJCS(b, &v.arr[i], order)
		}
		return append(b, ']')
	}
	idx := make([]int, len(v.obj))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(x, y int) int {
		kx, ky := v.obj[x].key, v.obj[y].key
		if keyLess(kx, ky, order) {
			return -1
		}
		if keyLess(ky, kx, order) {
			return 1
		}
		return 0
	})
	b = append(b, '{')
	for n, i := range idx {
		if n > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, v.obj[i].key)
		b = append(b, ':')
		b = appendJCS(b, &v.obj[i].val, order)
	}
	return append(b, '}')
}

// appendCompact writes v as serde_json::to_vec does: struct members in
// declaration order, map members (isMap) sorted bytewise by key, floats
// the ryu way. This is the pre-JCS (v0) identity encoding.
func appendCompact(b []byte, v *jvalue) []byte {
	switch v.kind {
	case jFloat:
		return appendRyu(b, v.f)
	case jArray:
		b = append(b, '[')
		for i := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCompact(b, &v.arr[i])
		}
		return append(b, ']')
	case jObject:
	default:
		return appendJCS(b, v, OrderSerdeJCS)
	}
	idx := make([]int, len(v.obj))
	for i := range idx {
		idx[i] = i
	}
	if v.isMap {
		slices.SortStableFunc(idx, func(x, y int) int {
			return cmpStrings(v.obj[x].key, v.obj[y].key)
		})
	}
	b = append(b, '{')
	for n, i := range idx {
		if n > 0 {
			b = append(b, ',')
		}
		b = appendQuoted(b, v.obj[i].key)
		b = append(b, ':')
		b = appendCompact(b, &v.obj[i].val)
	}
	return append(b, '}')
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
