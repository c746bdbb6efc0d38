package main

import (
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestEchoedKeyNeverPrinted: `mirror sync -v --api-key-file F` against a
// registry that echoes the key back (in its error bodies, headers, a
// redirect's Location, a malformed body) fails, and neither stdout nor
// stderr, debug logs included, shows the key in any spelling.
func TestEchoedKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	const key = "sk-Tq7x9/echo+key&1"
	dir := t.TempDir()
	keyFile := writeKeyFile(t, dir, key)
	forms := []string{key, url.QueryEscape(key), url.PathEscape(key), key[:len(key)/2]}
	env := baseEnv(t)
	for _, tc := range []struct {
		status int
		// quoted: the error quotes what came back, so [REDACTED] shows.
		quoted bool
	}{
		{401, true}, {403, true}, {429, true}, {500, true}, {503, true},
		{302, false}, // refused: the error names only the other host
		{200, true},  // malformed JSON
	} {
		fake := startFake(t, "--echo-key-next", "100000", "--echo-key-status", strconv.Itoa(tc.status))
		db := filepath.Join(dir, strconv.Itoa(tc.status)+".db")
		r := runMirror(t, env, "sync", "-v", "--api-key-file", keyFile, "--db", db, "--registry", fake.URL)
		fake.Stop()
		if r.code != exitError {
			t.Errorf("status %d: want exit %d, got %s", tc.status, exitError, r)
		}
		for _, f := range forms {
			if strings.Contains(r.stdout+r.stderr, f) {
				t.Errorf("status %d: the output shows %q:\n%s", tc.status, f, r)
			}
		}
		if tc.quoted && !strings.Contains(r.stderr, "[REDACTED]") {
			t.Errorf("status %d: the echo never reached the output, so nothing was tested:\n%s", tc.status, r)
		}
	}
}
