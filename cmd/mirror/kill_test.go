package main

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/sync/registrytest"
)

// killSeed seeds the kill delays; a failure names it, so a run can be repeated exactly.
const killSeed uint64 = 20261125

// TestKill9 SIGKILLs `mirror sync` at random points, again and again.
// Between two registries A and B of 885 stages each (85 shared), every
// sync moves the mirror from one to the other. After each kill the
// published snapshot must open and verify, and hold exactly A's or B's
// content (no mixture); the next sync must succeed. At the end the mirror
// must equal a clean sync into a fresh file. 20 kills (5 with -short).
func TestKill9(t *testing.T) {
	t.Parallel()
	kills := 20
	if testing.Short() {
		kills = 5
	}
	const gen = "800"
	regs := [2]*registrytest.Process{
		startFake(t, "--generate", gen, "--seed", "1", "--stage-size", "500", "--latency", "20ms"),
		startFake(t, "--generate", gen, "--seed", "2", "--stage-size", "500", "--latency", "20ms"),
	}
	env := baseEnv(t)
	dir := t.TempDir()

	// Clean references: each registry synced into a fresh file.
	var ref killRefs
	var times []time.Duration
	for i, reg := range regs {
		ref.url[i] = reg.URL
		db := filepath.Join(dir, "ref"+string(rune('A'+i))+".db")
		for range 2 {
			start := time.Now()
			if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", reg.URL); r.code != exitOK {
				t.Fatalf("reference sync %d: %s", i, r)
			}
			times = append(times, time.Since(start))
		}
		ref.digest[i] = statusOf(t, env, db).Digest
		ref.list[i] = runMirror(t, env, "list", "--json", "--db", db).stdout
	}
	if ref.digest[0] == ref.digest[1] {
		t.Fatal("the two registries should differ")
	}
	ref.syncTimes = times
	t.Logf("a full sync takes %s (median of %v)", median(times), times)

	killChain(t, env, ref, killSeed, kills)
}

// killRefs describes the two registries of TestKill9.
type killRefs struct {
	url, digest, list [2]string
	syncTimes         []time.Duration // durations of full syncs
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// killChain kills syncs of one mirror until want kills have landed.
func killChain(t *testing.T, env []string, ref killRefs, seed uint64, want int) {
	db := filepath.Join(t.TempDir(), "m.db")
	if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", ref.url[0]); r.code != exitOK {
		t.Fatalf("first sync: %s", r)
	}
	cur := 0 // the registry the published snapshot matches
	gen := statusOf(t, env, db).Generation
	rng := rand.New(rand.NewPCG(seed, 0))
	samples := slices.Clone(ref.syncTimes)
	kills, finished, killedAfterPublish := 0, 0, 0
	for iter := 0; kills < want; iter++ {
		if iter >= 3*want {
			t.Fatalf("only %d of %d kills landed in %d attempts: the syncs are too fast", kills, want, iter)
		}
		next := 1 - cur
		// Up to 1.1x a full sync: some kills land while it publishes, a
		// few after it finished.
		est := median(samples[max(0, len(samples)-5):]) // the recent ones
		delay := time.Duration(rng.Int64N(int64(est) * 11 / 10))
		cmd := exec.Command(mirrorBin, "sync", "-q", "--max-remove", "100%", "--db", db, "--registry", ref.url[next])
		cmd.Env = env
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Kill() // SIGKILL
		err := cmd.Wait()
		var xe *exec.ExitError
		switch {
		case errors.As(err, &xe) && xe.Sys().(syscall.WaitStatus).Signaled():
			kills++
		case err == nil:
			// The sync won the race: it must have published. It is also
			// a measure of a full sync now (the machine's load varies).
			finished++
			samples = append(samples, time.Since(start))
		default:
			t.Fatalf("seed %d iteration %d (delay %s): sync failed on its own: %v", seed, iter, delay, err)
		}

		// The snapshot opens, verifies, and is all-old or all-new.
		st := statusOf(t, env, db)
		switch {
		case st.Digest == ref.digest[cur] && st.Generation == gen:
		case st.Digest == ref.digest[next] && st.Generation == gen+1:
			if err != nil {
				killedAfterPublish++
			}
		default:
			t.Fatalf("seed %d iteration %d (killed after %s): generation %d (was %d), digest %s is neither registry's",
				seed, iter, delay, st.Generation, gen, st.Digest)
		}
		if err == nil && st.Digest != ref.digest[next] {
			t.Fatalf("seed %d iteration %d: a finished sync did not publish", seed, iter)
		}
		if r := runMirror(t, env, "verify", "-q", "--db", db); r.code != exitOK {
			t.Fatalf("seed %d iteration %d (killed after %s): verify: %s", seed, iter, delay, r)
		}

		// The next sync succeeds (resuming what the killed one staged).
		if r := runMirror(t, env, "sync", "-q", "--max-remove", "100%", "--db", db, "--registry", ref.url[next]); r.code != exitOK {
			t.Fatalf("seed %d iteration %d (killed after %s): the next sync: %s", seed, iter, delay, r)
		}
		st = statusOf(t, env, db)
		if st.Digest != ref.digest[next] {
			t.Fatalf("seed %d iteration %d: after a complete sync the digest is %s, want %s", seed, iter, st.Digest, ref.digest[next])
		}
		cur, gen = next, st.Generation
	}
	t.Logf("seed %d: %d kills landed (%d after the new snapshot was published), %d syncs finished before their kill; a full sync takes %s",
		seed, kills, killedAfterPublish, finished, median(samples))

	if got := runMirror(t, env, "list", "--json", "--db", db).stdout; got != ref.list[cur] {
		t.Error("the mirror differs from a clean sync of the same registry")
	}
	if r := runMirror(t, env, "verify", "-q", "--db", db); r.code != exitOK {
		t.Errorf("final verify: %s", r)
	}
}

// statusOf runs `mirror status --json` and decodes it.
func statusOf(t *testing.T, env []string, db string) statusJSON {
	t.Helper()
	r := runMirror(t, env, "status", "--json", "--db", db)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != exitOK || err != nil {
		t.Fatalf("status (%v): %s", err, r)
	}
	return st
}
