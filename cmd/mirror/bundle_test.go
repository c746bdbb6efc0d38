package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// bundleRun runs a command line in-process with an empty environment.
func bundleRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr, func(string) string { return "" })
	return code, stdout.String(), stderr.String()
}

// bundleSource syncs n stdlib stages into a fresh mirror and returns it.
func bundleSource(t *testing.T, n int) string {
	t.Helper()
	raws, err := registrytest.StdlibStages()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := registrytest.NewServer(registrytest.Options{Stages: raws[:n]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	db := filepath.Join(t.TempDir(), "src.db")
	if code, _, stderr := bundleRun(t, "sync", "-q", "--db", db, "--registry", srv.URL()); code != exitOK {
		t.Fatalf("sync: exit %d: %s", code, stderr)
	}
	return db
}

// bundleKeys writes a signing key (mode 0600) and a trusted-keys file
// listing trustedLabel's key.
func bundleKeys(t *testing.T, label, trustedLabel string) (keyFile, trustFile string) {
	t.Helper()
	dir := t.TempDir()
	seed := func(l string) []byte { s := sha256.Sum256([]byte("cli bundle key " + l)); return s[:] }
	keyFile = filepath.Join(dir, "key.hex")
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(seed(label))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pub := ed25519.NewKeyFromSeed(seed(trustedLabel)).Public().(ed25519.PublicKey)
	stdlib := "1d17f5b0d9afdb8724a4e7d86620534b26dbedf5e988ed2dd4a48afb1a9ca4f7"
	trustFile = filepath.Join(dir, "trusted")
	if err := os.WriteFile(trustFile, []byte("ops "+hex.EncodeToString(pub)+"\nstdlib "+stdlib+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFile, trustFile
}

func TestExportImportCLI(t *testing.T) {
	src := bundleSource(t, 12)
	key, trusted := bundleKeys(t, "ops", "ops")
	otherKey, _ := bundleKeys(t, "other", "ops")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.bundle.gz")
	if code, out, stderr := bundleRun(t, "export", "--db", src, "--sign-key", key, good); code != exitOK || !strings.Contains(out, "exported 12 stages") {
		t.Fatalf("export: exit %d: %s %s", code, out, stderr)
	}
	unsigned := filepath.Join(dir, "unsigned.bundle")
	if code, _, stderr := bundleRun(t, "export", "-q", "--db", src, unsigned); code != exitOK {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	stranger := filepath.Join(dir, "stranger.bundle")
	if code, _, stderr := bundleRun(t, "export", "-q", "--db", src, "--sign-key", otherKey, stranger); code != exitOK {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	tampered := filepath.Join(dir, "tampered.bundle")
	b, _ := os.ReadFile(unsigned)
	b[len(b)/2] ^= 1
	os.WriteFile(tampered, b, 0o644)

	dst := filepath.Join(t.TempDir(), "dst.db")
	// Dry run against no mirror: a summary, creates nothing; -v lists
	// every addition too.
	code, out, stderr := bundleRun(t, "import", "--db", dst, "--dry-run", "--trusted-keys", trusted, good)
	if code != exitOK || strings.Contains(out, "+ ") || !strings.Contains(out, "would add 12") || !strings.Contains(out, `trusted key "ops"`) ||
		!strings.Contains(out, "none yet") {
		t.Fatalf("dry run: exit %d:\n%s%s", code, out, stderr)
	}
	code, out, stderr = bundleRun(t, "import", "-v", "--db", dst, "--dry-run", "--trusted-keys", trusted, good)
	if code != exitOK || strings.Count(out, "\n+ ")+strings.Count(out[:2], "+ ") != 12 || !strings.Contains(out, "would add 12") {
		t.Fatalf("dry run -v: exit %d:\n%s%s", code, out, stderr)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("a dry run created the mirror")
	}
	refused := []struct {
		name string
		args []string
		msg  string
	}{
		{"tampered", []string{tampered}, "malformed bundle"},
		{"unsigned with trusted keys", []string{"--trusted-keys", trusted, unsigned}, "unsigned"},
		{"untrusted signer", []string{"--trusted-keys", trusted, stranger}, "not in the trusted keys"},
		{"missing file", []string{filepath.Join(dir, "nope")}, "opening the bundle"},
	}
	for _, tc := range refused {
		code, _, stderr := bundleRun(t, append([]string{"import", "--db", dst}, tc.args...)...)
		if code != exitError || !strings.Contains(stderr, tc.msg) {
			t.Errorf("%s: exit %d, stderr %q; want 1 mentioning %q", tc.name, code, stderr, tc.msg)
		}
	}
	code, out, stderr = bundleRun(t, "import", "--db", dst, "--trusted-keys", trusted, "--json", good)
	if code != exitOK {
		t.Fatalf("import: exit %d: %s", code, stderr)
	}
	var res struct {
		Added      []string `json:"added"`
		SignerName string   `json:"signer_name"`
		Manifest   struct {
			Total int `json:"total"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Added) != 12 || res.SignerName != "ops" || res.Manifest.Total != 12 {
		t.Fatalf("import --json: %v\n%s", err, out)
	}
	if code, _, stderr := bundleRun(t, "verify", "--db", dst); code != exitOK {
		t.Fatalf("verify after import: exit %d: %s", code, stderr)
	}
	// noether store.json.
	storeFile := filepath.Join(dir, "store.json")
	code, out, stderr = bundleRun(t, "export", "--db", dst, "--format", "noether-store", storeFile)
	if code != exitOK || !strings.Contains(out, "wrote 12 stages") || !strings.Contains(out, "public") {
		t.Fatalf("export noether-store: exit %d: %s %s", code, out, stderr)
	}
	var file struct {
		Stages []json.RawMessage `json:"stages"`
	}
	if sb, _ := os.ReadFile(storeFile); json.Unmarshal(sb, &file) != nil || len(file.Stages) != 12 {
		t.Fatalf("store.json: %d stages", len(file.Stages))
	}
}

func TestExportImportUsage(t *testing.T) {
	src := bundleSource(t, 2)
	key, _ := bundleKeys(t, "ops", "ops")
	for _, args := range [][]string{
		{"export", "--db", src},
		{"export", "--db", src, "a", "b"},
		{"export", "--db", src, "--format", "zip", "x"},
		{"export", "--db", src, "--format", "noether-store", "--sign-key", key, "x"},
		{"export", "--db", src, "--sign-key", filepath.Join(t.TempDir(), "missing"), "x"},
		{"export", "--db", src, "--no-such-flag", "x"},
		{"import", "--db", src},
		{"import", "--db", src, "--trusted-keys", filepath.Join(t.TempDir(), "missing"), "x"},
	} {
		if code, _, stderr := bundleRun(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
}

func TestExportWarnsOnReadableKey(t *testing.T) {
	src := bundleSource(t, 2)
	key, _ := bundleKeys(t, "ops", "ops")
	os.Chmod(key, 0o644)
	code, _, stderr := bundleRun(t, "export", "-q", "--db", src, "--sign-key", key, filepath.Join(t.TempDir(), "b.bundle"))
	if code != exitOK || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("exit %d, stderr %q; want a chmod warning", code, stderr)
	}
}
