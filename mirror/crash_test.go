package mirror

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// crashEnv names the mirror a TestCrashWriter child writes to.
const crashEnv = "MIRROR_CRASH_CHILD_PATH"

// crashOptions make the child's publishes take every path: deltas, chains
// merged every few publishes (into a merged delta, or their tails after
// one), merged deltas rewritten as the folded deltas pass
// MaxOverlay, compactions, and collection of all but the last few
// generations after each publish.
var crashOptions = Options{MaxOverlay: 40, MaxMerged: 120, MaxLayers: 4, Keep: KeepPolicy{Last: 3, Within: -1}}

// crashOptionsKeeping is crashOptions keeping the last keep generations.
func crashOptionsKeeping(keep int) Options {
	o := crashOptions
	if keep > 0 {
		o.Keep.Last = keep
	}
	return o
}

// archiveKeep is what TestKill9Archives keeps: more generations than a
// manifest holds the records of, so that publishes write archive files
// and collections remove them.
const archiveKeep = 2*archiveLen + 20

// TestCrashWriter is the child of TestKill9Generations, not a test of its
// own: it writes to the mirror at $MIRROR_CRASH_CHILD_PATH until it is
// killed, appending "generation digest" to PATH.journal after every
// publish that returned (so it was durable).
func TestCrashWriter(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("the child of TestKill9Generations")
	}
	seed, _ := strconv.ParseUint(os.Getenv(crashEnv+"_SEED"), 10, 64)
	keep, _ := strconv.Atoi(os.Getenv(crashEnv + "_KEEP"))
	m, err := Open(path, crashOptionsKeeping(keep))
	if err != nil {
		t.Fatal(err)
	}
	journal, err := os.OpenFile(path+".journal", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 3))
	key := testKey()
	ctx := context.Background()
	for i := 0; ; i++ {
		id := genStage(t, r.IntN(300), 600, key).ID
		switch r.IntN(10) {
		case 0, 1, 2:
			_, err = m.Put(ctx, genStage(t, 1000+int(seed)*10000+i, 600, key))
		case 3:
			err = m.Remove(ctx, id)
		case 4, 5:
			err = m.UpdateLifecycle(ctx, id, store.Tombstone)
		case 6:
			_, err = m.GC(ctx, nil)
		default: // a sync of a different registry: many changes at once
			err = crashSync(ctx, t, m, r, key)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalidTransition) {
			t.Fatalf("op %d: %v", i, err)
		}
		meta := m.Meta()
		fmt.Fprintf(journal, "%d %s\n", meta.Generation, meta.Digest)
	}
}

// crashSync replaces the mirror's content with a random registry of a few
// hundred stages, as an import or a sync without Fill does.
func crashSync(ctx context.Context, t *testing.T, m *Mirror, r *rand.Rand, key ed25519.PrivateKey) error {
	w, err := m.BeginSync(ctx)
	if err != nil {
		return err
	}
	var ss []*store.Stage
	for j := range 300 {
		if r.IntN(4) > 0 {
			ss = append(ss, genStage(t, j, 600, key))
		}
	}
	if err := w.PutBatch(entries(ss), nil); err != nil {
		_ = w.Abort(false)
		return err
	}
	_, err = w.Publish(ctx, PublishInfo{Upstream: "crash", SyncTime: time.Now()})
	if err != nil {
		_ = w.Abort(false)
	}
	return err
}

// TestKill9Generations SIGKILLs a writer that publishes deltas, merges
// chains, compacts and collects generations, at random points, again and
// again. After each kill: the mirror opens and verifies; its current
// generation is the last one a returned publish reported or the one being
// written (nothing durable is lost, nothing half-written is served);
// every kept generation opens and verifies its digest; and the next
// writer cleans up what the dead one left.
func TestKill9Generations(t *testing.T) {
	kills := 25
	if testing.Short() {
		kills = 8
	}
	kill9(t, kills, crashOptions.Keep.Last)
}

// TestKill9Archives is TestKill9Generations keeping more generations than
// a manifest holds the records of: the writer also writes archive files,
// and collects them. After each kill the history must read from disk
// (every archive file the manifest names, in verify and the log), and
// the oldest and newest kept generations read back their digests.
func TestKill9Archives(t *testing.T) {
	kills := 12
	if testing.Short() {
		kills = 5
	}
	path := kill9(t, kills, archiveKeep)
	if archives, _ := filepath.Glob(filepath.Join(gensDir(path), "*.archive")); len(archives) == 0 {
		t.Fatal("no archive file: the test tests nothing")
	}
}

// kill9 SIGKILLs a TestCrashWriter child keeping keep generations, kills
// times, checking the mirror after each kill (checkAfterKill), and
// returns the mirror's path.
func kill9(t *testing.T, kills, keep int) string {
	if os.Getenv(crashEnv) != "" {
		t.Skip("in the child")
	}
	opts := crashOptionsKeeping(keep)
	path := filepath.Join(t.TempDir(), "mirror.db")
	m, err := Create(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	var base []*store.Stage
	for i := range 300 {
		base = append(base, genStage(t, i, 600, testKey()))
	}
	syncAll(t, m, base, PublishInfo{Upstream: "crash"})
	// Enough generations that the children's publishes archive records,
	// and collect archive files.
	for i := 0; keep > 2*archiveLen && i < 2*archiveLen+archiveLen/2; i++ {
		if _, err := m.Put(t.Context(), genStage(t, 500+i, 600, testKey())); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	r := rand.New(rand.NewPCG(20261206, 1))
	seen := m.Meta().Generation // the generation the last check found
	for k := range kills {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashWriter$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+path, fmt.Sprintf("%s_SEED=%d", crashEnv, k+1), fmt.Sprintf("%s_KEEP=%d", crashEnv, keep))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+r.IntN(700)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: the writer ended by itself (%v):\n%s", k, err, out)
		}
		seen = checkAfterKill(t, k, path, seen, opts)
	}
	// The kills must have landed among publishes, not before the first.
	if n := journalLines(t, path); n < kills {
		t.Fatalf("%d publishes in %d runs: the writer barely ran", n, kills)
	} else {
		t.Logf("%d publishes in %d runs", n, kills)
	}
	return path
}

func journalLines(t *testing.T, path string) int {
	b, err := os.ReadFile(path + ".journal")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// checkAfterKill checks the mirror a killed writer left, whose previous
// run left generation seen, and returns its generation now.
func checkAfterKill(t *testing.T, k int, path string, seen uint64, opts Options) uint64 {
	t.Helper()
	ctx := t.Context()
	m, err := Open(path, opts)
	if err != nil {
		t.Fatalf("kill %d: the mirror does not open: %v", k, err)
	}
	defer m.Close()
	meta := m.Meta()
	lastGen, lastDigest := lastJournaled(t, path)
	switch {
	case meta.Generation == lastGen && lastDigest != "" && meta.Digest != lastDigest:
		t.Fatalf("kill %d: generation %d has digest %.12s, the writer reported %.12s", k, lastGen, meta.Digest, lastDigest)
	case meta.Generation < lastGen || meta.Generation > max(lastGen, seen)+1:
		// At most one publish was in flight when the writer died.
		t.Fatalf("kill %d: the current generation is %d; the last returned publish made %d, the run began at %d", k, meta.Generation, lastGen, seen)
	}
	if res := mustVerify(t, m); !res.OK() {
		t.Fatalf("kill %d: verify: %+v", k, res.Problems)
	}
	gens, err := m.Generations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(gens) > 6 { // the oldest and the newest: all takes too long
		gens = append(gens[:3], gens[len(gens)-3:]...)
	}
	for _, g := range gens {
		sn, err := m.SnapshotAt(ctx, strconv.FormatUint(g.Generation, 10))
		if err != nil {
			t.Fatalf("kill %d: generation %d: %v", k, g.Generation, err)
		}
		st, err := contentHash(ctx, sn.s)
		sn.Close()
		if err != nil || digestHex(&st) != g.Digest {
			t.Fatalf("kill %d: generation %d reads as %.12s, the manifest says %.12s (%v)", k, g.Generation, digestHex(&st), g.Digest, err)
		}
	}
	// The next writer removes what the dead one left: temporaries, and
	// data files renamed into place whose manifest never followed.
	w, err := m.BeginLocal(ctx)
	if err != nil {
		t.Fatalf("kill %d: the next writer: %v", k, err)
	}
	_ = w.Abort(false)
	if got, want := gensFiles(t, m), neededFiles(t, m); !slices.Equal(got, want) {
		t.Errorf("kill %d: after the next writer began, PATH.gens holds %v, want %v", k, got, want)
	}
	return meta.Generation
}

// lastJournaled is the last generation (and digest) the child's journal
// recorded, or the current one when it recorded nothing.
func lastJournaled(t *testing.T, path string) (uint64, string) {
	f, err := os.Open(path + ".journal")
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	var gen uint64
	var digest string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// A line cut by the kill is not a complete record.
		if fields := strings.Fields(sc.Text()); len(fields) == 2 && len(fields[1]) == 64 {
			gen, _ = strconv.ParseUint(fields[0], 10, 64)
			digest = fields[1]
		}
	}
	return gen, digest
}
