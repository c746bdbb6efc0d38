package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/mirror"
)

// Subprocess tests: the built binary, its exit codes and its signals.

// tamperedStagesFile writes the stdlib fixture with stage i's signature
// tampered, as a --stages file for cmd/fakeregistry.
func tamperedStagesFile(t *testing.T, i int) (path, id string) {
	t.Helper()
	raws := stdlibRaw(t)
	var b bytes.Buffer
	b.WriteByte('[')
	for j, raw := range raws {
		if j > 0 {
			b.WriteByte(',')
		}
		if j == i {
			raw = tamper(t, raw)
		}
		b.Write(raw)
	}
	b.WriteByte(']')
	path = filepath.Join(t.TempDir(), "tampered.json")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, stageField(t, raws[i], "id")
}

// TestExitCodes runs the binary once per exit code of the contract (5 and
// 130 have their own tests below).
func TestExitCodes(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	env := baseEnv(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "m.db")
	if r := runMirror(t, env, "sync", "--db", db, "--registry", fake.URL); r.code != exitOK || !strings.HasPrefix(r.stdout, "sync ok: 85 stages") {
		t.Fatalf("sync: %s", r)
	}

	// A mirror that has never synced: the sync to a closed port fails
	// (exit 1) after creating it empty.
	never := filepath.Join(dir, "never.db")
	if r := runMirror(t, env, "sync", "--db", never, "--registry", closedPortURL(t)); r.code != exitError ||
		!strings.Contains(r.stderr, "mirror sync:") {
		t.Fatalf("sync to a closed port: %s", r)
	}

	// A mirror with one bit flipped in a record.
	flipped := copyTo(t, db, "flipped.db")
	victim := stdlibRaw(t)[11]
	desc := []byte(stageField(t, victim, "description"))
	file := dataFile(t, flipped, desc)
	b := readFile(t, file)
	i := bytes.Index(b, desc)
	b[i+1] ^= 0x04
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}

	tampered, badID := tamperedStagesFile(t, 20)
	bad := startFake(t, "--stages", tampered)
	partial := filepath.Join(dir, "partial.db")

	for _, tc := range []struct {
		name string
		args []string
		code int
		// stderr must contain this ("" means stderr must be empty).
		stderr string
	}{
		{"version", []string{"version"}, exitOK, ""},
		{"status", []string{"status", "--db", db}, exitOK, ""},
		{"fresh enough", []string{"status", "--db", db, "--max-age", "1h"}, exitOK, ""},
		{"verify", []string{"verify", "--db", db}, exitOK, ""},
		{"missing mirror", []string{"status", "--db", filepath.Join(dir, "absent.db")}, exitError, "run `mirror sync` first"},
		{"not found", []string{"get", "--db", db, "no_such_stage"}, exitError, "no_such_stage"},
		{"closed port", []string{"sync", "--db", db, "--registry", closedPortURL(t)}, exitError, "mirror sync:"},
		{"no command", nil, exitUsage, "Usage"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"bad flag", []string{"list", "--db", db, "--colour"}, exitUsage, "unknown flag"},
		{"missing arg", []string{"get", "--db", db}, exitUsage, "exactly one reference"},
		{"bad lifecycle", []string{"list", "--db", db, "--lifecycle", "retired"}, exitUsage, "unknown lifecycle"},
		{"api key flag", []string{"sync", "--db", db, "--registry", fake.URL, "--api-key", "s3cret"}, exitUsage, "unknown flag: --api-key"},
		{"bad registry url", []string{"sync", "--db", db, "--registry", "ftp://x"}, exitUsage, "http or https"},
		{"quarantined stage", []string{"sync", "--db", partial, "--registry", bad.URL}, exitPartial, "quarantined"},
		{"bit flip", []string{"verify", "--db", flipped}, exitPartial, "verification failures"},
		{"stale", []string{"status", "--db", db, "--max-age", "1ns"}, exitStale, "stale"},
		{"never synced", []string{"status", "--db", never, "--max-age", "1h"}, exitStale, "never synced (--max-age 1h0m0s): run `mirror sync`"},
		{"never synced, no file", []string{"status", "--db", filepath.Join(dir, "absent.db"), "--max-age", "1h"}, exitStale, "never synced: no mirror at " + filepath.Join(dir, "absent.db") + ": run `mirror sync`"},
		{"help for an unknown command", []string{"help", "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"negative timeout", []string{"sync", "--db", db, "--registry", fake.URL, "--timeout", "-1s"}, exitUsage, "--timeout -1s: a duration cannot be negative"},
	} {
		r := runMirror(t, env, tc.args...)
		if r.code != tc.code {
			t.Errorf("%s: mirror %q: want exit %d, got %s", tc.name, tc.args, tc.code, r)
			continue
		}
		if tc.stderr == "" && r.stderr != "" || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("%s: want %q on stderr, got %s", tc.name, tc.stderr, r)
		}
		if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
			t.Errorf("%s: panicked:\n%s", tc.name, r.stderr)
		}
	}

	// The partial sync published the rest and names the bad stage.
	r := runMirror(t, env, "status", "--json", "--db", partial)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Total != 84 || st.Quarantined != 1 ||
		len(st.QuarantineIDs) != 1 || st.QuarantineIDs[0] != badID {
		t.Errorf("status after a partial sync (%v): %s", err, r)
	}
	if r := runMirror(t, env, "get", "--db", partial, badID); r.code != exitError {
		t.Errorf("a quarantined stage must not be served: %s", r)
	}
}

// TestDefaultLocation: with neither --db nor MIRROR_DB the mirror lives
// under the user cache directory.
func TestDefaultLocation(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	env := baseEnv(t)
	var cache string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "XDG_CACHE_HOME="); ok {
			cache = v
		}
	}
	if r := runMirror(t, append(env, "NOETHER_REGISTRY="+fake.URL), "sync", "-q"); r.code != exitOK || r.stdout+r.stderr != "" {
		t.Fatalf("sync: %s", r)
	}
	want := filepath.Join(cache, "noether-mirror", "mirror.db")
	if _, err := os.Stat(want); err != nil {
		t.Fatalf("the default mirror is not at %s: %v", want, err)
	}
	r := runMirror(t, env, "status", "--json")
	if !strings.Contains(r.stdout, `"path": "`+want+`"`) {
		t.Errorf("status without --db: %s", r)
	}
	if r := runMirror(t, env, "help"); !strings.Contains(r.stdout, want) {
		t.Errorf("help should name the default location %s", want)
	}
}

// TestAPIKeyNeverPrinted: a subprocess sync with a key (file and
// environment, with -v) never shows the key; a wrong key is exit 1.
func TestAPIKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	const key = "Tq7-process-secret-9x"
	dir := t.TempDir()
	keyFile := writeKeyFile(t, dir, key)
	fake := startFake(t, "--api-key-file", keyFile, "--read-auth")
	env := baseEnv(t)
	db := filepath.Join(dir, "m.db")
	for _, tc := range []struct {
		env  []string
		args []string
		code int
	}{
		{env, []string{"sync", "-v", "--api-key-file", keyFile}, exitOK},
		{append(env, "NOETHER_API_KEY="+key), []string{"sync", "-v", "--json"}, exitOK},
		{append(env, "NOETHER_API_KEY=wrong"), []string{"sync", "-v"}, exitError},
		{env, []string{"sync"}, exitError},
	} {
		r := runMirror(t, tc.env, append(tc.args, "--db", db, "--registry", fake.URL)...)
		if r.code != tc.code {
			t.Errorf("%v: want exit %d, got %s", tc.args, tc.code, r)
		}
		if tc.code == exitError && !strings.Contains(r.stderr, "API key") {
			t.Errorf("%v: the error should be about the API key: %s", tc.args, r)
		}
		if strings.Contains(r.stdout+r.stderr, key) {
			t.Errorf("%v printed the key:\n%s", tc.args, r)
		}
	}
}

// TestProgressNotOnPipe: the binary with stderr on a pipe draws no
// progress.
func TestProgressNotOnPipe(t *testing.T) {
	t.Parallel()
	fake := startFake(t, "--generate", "500", "--stage-size", "200", "--latency", "20ms")
	r := runMirror(t, baseEnv(t), "sync", "--db", filepath.Join(t.TempDir(), "m.db"), "--registry", fake.URL)
	if r.code != exitOK || strings.ContainsAny(r.stderr+r.stdout, "\r\033") {
		t.Errorf("sync with stderr on a pipe: %q", r)
	}
}

// waitFor polls cond every 10ms until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestBusy: a second sync while one holds the writer lock exits 5 at once
// and leaves the first one alone.
func TestBusy(t *testing.T) {
	t.Parallel()
	slow := startFake(t, "--generate", "1000", "--stage-size", "200", "--latency", "250ms")
	env := baseEnv(t)
	db := filepath.Join(t.TempDir(), "m.db")
	first, _, firstErr := startMirror(t, env, "sync", "--db", db, "--registry", slow.URL)
	// The staging file exists only while the writer lock is held.
	waitFor(t, "the first sync to take the lock", 30*time.Second, func() bool { return exists(db + ".next") })

	start := time.Now()
	r := runMirror(t, env, "sync", "--db", db, "--registry", slow.URL)
	if r.code != exitBusy || !strings.Contains(r.stderr, "busy") || !strings.Contains(r.stderr, "another process") {
		t.Errorf("second sync: want exit 5 naming the other writer, got %s", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the busy sync took %s: it should fail fast", d)
	}
	// Reads are never blocked by a writer.
	if r := runMirror(t, env, "status", "--db", db); r.code != exitOK {
		t.Errorf("status during a sync: %s", r)
	}
	if code := exitCode(t, first); code != exitOK {
		t.Fatalf("the first sync: exit %d\n%s", code, firstErr)
	}
	if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", slow.URL); r.code != exitOK {
		t.Errorf("a sync after the lock was released: %s", r)
	}
}

// TestInterrupted: SIGINT or SIGTERM during a slow sync exits 130, says
// so, leaves the last snapshot byte for byte, and the next sync resumes.
func TestInterrupted(t *testing.T) {
	t.Parallel()
	fast := startFake(t)
	slow := startFake(t, "--generate", "1200", "--stage-size", "200", "--latency", "100ms")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			env := baseEnv(t)
			db := filepath.Join(t.TempDir(), "m.db")
			if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", fast.URL); r.code != exitOK {
				t.Fatalf("first sync: %s", r)
			}
			before := readFile(t, db)
			cmd, stdout, stderr := startMirror(t, env, "sync", "-v", "--db", db, "--registry", slow.URL)
			// Once a page is committed the next sync has something to
			// reuse. (A fixed sleep was not enough on a loaded machine.)
			waitFor(t, "the sync to commit a page", 30*time.Second, func() bool {
				return strings.Contains(stderr.String(), "page committed")
			})
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, cmd); code != exitInterrupted {
				t.Fatalf("exit %d, want 130\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			// The last line is the verdict: what is true now, and none of
			// the advice of the request the signal cut short ("retrying
			// will not help").
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			const want = "mirror sync: interrupted; the last snapshot is intact and the next sync resumes where this one stopped"
			if last := lines[len(lines)-1]; last != want {
				t.Errorf("last line of stderr:\n%s\nwant:\n%s", last, want)
			}
			for _, l := range lines {
				if strings.HasPrefix(l, "mirror sync:") && l != want {
					t.Errorf("stderr has another verdict: %s", l)
				}
			}
			if !bytes.Equal(before, readFile(t, db)) {
				t.Error("the interrupted sync changed the published snapshot")
			}
			if r := runMirror(t, env, "verify", "--db", db); r.code != exitOK {
				t.Errorf("verify after the interrupt: %s", r)
			}
			r := runMirror(t, env, "status", "--json", "--db", db)
			var st statusJSON
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Total != 85 || st.Generation != 1 {
				t.Errorf("status after the interrupt (%v): %s", err, r)
			}
			r = runMirror(t, env, "sync", "--json", "--db", db, "--registry", slow.URL)
			var rep struct {
				Total   int  `json:"total"`
				Resumed bool `json:"resumed"`
				Reused  int  `json:"reused"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitOK || rep.Total != 1285 || !rep.Resumed || rep.Reused == 0 {
				t.Errorf("the next sync should resume and finish (%v): %s", err, r)
			}
		})
	}
}

// TestServe: serve on a free loopback port, answer /health and /stages
// (so that another mirror can sync from it), and exit 0 on SIGTERM.
func TestServe(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	fake := startFake(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "m.db")
	if r := runMirror(t, env, "sync", "-q", "--db", db, "--registry", fake.URL); r.code != exitOK {
		t.Fatalf("sync: %s", r)
	}
	fake.Stop() // serve needs no upstream

	cmd := exec.Command(mirrorBin, "serve", "--db", db, "--addr", "127.0.0.1:0")
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("serve printed nothing; stderr:\n%s", stderr.String())
	}
	_, url, ok := strings.Cut(line, " on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatalf("serve said %q", line)
	}

	var health struct {
		OK     bool `json:"ok"`
		Result struct {
			Store struct {
				Total int `json:"total_stages"`
			} `json:"store"`
		} `json:"result"`
	}
	getJSON(t, url+"/health", &health)
	if !health.OK || health.Result.Store.Total != 85 {
		t.Errorf("/health: %+v", health)
	}
	var page struct {
		OK     bool `json:"ok"`
		Result struct {
			Stages []json.RawMessage `json:"stages"`
			Total  int               `json:"total"`
		} `json:"result"`
	}
	getJSON(t, url+"/stages?lifecycle=active&limit=10", &page)
	if !page.OK || len(page.Result.Stages) != 10 || page.Result.Total != 85 {
		t.Errorf("/stages: ok %v, %d stages, total %d", page.OK, len(page.Result.Stages), page.Result.Total)
	}

	// The same page frozen at generation 1, cached as immutable; a
	// generation not reached yet is 404.
	root, _ := httpGet(t, url+"/stages?lifecycle=active&limit=10")
	pinned, resp := httpGet(t, url+"/at/1/stages?lifecycle=active&limit=10")
	if pinned != root || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("/at/1/stages: %s %q\n%.200s", resp.Status, resp.Header.Get("Cache-Control"), pinned)
	}
	if body, resp := httpGet(t, url+"/at/9/health"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "does not exist yet") {
		t.Errorf("/at/9/health: %s %s", resp.Status, body)
	}

	// A second mirror syncs from the served one and ends up identical.
	copyDB := filepath.Join(dir, "copy.db")
	if r := runMirror(t, env, "sync", "-q", "--db", copyDB, "--registry", url); r.code != exitOK {
		t.Fatalf("sync from serve: %s", r)
	}
	a := runMirror(t, env, "list", "--json", "--db", db)
	b := runMirror(t, env, "list", "--json", "--db", copyDB)
	if a.code != exitOK || a.stdout != b.stdout || strings.Count(a.stdout, "\n") != 85 {
		t.Errorf("the mirror synced from serve differs from its source")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != exitOK {
		t.Errorf("serve after SIGTERM: exit %d\n%s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "level=ERROR") {
		t.Errorf("serve logged errors:\n%s", stderr.String())
	}
}

// httpGet returns url's body and response, whatever the status.
func httpGet(t *testing.T, url string) (string, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	b, resp := httpGet(t, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	if err := json.Unmarshal([]byte(b), v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, b)
	}
}

// TestHistoryExitCodes: log, diff, gc and --at through the binary: exit
// codes, the keep policy read from the process environment, and gc
// exiting 5 while another process holds the writer lock.
func TestHistoryExitCodes(t *testing.T) {
	t.Parallel()
	h := newHistory(t)
	env := baseEnv(t)
	id := string(h.removed.ID)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		// stdout and stderr must contain these ("" for stderr: empty).
		stdout, stderr string
	}{
		{"log", env, []string{"log"}, exitOK, "3 (current)", ""},
		{"diff", env, []string{"diff"}, exitOK, "generation 2 → 3: 1 added", ""},
		{"diff of an unknown generation", env, []string{"diff", "7"}, exitError, "", `no generation "7"`},
		{"diff of three", env, []string{"diff", "1", "2", "3"}, exitUsage, "", "at most two generations"},
		{"get --at", env, []string{"get", "--at", "1", id}, exitOK, string(h.removed.ID), ""},
		{"bad MIRROR_KEEP", append(env, "MIRROR_KEEP=many"), []string{"gc"}, exitUsage, "", `MIRROR_KEEP "many": want a whole number`},
		{"gc by the environment", append(env, "MIRROR_KEEP=2", "MIRROR_KEEP_WITHIN=none"), []string{"gc"}, exitOK, "gc: dropped 2 generations (0-1);", ""},
		{"get --at a collected generation", env, []string{"get", "--at", "1", id}, exitError, "", "generation 1 of " + h.db + " was collected; the oldest kept is 2 (keep more with --keep)"},
		{"export --at an unknown generation", env, []string{"export", "--at", "9", filepath.Join(t.TempDir(), "x.bundle")}, exitError, "", "no such generation"},
		{"empty --at", env, []string{"list", "--at="}, exitUsage, "", "--at needs a generation"},
	} {
		r := runMirror(t, tc.env, append(tc.args, "--db", h.db)...)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || (tc.stderr == "") != (r.stderr == "") || !strings.Contains(r.stderr, tc.stderr) {
			t.Errorf("%s: mirror %q: want exit %d, %q on stdout and %q on stderr, got %s", tc.name, tc.args, tc.code, tc.stdout, tc.stderr, r)
		}
	}

	m, err := mirror.Open(h.db, mirror.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	r := runMirror(t, env, "gc", "--db", h.db, "--keep", "1", "--keep-within", "none")
	if r.code != exitBusy || !strings.Contains(r.stderr, "mirror busy: another process (pid ") {
		t.Errorf("gc while another process writes: want exit 5, got %s", r)
	}
	if r := runMirror(t, env, "log", "--db", h.db); r.code != exitOK || strings.Count(r.stdout, "\n") != 3 {
		t.Errorf("log after a busy gc: want the 2 generations still kept, got %s", r)
	}
}
