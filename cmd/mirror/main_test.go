package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// Binaries built once by TestMain; subprocess tests run these.
var (
	mirrorBin string
	fakeBin   string
	// stdlibFile is the absolute path of the 85-stage fixture.
	stdlibFile string
)

// TestMain builds cmd/mirror and cmd/fakeregistry into a temporary
// directory so that subprocess tests exercise the real binaries (exit
// codes, signals, stdout/stderr of a process).
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mirror-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	mirrorBin = filepath.Join(dir, "mirror")
	fakeBin = filepath.Join(dir, "fakeregistry")
	for _, b := range []struct{ out, pkg string }{{mirrorBin, "."}, {fakeBin, "../fakeregistry"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	if stdlibFile, err = filepath.Abs(filepath.Join("..", "..", registrytest.StdlibFixture)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// result is what one run of the command produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// baseEnv is a clean environment for subprocesses: nothing is inherited
// from the developer's shell (no NOETHER_* or MIRROR_DB), and the user
// cache directory points into the test's temporary directory.
func baseEnv(t *testing.T) []string {
	home := t.TempDir()
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CACHE_HOME=" + filepath.Join(home, "cache"),
	}
}

// runMirror runs the built binary with env and args and waits for it.
func runMirror(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mirrorBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var xe *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &xe) && xe.Exited():
		r.code = xe.ExitCode()
	default:
		t.Fatalf("mirror %v: %v\n%s", args, err, r)
	}
	return r
}

// startMirror starts the built binary without waiting for it.
func startMirror(t *testing.T, env []string, args ...string) (*exec.Cmd, *lockedBuffer, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(mirrorBin, args...)
	cmd.Env = env
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &stdout, &stderr
}

// exitCode waits for cmd and returns its exit code (-1 when killed by a
// signal).
func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	var xe *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &xe):
		return xe.ExitCode()
	}
	t.Fatalf("wait: %v", err)
	return 0
}

// startFake starts cmd/fakeregistry with args (stages default to the
// stdlib fixture) and waits until it listens. It is stopped at the end of
// the test, or earlier with Stop.
func startFake(t *testing.T, args ...string) *registrytest.Process {
	t.Helper()
	hasStages := false
	for _, a := range args {
		hasStages = hasStages || a == "--stages" || strings.HasPrefix(a, "--stages=")
	}
	if !hasStages {
		args = append(args, "--stages", stdlibFile)
	}
	return registrytest.StartProcess(t, fakeBin, args...)
}

// closedPortURL returns an http URL of a loopback port nobody listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// runIn runs a command line in-process through run(), with env as the
// whole environment.
func runIn(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code := run(t.Context(), args, &stdout, &stderr, getenv)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// stdlibRaw returns the fixture's stages, each with its exact bytes.
func stdlibRaw(t testing.TB) []json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(stdlibFile)
	if err != nil {
		t.Fatal(err)
	}
	var stages []json.RawMessage
	if err := json.Unmarshal(b, &stages); err != nil {
		t.Fatal(err)
	}
	return stages
}

// newFake starts an in-process fake registry (loopback httptest).
func newFake(t testing.TB, opts registrytest.Options) *registrytest.Server {
	t.Helper()
	if opts.Stages == nil {
		opts.Stages = stdlibRaw(t)
	}
	s, err := registrytest.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// syncedMirror syncs the stdlib fixture into a fresh mirror in-process and
// returns its path.
func syncedMirror(t *testing.T) string {
	t.Helper()
	fake := newFake(t, registrytest.Options{})
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runIn(t, nil, "sync", "-q", "--db", db, "--registry", fake.URL()); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	return db
}

// readFile returns path's bytes, failing the test on error.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeKeyFile writes key, newline-terminated and mode 0600, to the file
// "key" in dir and returns its path.
func writeKeyFile(t *testing.T, dir, key string) string {
	t.Helper()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// copyTo copies src to a new file in a temporary directory.
func copyTo(t *testing.T, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(dst, readFile(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	// A format-2 mirror's data files, beside it in PATH.gens.
	ents, err := os.ReadDir(src + ".gens")
	if err != nil {
		return dst
	}
	if err := os.Mkdir(dst+".gens", 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b := readFile(t, filepath.Join(src+".gens", e.Name()))
		if err := os.WriteFile(filepath.Join(dst+".gens", e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// dataFile returns the file of the mirror at db whose bytes hold needle:
// one of its data files in db.gens (or db itself, for a format-1 mirror).
func dataFile(t *testing.T, db string, needle []byte) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(db+".gens", "*"))
	for _, f := range append(files, db) {
		if bytes.Contains(readFile(t, f), needle) {
			return f
		}
	}
	t.Fatalf("no file of the mirror %s holds %.40q", db, needle)
	return ""
}

// stageField decodes one string field of a stage's JSON.
func stageField(t testing.TB, raw []byte, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[field].(string)
	return s
}

// lockedBuffer is a goroutine-safe output sink: a test may read what a
// running process has written so far.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
