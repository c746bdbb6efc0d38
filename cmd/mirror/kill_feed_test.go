package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// serveMirror starts `mirror serve` over db and returns its URL.
func serveMirror(t *testing.T, env []string, db string) string {
	t.Helper()
	cmd := exec.Command(mirrorBin, "serve", "--db", db, "--addr", "127.0.0.1:0")
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-lines:
		if _, url, ok := strings.Cut(line, " on "); ok {
			return url
		}
		t.Fatalf("serve said %q", line)
	case <-time.After(30 * time.Second):
		t.Fatal("serve printed nothing")
	}
	return ""
}

// TestKill9Feed is TestKill9 for a downstream mirror fed by two upstream
// mirrors' change feeds (`mirror serve` over mirrors of two registries):
// every sync reads one upstream's whole content through its feed, and is
// SIGKILLed at random points while it reads, stages and publishes. After
// each kill the mirror holds one upstream's content or the other's, and
// the next sync resumes and ends with the upstream's digest.
func TestKill9Feed(t *testing.T) {
	t.Parallel()
	kills := 12
	if testing.Short() {
		kills = 4
	}
	env := baseEnv(t)
	dir := t.TempDir()
	var ref killRefs
	var times []time.Duration
	for i, seed := range []string{"3", "4"} {
		reg := startFake(t, "--generate", "800", "--seed", seed, "--stage-size", "500")
		up := filepath.Join(dir, "up"+seed+".db")
		if r := runMirror(t, env, "sync", "-q", "--db", up, "--registry", reg.URL); r.code != exitOK {
			t.Fatalf("upstream sync %d: %s", i, r)
		}
		reg.Stop()
		ref.url[i] = serveMirror(t, env, up)
		db := filepath.Join(dir, "ref"+seed+".db")
		for range 2 {
			start := time.Now()
			r := runMirror(t, env, "sync", "--json", "--db", db, "--registry", ref.url[i])
			var rep struct {
				Feed struct{ Used bool } `json:"feed"`
			}
			if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &rep) != nil || !rep.Feed.Used {
				t.Fatalf("reference sync %d: %s", i, r)
			}
			times = append(times, time.Since(start))
		}
		ref.digest[i] = statusOf(t, env, db).Digest
		if up := statusOf(t, env, up).Digest; up != ref.digest[i] {
			t.Fatalf("a downstream's digest %s differs from its upstream's %s", ref.digest[i], up)
		}
		ref.list[i] = runMirror(t, env, "list", "--json", "--db", db).stdout
	}
	ref.syncTimes = times
	t.Logf("a full sync from a feed takes %s (median of %v)", median(times), times)
	killChain(t, env, ref, killSeed+1, kills)
}

// TestSyncFollow: `mirror sync --follow` from an upstream mirror picks up
// a new upstream generation within seconds (a long poll, not
// --interval), and SIGTERM ends it with exit 0.
func TestSyncFollow(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	dir := t.TempDir()
	reg := newFake(t, registrytest.Options{Generate: 50})
	up := filepath.Join(dir, "up.db")
	if r := runMirror(t, env, "sync", "-q", "--db", up, "--registry", reg.URL()); r.code != exitOK {
		t.Fatalf("upstream sync: %s", r)
	}
	url := serveMirror(t, env, up)
	down := filepath.Join(dir, "down.db")
	cmd, stdout, stderr := startMirror(t, env, "sync", "--follow", "--interval", "1h", "--db", down, "--registry", url)
	waitFor(t, "the first sync", 30*time.Second, func() bool {
		return exists(down) && statusOf(t, env, down).Digest == statusOf(t, env, up).Digest
	})
	gen, _ := registrytest.GenerateStages(3, 77, 300)
	for _, raw := range gen {
		reg.AddRaw(raw)
	}
	if r := runMirror(t, env, "sync", "-q", "--db", up, "--registry", reg.URL()); r.code != exitOK {
		t.Fatalf("upstream sync: %s", r)
	}
	want := statusOf(t, env, up).Digest
	waitFor(t, "the follower to pick up the new generation", 20*time.Second, func() bool {
		return statusOf(t, env, down).Digest == want
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != exitOK {
		t.Fatalf("--follow ended with exit %d; stderr:\n%s", code, stderr.String())
	}
	if n := strings.Count(stdout.String(), "sync ok"); n != 2 {
		t.Errorf("%d sync lines, want 2:\n%s", n, stdout.String())
	}
}
