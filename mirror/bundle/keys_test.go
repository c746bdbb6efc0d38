package bundle

import (
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSigningKey(t *testing.T) {
	key := keyOf("k")
	seed := hex.EncodeToString(key.Seed())
	full := hex.EncodeToString(key)
	bad := hex.EncodeToString(append(key.Seed(), keyOf("other").Public().(ed25519.PublicKey)...))
	cases := []struct {
		name, in string
		ok       bool
	}{
		{"seed", seed, true},
		{"seed with newline", seed + "\n", true},
		{"uppercase seed", strings.ToUpper(seed), true},
		{"64-byte key", full, true},
		{"64-byte key, wrong public half", bad, false},
		{"short", seed[:62], false},
		{"not hex", "zz" + seed[2:], false},
		{"empty", "", false},
	}
	for _, tc := range cases {
		got, err := ParseSigningKey([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if tc.ok && !got.Equal(key) {
			t.Errorf("%s: wrong key", tc.name)
		}
		if err != nil && strings.Contains(err.Error(), seed[:16]) {
			t.Errorf("%s: the error leaks the key: %v", tc.name, err)
		}
	}
}

func TestLoadSigningKeyWarnsOnLooseMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o640, true}, {0o644, true}} {
		p := filepath.Join(dir, "key-"+tc.mode.String())
		if err := os.WriteFile(p, []byte(hex.EncodeToString(keyOf("k").Seed())+"\n"), tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tc.mode)
		_, warning, err := LoadSigningKey(p)
		if err != nil {
			t.Fatal(err)
		}
		if (warning != "") != tc.warn {
			t.Errorf("mode %v: warning %q", tc.mode, warning)
		}
	}
	if _, _, err := LoadSigningKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing key file loaded")
	}
}
