package main

import (
	"bytes"
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// setString returns raw with the first string value of field replaced by
// v, failing the test when raw has no such field.
func setString(t *testing.T, raw []byte, field, v string) json.RawMessage {
	t.Helper()
	re := regexp.MustCompile(`"` + regexp.QuoteMeta(field) + `"\s*:\s*"[^"]*"`)
	loc := re.FindIndex(raw)
	if loc == nil {
		t.Fatalf("no string %q in the stage", field)
	}
	out := append(bytes.Clone(raw[:loc[0]]), `"`+field+`":"`+v+`"`...)
	return append(out, raw[loc[1]:]...)
}

// TestEchoedKeyInStagesNeverPrinted: a registry that echoes the API key
// inside stages (as an id, a signature_id, an implementation_hash) gets
// them quarantined, and neither sync nor status nor verify, text or JSON,
// shows the key: status lists the stage whose id was the key as
// [REDACTED].
func TestEchoedKeyInStagesNeverPrinted(t *testing.T) {
	t.Parallel()
	const key = "sk-Tq7x9/stage-echo+key&1"
	dir := t.TempDir()
	keyFile := writeKeyFile(t, dir, key)
	raws := stdlibRaw(t)
	stages := append([]json.RawMessage(nil), raws[3:]...)
	stages = append(stages,
		setString(t, raws[0], "id", key),
		setString(t, raws[1], "signature_id", key),
		setString(t, raws[2], "implementation_hash", key))
	fake := newFake(t, registrytest.Options{Stages: stages, APIKey: key, ReadAuth: true})
	db := filepath.Join(dir, "m.db")
	env := baseEnv(t)
	forms := []string{key, url.QueryEscape(key), url.PathEscape(key)}
	var all strings.Builder
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"sync", "-v", "--api-key-file", keyFile, "--registry", fake.URL()}, exitPartial},
		{[]string{"sync", "--json", "--api-key-file", keyFile, "--registry", fake.URL()}, exitPartial},
		{[]string{"status"}, exitOK},
		{[]string{"status", "--json"}, exitOK},
		{[]string{"verify"}, exitOK},
		{[]string{"verify", "--json"}, exitOK},
	} {
		r := runMirror(t, env, append(tc.args, "--db", db)...)
		if r.code != tc.code {
			t.Errorf("%v: want exit %d, got %s", tc.args, tc.code, r)
		}
		for _, f := range forms {
			if strings.Contains(r.stdout+r.stderr, f) {
				t.Errorf("%v shows %q:\n%s", tc.args, f, r)
			}
		}
		all.WriteString(r.stdout)
	}
	if !strings.Contains(all.String(), "[REDACTED]") {
		t.Errorf("status never listed the stage whose id was the key as [REDACTED], so nothing was tested:\n%s", all.String())
	}
}
