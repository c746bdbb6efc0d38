package registry

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeEnvelope feeds arbitrary statuses and bodies through the
// envelope, page and health decoders: they must never panic, must classify
// every failure, and must only succeed on a 2xx whose body is valid JSON.
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
	}
	for _, s := range seeds {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		res, re := decodeEnvelope(status, "application/json", body, 16)
		if re != nil {
			if res != nil {
				t.Fatal("both a result and an error")
			}
			if len(re.kinds) == 0 {
				t.Fatalf("unclassified failure for %d %q", status, body)
			}
			e := &Error{Op: "fuzz", Status: re.status, Code: re.code, Message: re.message, kinds: re.kinds, Err: re.err, Retryable: re.retryable}
			_ = e.Error()
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
		if p, err := decodePage(res); err == nil {
			for _, s := range p.Stages {
				if !json.Valid(s) {
					t.Fatalf("page stage %q is not valid JSON", s)
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
