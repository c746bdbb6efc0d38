package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// fuzzKey is the API key FuzzDecodeEnvelope checks never survives into
// an error; it has characters every escaping changes.
const fuzzKey = "sk/Fz 9+q&ü"

// FuzzDecodeEnvelope feeds arbitrary statuses and bodies through the
// envelope, page and health decoders: they must never panic, must classify
// every failure, must only succeed on a 2xx whose body is valid JSON, and
// must never let an echoed API key into an error.
func FuzzDecodeEnvelope(f *testing.F) {
	seeds := []struct {
		status int
		body   string
	}{
		{200, `{"ok":true,"result":{"stages":[{"id":"a"}],"total":1}}`},
		{200, `{"ok":true,"result":{"stages":[],"total":1.5}}`},
		{200, `{"ok":true,"result":{"status":"ok","store":{"total_stages":3,"by_lifecycle":{"active":3},"by_effect":{"Pure":3}}}}`},
		{200, `{"ok":true}`},
		{404, `{"ok":false,"error":{"code":"NOT_FOUND","message":"x"}}`},
		{409, `{"ok":false,"error":{"code":"ALREADY_EXISTS"}}`},
		{400, `{"ok":false,"error":"x"}`},
		{502, "<html><head><title>502 Bad Gateway</title></head></html>"},
		{204, ``},
		{200, `{"ok":true,"result":{"stages":[{"id":`},
		{200, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]`},
		{200, `{"ok":true,"result":{"s":"\"[[[[{{{{"},"stages":[]}`},
		{500, `{"ok":true,"result":null}`},
		{200, "{\"ok\":true,\"result\":\"\xff\"}"},
		{200, `{"ok":false,"ok":true,"result":{"stages":[{"s":"a\\\"b\\\\"},[],"\\"],"stages":[1, 2 ,3]}}`},
		{200, `{"\u006fk":true,"result":{"st\u0061ges":[" ] \" [ "]}}`},
		{401, `{"ok":false,"error":{"code":"UNAUTHORIZED","message":"invalid key sk/Fz 9+q&ü"}}`},
		{403, `{"ok":false,"error":{"code":"sk%2FFz+9%2Bq%26%C3%BC","message":"sk%2FFz%209+q&%C3%BC"}}`},
		{502, "<html>key sk/Fz\t9+q\\u0026\\u00fc sk/Fz 9+q&ü</html>"},
		{200, `{"ok":true,"result":"sk/Fz 9+q&ü`},
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		var ps pageSplit
		walked := false
		res, re := decodeEnvelope(status, "application/json", body, 16, func(p []byte, at int) int {
			walked = true
			return ps.walk(p, at)
		})
		if re != nil {
			if res != nil {
				t.Fatal("both a result and an error")
			}
			if len(re.kinds) == 0 {
				t.Fatalf("unclassified failure for %d %q", status, body)
			}
			e := &Error{Op: "fuzz", Status: re.status, kinds: re.kinds, Retryable: re.retryable}
			e.Code, e.Message, e.Err = re.text(redactor{})
			_ = e.Error()
			// An echoed key never survives into the error.
			r := newRedactor(fuzzKey)
			e.Code, e.Message, e.Err = re.text(r)
			if s := r.seal(e).Error(); strings.Contains(s, fuzzKey) {
				t.Fatalf("the key survives in %q", s)
			}
			if re.retryable && !(status >= 500 && status <= 599 || status == 429 || status == 408) {
				t.Fatalf("status %d classified retryable", status)
			}
			return
		}
		if status < 200 || status > 299 {
			t.Fatalf("success with status %d", status)
		}
		if !json.Valid(res) {
			t.Fatalf("success with invalid result %q", res)
		}
		if jsonDepth(res, 16) > 16 {
			t.Fatal("depth limit not enforced")
		}
		// Cross-check the one-pass splitter against encoding/json (maps:
		// case-sensitive keys, the last duplicate wins).
		var env map[string]json.RawMessage
		if err := json.Unmarshal(bytes.TrimSpace(body), &env); err != nil || (env["result"] != nil && !bytes.Equal(env["result"], res)) {
			t.Fatalf("result %q, encoding/json says %q (%v)", res, env["result"], err)
		}
		// Splitting the page on the way through the envelope gives what
		// decodePage gives on the result alone.
		p, err := decodePage(res)
		if walked {
			wp, werr := ps.page()
			if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) || len(wp.Stages) != len(p.Stages) ||
				wp.Total != p.Total || wp.HasTotal != p.HasTotal {
				t.Fatalf("split on the way: %d stages, %v; decodePage: %d stages, %v", len(wp.Stages), werr, len(p.Stages), err)
			}
			for i := range p.Stages {
				if !bytes.Equal(wp.Stages[i], p.Stages[i]) {
					t.Fatalf("stage %d split on the way: %q, decodePage: %q", i, wp.Stages[i], p.Stages[i])
				}
			}
		}
		if err == nil {
			var obj map[string]json.RawMessage
			var ref []json.RawMessage
			refErr := json.Unmarshal(res, &obj)
			if refErr == nil {
				refErr = json.Unmarshal(obj["stages"], &ref)
			}
			if refErr != nil || len(ref) != len(p.Stages) {
				t.Fatalf("page split into %d stages, encoding/json: %d (%v)", len(p.Stages), len(ref), refErr)
			}
			for i, s := range p.Stages {
				if !json.Valid(s) || !bytes.Equal(s, ref[i]) {
					t.Fatalf("page stage %d = %q, encoding/json: %q", i, s, ref[i])
				}
			}
			if p.HasTotal && p.Total < 0 {
				t.Fatal("negative total")
			}
		}
		if h, err := decodeHealth(res); err == nil && h.HasStore {
			if h.Stats.Total < 0 {
				t.Fatal("negative total_stages")
			}
		}
	})
}

func TestJSONDepth(t *testing.T) {
	for in, want := range map[string]int{
		`1`:                    0,
		`{}`:                   1,
		`{"a":[{"b":[]}]}`:     4,
		`"[[[["`:               0,
		`{"a":"\"[[["}`:        1,
		`[[["\\"],[]]]`:        3,
		`{"a":"\\\"[{"}`:       1,
		`[[[[[[[[[[`:           10,
		"{\"\xff[\":[]}":       2,
		`{"k":"x\"y","l":[1]}`: 2,
	} {
		if got := jsonDepth([]byte(in), 100); got != want {
			t.Errorf("jsonDepth(%q) = %d, want %d", in, got, want)
		}
	}
	var e error = &Error{kinds: []error{ErrBadResponse}}
	if !errors.Is(e, ErrBadResponse) {
		t.Error("Error does not unwrap to its kind")
	}
}

func TestScanHelpers(t *testing.T) {
	for in, want := range map[string]int{
		`"abc"x`:        5,
		`"a\"b"x`:       6,
		`"a\\"x`:        5,
		`"a\\\"b"x`:     8,
		`"unterminated`: 13,
		`""`:            2,
	} {
		if got := stringEnd([]byte(in), 0); got != want {
			t.Errorf("stringEnd(%q) = %d, want %d", in, got, want)
		}
	}
	els, err := arrayElements([]byte(`[ {"a":"]"} , [1,[2]],"x\"y", 3.5e2 ,null ]`))
	want := []string{`{"a":"]"}`, `[1,[2]]`, `"x\"y"`, `3.5e2`, `null`}
	if err != nil || len(els) != len(want) {
		t.Fatalf("arrayElements = %q, %v", els, err)
	}
	for i := range want {
		if string(els[i]) != want[i] {
			t.Errorf("element %d = %q, want %q", i, els[i], want[i])
		}
	}
	if els, err := arrayElements([]byte(`[]`)); err != nil || els == nil || len(els) != 0 {
		t.Errorf("empty array: %q, %v", els, err)
	}
	var keys []string
	err = objectMembers([]byte(`{"a":1,"b\u0063":{"x":[]}, "d" : "}"}`), func(k string, v []byte) { keys = append(keys, k+"="+string(v)) })
	if err != nil || strings.Join(keys, " ") != `a=1 bc={"x":[]} d="}"` {
		t.Errorf("objectMembers = %q, %v", keys, err)
	}
	for _, bad := range []string{``, `{`, `[`, `{"a"}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a":1 "b":2}`, `{1:2}`} {
		_ = objectMembers([]byte(bad), func(string, []byte) {})
		_, _ = arrayElements([]byte(bad))
	}
}

// jsonDepth (a test helper) returns the maximum nesting depth of arrays and objects in p,
// stopping early once limit is exceeded. It does not validate p.
func jsonDepth(p []byte, limit int) int {
	depth, maxDepth := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '"':
			i = stringEnd(p, i) - 1
		case '{', '[':
			depth++
			if depth > maxDepth {
				maxDepth = depth
				if maxDepth > limit {
					return maxDepth
				}
			}
		case '}', ']':
			depth--
		}
	}
	return maxDepth
}
