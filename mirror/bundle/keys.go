package bundle

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// ParseSigningKey decodes an Ed25519 private key written as hex: either
// the 32-byte seed (64 hex characters, the format of noether's
// ~/.noether/author-key.hex) or the 64-byte private key (128 hex
// characters: seed then public key, checked for consistency). Surrounding
// whitespace is ignored.
func ParseSigningKey(b []byte) (ed25519.PrivateKey, error) {
	raw, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil {
		return nil, errors.New("signing key: not hex: want the hex of a 32-byte Ed25519 seed (like ~/.noether/author-key.hex) or of a 64-byte private key")
	}
	switch len(raw) {
	case ed25519.SeedSize:
		return ed25519.NewKeyFromSeed(raw), nil
	case ed25519.PrivateKeySize:
		key := ed25519.NewKeyFromSeed(raw[:ed25519.SeedSize])
		if !bytes.Equal(key[ed25519.SeedSize:], raw[ed25519.SeedSize:]) {
			return nil, errors.New("signing key: the 64-byte private key's public half does not match its seed: the key file is damaged")
		}
		return key, nil
	}
	return nil, fmt.Errorf("signing key: %d bytes, want %d (a seed) or %d (a private key)", len(raw), ed25519.SeedSize, ed25519.PrivateKeySize)
}

// LoadSigningKey reads a signing key file (see ParseSigningKey). It
// returns a non-empty warning when the file is readable by group or
// others (never on Windows, where the mode does not show that: access is
// in the file's ACL); the key itself is never included in an error or warning.
func LoadSigningKey(path string) (key ed25519.PrivateKey, warning string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("signing key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("signing key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, "", fmt.Errorf("signing key %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 && runtime.GOOS != "windows" {
		warning = fmt.Sprintf("signing key file %s is readable by other users (mode %04o): run chmod 600 on it", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, "", fmt.Errorf("signing key %s: %w", path, err)
	}
	key, err = ParseSigningKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return key, warning, nil
}
