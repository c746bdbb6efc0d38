package store

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestCanonicalJSON(t *testing.T) {
	cases := []struct {
		name, in string
		serde    string
		rfc      string // "" means same as serde
	}{
		{"sorted keys", `{"b":1,"a":2}`, `{"a":2,"b":1}`, ""},
		{"whitespace", " {\n\t\"a\" : [ 1 , true , null , false ] }\r\n", `{"a":[1,true,null,false]}`, ""},
		{"empty containers", `{"o":{},"a":[]}`, `{"a":[],"o":{}}`, ""},
		{"duplicate keys last wins", `{"a":1,"b":0,"a":2}`, `{"a":2,"b":0}`, ""},
		{"many duplicate keys", `{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k1":10,"k9":90}`,
			`{"k1":10,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":90}`, ""},
		{"integers", `[0,-0,7,-7,9007199254740993,18446744073709551615,-9223372036854775808]`,
			`[0,0,7,-7,9007199254740993,18446744073709551615,-9223372036854775808]`, ""},
		{"integers beyond 64 bits become f64", `[18446744073709551616,-9223372036854775809]`,
			`[18446744073709552000,-9223372036854776000]`, ""},
		{"floats", `[0.0,-0.0,1.0,100.0,0.1,1e21,1e20,1.5e-7,1e-6,1e-7,123456789.125,5e-324,1.7976931348623157e308,0.30000000000000004,-2.5E+3]`,
			`[0,0,1,100,0.1,1e+21,100000000000000000000,1.5e-7,0.000001,1e-7,123456789.125,5e-324,1.7976931348623157e+308,0.30000000000000004,-2500]`, ""},
		{"float underflow is zero", `1e-400`, `0`, ""},
		{"string escapes", `"\u00e9\/\u007f\u2028\ud83d\ude00\u0001\b\f\n\r\t\"\\\u001F"`,
			"\"é/\x7f\u2028😀\\u0001\\b\\f\\n\\r\\t\\\"\\\\\\u001f\"", ""},
		{"uppercase hex escape", `"\u00C9"`, `"É"`, ""},
		{"prefix keys space and bang", `{"a":1,"ab":2,"a b":3,"a!":4,"a#":5}`,
			`{"a b":3,"a!":4,"a":1,"a#":5,"ab":2}`, `{"a":1,"a b":3,"a!":4,"a#":5,"ab":2}`},
		{"escaped key", `{"a!":1,"a\n":2}`, `{"a!":1,"a\n":2}`, `{"a\n":2,"a!":1}`},
		{"astral vs private use", "{\"😀\":1,\"\ue000\":2}", "{\"\ue000\":2,\"😀\":1}", "{\"😀\":1,\"\ue000\":2}"},
		{"nested objects sorted", `{"z":{"y":1,"x":[{"b":1,"a":2}]}}`, `{"z":{"x":[{"a":2,"b":1}],"y":1}}`, ""},
		{"scalar document", `"x"`, `"x"`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(c.in), OrderSerdeJCS)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.serde {
				t.Errorf("serde_jcs\n got %s\nwant %s", got, c.serde)
			}
			want := c.rfc
			if want == "" {
				want = c.serde
			}
			got, err = CanonicalJSON([]byte(c.in), OrderRFC8785)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("rfc8785\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestCanonicalJSONRejects(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", ``, "unexpected end"},
		{"trailing comma", `{"a":1,}`, "object key"},
		{"trailing data", `1 2`, "trailing data"},
		{"leading zero", `[01]`, "leading zero"},
		{"bare minus", `-`, "invalid number"},
		{"dot without digits", `1.`, "after '.'"},
		{"empty exponent", `1e`, "exponent"},
		{"out of range", `[1e400]`, "out of range"},
		{"negative out of range", `-1e400`, "out of range"},
		{"lone leading surrogate", `"\ud800"`, "lone leading surrogate"},
		{"leading surrogate then text", `"\ud800\u0041"`, "lone leading surrogate"},
		{"lone trailing surrogate", `"\udc00x"`, "lone trailing surrogate"},
		{"bad escape", `"\x"`, "invalid escape"},
		{"short unicode escape", `"\u12"`, "\\u escape"},
		{"invalid utf8", "\"\xff\"", "UTF-8"},
		{"invalid utf8 after escape", "\"\\n\xff\"", "UTF-8"},
		{"raw control char", "\"a\x01\"", "control character"},
		{"raw newline after escape", "\"\\t\n\"", "control character"},
		{"unterminated string", `"abc`, "unterminated"},
		{"unterminated object", `{"a":1`, "unterminated"},
		{"unterminated array", `[1`, "unterminated"},
		{"missing colon", `{"a" 1}`, "':'"},
		{"non-string key", `{1:2}`, "object key"},
		{"bad literal", `nul`, "unexpected character"},
		{"bad separator", `[1;2]`, "','"},
		{"too deep", strings.Repeat("[", 600) + strings.Repeat("]", 600), "deeper than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, order := range []KeyOrder{OrderSerdeJCS, OrderRFC8785} {
				out, err := CanonicalJSON([]byte(c.in), order)
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("%v: CanonicalJSON(%q) = %q, %v; want an error mentioning %q", order, c.in, out, err, c.want)
				}
			}
		})
	}
}

// TestCanonicalJSONMatchesEncodingJSON checks that the output is valid JSON
// meaning the same as the input (numbers compared as float64).
func TestCanonicalJSONMatchesEncodingJSON(t *testing.T) {
	in := `{"é":[1.5,-3,{"x":null}],"a":"\u2028\u0000","n":1e-9,"big":12345678901234567890}`
	out, err := CanonicalJSON([]byte(in), OrderSerdeJCS)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal([]byte(in), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("output %s is not JSON: %v", out, err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("meaning changed:\n in %s\nout %s", ja, jb)
	}
}

func TestAppendES(t *testing.T) {
	cases := []struct {
		f    float64
		want string
	}{
		{0, "0"}, {math.Copysign(0, -1), "0"}, {1, "1"}, {-1, "-1"}, {100, "100"}, {0.1, "0.1"},
		{1e21, "1e+21"}, {1e20, "100000000000000000000"}, {123e18, "123000000000000000000"},
		{1.5e-7, "1.5e-7"}, {1e-6, "0.000001"}, {1.25e-6, "0.00000125"}, {1e-7, "1e-7"},
		{1.5e300, "1.5e+300"}, {-1.5e-300, "-1.5e-300"}, {5e-324, "5e-324"},
		{9007199254740992, "9007199254740992"}, {123456789.125, "123456789.125"},
	}
	for _, c := range cases {
		if got := string(appendES(nil, c.f)); got != c.want {
			t.Errorf("appendES(%v) = %s, want %s", c.f, got, c.want)
		}
	}
}

func TestAppendRyu(t *testing.T) {
	// serde_json's float output (the v0 identity encoding).
	cases := []struct {
		f    float64
		want string
	}{
		{0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {1, "1.0"}, {100, "100.0"}, {0.1, "0.1"},
		{1e15, "1000000000000000.0"}, {1e16, "1e16"}, {1.5e16, "1.5e16"}, {1e21, "1e21"},
		{1.5e-7, "1.5e-7"}, {1e-5, "0.00001"}, {1e-6, "1e-6"}, {-2.5, "-2.5"},
		{123456789.125, "123456789.125"}, {5e-324, "5e-324"},
	}
	for _, c := range cases {
		if got := string(appendRyu(nil, c.f)); got != c.want {
			t.Errorf("appendRyu(%v) = %s, want %s", c.f, got, c.want)
		}
	}
}

func TestCompactMapsSortedStructsKept(t *testing.T) {
	v, err := parseJSON([]byte(`{"b":[1.0,2],"a":{"y":0.5,"x":-0.0}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(appendCompact(nil, &v)), `{"a":{"x":-0.0,"y":0.5},"b":[1.0,2]}`; got != want {
		t.Errorf("map: got %s, want %s", got, want)
	}
	s := jstruct(jmember{"z", jstr("1")}, jmember{"a", jvalue{kind: jBool, b: true}})
	if got, want := string(appendCompact(nil, &s)), `{"z":"1","a":true}`; got != want {
		t.Errorf("struct: got %s, want %s", got, want)
	}
}

func TestKeyOrderText(t *testing.T) {
	for _, o := range []KeyOrder{OrderSerdeJCS, OrderRFC8785} {
		b, err := o.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back KeyOrder
		if err := back.UnmarshalText(b); err != nil || back != o || string(b) != o.String() {
			t.Errorf("round trip of %v: %s, %v, %v", o, b, back, err)
		}
	}
	if _, err := KeyOrder(9).MarshalText(); err == nil {
		t.Error("KeyOrder(9) must not marshal")
	}
	if KeyOrder(9).String() != "KeyOrder(9)" {
		t.Error(KeyOrder(9).String())
	}
	var o KeyOrder
	if err := o.UnmarshalText([]byte("jcs")); err == nil {
		t.Error("want an error for an unknown order")
	}
}

func TestCompareUTF16(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "a", 0}, {"a", "ab", -1}, {"ab", "a", 1},
		{"😀", "\ue000", -1}, // D83D < E000
		{"\ue000", "😀", 1},
		{"😀", "😁", -1}, // same high surrogate, low differs
		{"é", "z", 1},
	}
	for _, c := range cases {
		if got := compareUTF16(c.a, c.b); got != c.want {
			t.Errorf("compareUTF16(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func BenchmarkCanonicalJSON(b *testing.B) {
	raw := stdlibRaw(b)[0]
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CanonicalJSON(raw, OrderSerdeJCS); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCompareSerdeJCS(t *testing.T) {
	// The in-place fast path agrees with escaping both keys.
	keys := []string{"", "a", "a ", "a!", "a#", "ab", "a\"", "a\\", "a\n", "é", "\ue000", "😀", "b", "a b"}
	for _, a := range keys {
		for _, b := range keys {
			ea := append(appendEscaped(nil, a), '"')
			eb := append(appendEscaped(nil, b), '"')
			if got, want := compareSerdeJCS(a, b), bytes.Compare(ea, eb); got != want {
				t.Errorf("compareSerdeJCS(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}
