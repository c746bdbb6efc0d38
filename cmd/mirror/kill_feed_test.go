package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
