package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tests of API key files: their limits, and warnings that -q keeps.

// TestQuietKeepsSecurityWarnings: -q (for cron) silences progress and
// results, never a warning about a secret. Through the binary.
func TestQuietKeepsSecurityWarnings(t *testing.T) {
	t.Parallel()
	const key = "Qz1-quiet-secret-77"
	dir := t.TempDir()
	keyFile := writeKeyFile(t, dir, key)
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	fake := startFake(t, "--api-key-file", keyFile, "--read-auth")
	env := baseEnv(t)
	db := filepath.Join(dir, "m.db")
	want := "warning: API key file " + loose + " is readable by other users (mode 0644); run chmod 600 " + loose + "\n"
	for _, args := range [][]string{
		{"sync", "-q", "--api-key-file", loose},
		{"sync", "--quiet", "--api-key-file", loose},
		{"sync", "--api-key-file", loose}, // unchanged, and still warned
	} {
		r := runMirror(t, env, append(args, "--db", db, "--registry", fake.URL)...)
		quiet := args[1] != "--api-key-file"
		if r.code != exitOK || r.stderr != want || (quiet && r.stdout != "") {
			t.Errorf("mirror %v: want exit 0 and exactly the warning %q, got %s", args, want, r)
		}
		if strings.Contains(r.stdout+r.stderr, key) {
			t.Errorf("mirror %v printed the key", args)
		}
	}
	if r := runMirror(t, env, "sync", "-q", "--api-key-file", keyFile, "--db", db, "--registry", fake.URL); r.code != exitOK || r.stdout+r.stderr != "" {
		t.Errorf("a 0600 key file with -q: want silence, got %s", r)
	}
}

// TestAPIKeyFileLimits: a key file over 4 KiB or of more than one line is
// refused, naming the file, the problem and the fix, never quoting it.
// Through the binary.
func TestAPIKeyFileLimits(t *testing.T) {
	t.Parallel()
	const marker = "SeCrEtMaRk"
	dir := t.TempDir()
	env := baseEnv(t)
	for _, tc := range []struct {
		name, content, want string
	}{
		{"big", strings.Repeat(marker, 500), "is larger than 4 KiB, so it is not a key file: it should hold only the key, on one line"},
		{"two-lines", marker + "-one\n" + marker + "-two\n", "holds more than one line; put only the key in it, on one line"},
		{"two-lines", marker + "\nsecond\n", "holds more than one line"},
		{"leading-blank-line", "\n" + marker, "holds more than one line"},
	} {
		file := filepath.Join(dir, tc.name)
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		db := filepath.Join(dir, tc.name+".db")
		r := runMirror(t, env, "sync", "-v", "--api-key-file", file, "--db", db, "--registry", closedPortURL(t))
		if r.code != exitError || !strings.Contains(r.stderr, "API key file "+file+" "+tc.want) {
			t.Errorf("%s: want exit 1 and %q naming the file, got %s", tc.name, tc.want, r)
		}
		if strings.Contains(r.stdout+r.stderr, marker) {
			t.Errorf("%s: the key file's contents were printed:\n%s", tc.name, r)
		}
		if exists(db) {
			t.Errorf("%s: a refused key file still created the mirror", tc.name)
		}
	}
}

// TestReadSecretFile: one line, a single trailing newline allowed, at most
// 4 KiB; an endless file is read no further than that.
func TestReadSecretFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k4095, k4096 := strings.Repeat("k", 4095), strings.Repeat("k", 4096)
	for _, tc := range []struct {
		content, key, err string
	}{
		{"key", "key", ""},
		{"key\n", "key", ""},
		{"key\r\n", "key", ""},
		{"  key \n", "key", ""},
		{k4095 + "\n", k4095, ""},
		{k4096, k4096, ""},
		{k4096 + "\n", "", "larger than 4 KiB"},
		{"", "", "is empty"},
		{"\n", "", "is empty"},
		{"a\nb", "", "more than one line"},
		{"a\rb", "", "more than one line"},
		{"key\n\n", "key", ""}, // a trailing blank line an editor added
		{"\nkey", "", "more than one line"},
	} {
		file := filepath.Join(dir, "key")
		if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		key, err := readSecretFile(&env{stderr: &stderr}, file)
		if tc.err == "" && (err != nil || key != tc.key) || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || key != "") {
			t.Errorf("%.20q: key %.20q, err %v; want %.20q, %q", tc.content, key, err, tc.key, tc.err)
		}
		if stderr.Len() != 0 {
			t.Errorf("%.20q: a 0600 file warned: %s", tc.content, stderr.String())
		}
	}
	// An endless file (a device) is refused after 4 KiB + 1 bytes, not read
	// to its end; it is world-readable, so it is warned about too.
	if _, err := os.Stat("/dev/zero"); err == nil {
		var stderr bytes.Buffer
		_, err := readSecretFile(&env{stderr: &stderr}, "/dev/zero")
		if err == nil || !strings.Contains(err.Error(), "larger than 4 KiB") || !strings.HasPrefix(stderr.String(), "warning: API key file /dev/zero is readable by other users") {
			t.Errorf("/dev/zero: %v; stderr %q", err, stderr.String())
		}
	}
}
