package registrytest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TB is the part of testing.TB that StartProcess and BuildProcess use.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Process is cmd/fakeregistry running as a child process: for tests of
// other processes, and for benchmarks that must not count the registry's
// memory and CPU as their own.
type Process struct {
	// URL is where it listens, http://127.0.0.1:PORT.
	URL    string
	cmd    *exec.Cmd
	stderr bytes.Buffer
	once   sync.Once
}

// BuildProcess builds cmd/fakeregistry into a temporary directory of tb
// and returns the binary's path. It must run inside this module.
func BuildProcess(tb TB) string {
	tb.Helper()
	root, err := ModuleRoot()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	bin := filepath.Join(tb.TempDir(), "fakeregistry")
	build := exec.Command("go", "build", "-o", bin, "./cmd/fakeregistry")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build cmd/fakeregistry: %v\n%s", err, out)
	}
	return bin
}

// StartProcess runs the fakeregistry binary bin with args, listening on
// 127.0.0.1 on a free port, from a temporary directory, and waits (up to
// five minutes: loading 100k stages takes a while) until it listens. It is
// stopped when tb ends, or earlier with Stop.
func StartProcess(tb TB, bin string, args ...string) *Process {
	tb.Helper()
	dir := tb.TempDir()
	addrFile := filepath.Join(dir, "addr")
	args = append([]string{"--addr", "127.0.0.1:0", "--addr-file", addrFile}, args...)
	p := &Process{cmd: exec.Command(bin, args...)}
	p.cmd.Dir = dir
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	tb.Cleanup(p.Stop)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if b, err := os.ReadFile(addrFile); err == nil && len(b) > 0 {
			p.URL = strings.TrimSpace(string(b))
			return p
		}
		if time.Now().After(deadline) {
			p.Stop()
			tb.Fatalf("the fake registry did not start; stderr:\n%s", p.Stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop ends the process: SIGTERM, then SIGKILL after five seconds.
func (p *Process) Stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
}

// Stderr returns what the process wrote to stderr. Call it after Stop.
func (p *Process) Stderr() string { return p.stderr.String() }
