package mirror

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/noether-mirror/mirror/store"
)

// openFDs counts this process's descriptors whose target contains substr.
func openFDs(t *testing.T, substr string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.Contains(target, substr) {
			n++
		}
	}
	return n
}

func TestSnapshotPinnedWhilePublishing(t *testing.T) {
	forBothWriters(t, testSnapshotPinnedWhilePublishing)
}

func testSnapshotPinnedWhilePublishing(t *testing.T, tx bool) {
	// MaxLayers 1: generation 3 is the base and one delta merging both
	// Puts, so generation 2's delta is its alone.
	m := newTemp(t, Options{ReloadInterval: -1, BoltTransactions: tx, MaxLayers: 1})
	ctx := t.Context()
	key := testKey()
	var first []*store.Stage
	for i := range 10 {
		first = append(first, genStage(t, i, 300, key))
	}
	syncAll(t, m, first, PublishInfo{})
	// Generation 2: the base of generation 1 and a delta.
	if _, err := m.Put(ctx, genStage(t, 50, 300, key)); err != nil {
		t.Fatal(err)
	}
	other, err := Open(m.Path(), Options{ReloadInterval: -1, BoltTransactions: tx})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	added := genStage(t, 100, 300, key)
	if _, err := m.Put(ctx, added); err != nil {
		t.Fatal(err)
	}
	if g := sn.Meta().Generation; g != 2 {
		t.Errorf("pinned snapshot moved to generation %d", g)
	}
	if _, err := sn.GetRaw(ctx, added.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pinned snapshot sees a later stage: %v", err)
	}
	if raw, err := sn.GetRaw(ctx, first[3].ID); err != nil || !bytes.Equal(raw, first[3].Raw) {
		t.Errorf("pinned snapshot read: %v", err)
	}
	if n, _ := sn.Stats(ctx); n.Total != 11 {
		t.Errorf("pinned snapshot total %d", n.Total)
	}
	// A long-lived Mirror in another "process" sees N+1 without reopening.
	if raw, err := other.GetRaw(ctx, added.ID); err != nil || !bytes.Equal(raw, added.Raw) {
		t.Errorf("other mirror did not pick up the new snapshot: %v", err)
	}
	if g := other.Meta().Generation; g != 3 {
		t.Errorf("other mirror generation %d, want 3", g)
	}
	// Collecting generation 2 removes its delta; the file stays open only
	// while pinned.
	if _, err := m.GC(ctx, &KeepPolicy{Last: 1, Within: -1}); err != nil {
		t.Fatal(err)
	}
	deleted := deltaName(2) + " (deleted)"
	if n := openFDs(t, deleted); n != 1 {
		t.Errorf("%d descriptors on the collected delta while pinned, want 1", n)
	}
	if raw, err := sn.GetRaw(ctx, first[3].ID); err != nil || !bytes.Equal(raw, first[3].Raw) {
		t.Errorf("pinned snapshot read after its generation was collected: %v", err)
	}
	sn.Close()
	if n := openFDs(t, deleted); n != 0 {
		t.Errorf("%d descriptors on the collected delta after unpinning, want 0", n)
	}
	if _, err := sn.GetRaw(ctx, first[0].ID); !errors.Is(err, ErrClosed) {
		t.Errorf("read from a closed snapshot: %v", err)
	}
}

func TestReloadInterval(t *testing.T) { forBothWriters(t, testReloadInterval) }

func testReloadInterval(t *testing.T, tx bool) {
	m := newTemp(t, Options{ReloadInterval: time.Hour, BoltTransactions: tx})
	ctx := t.Context()
	writer, err := Open(m.Path(), Options{BoltTransactions: tx})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	s := genStage(t, 1, 100, testKey())
	if _, err := writer.Put(ctx, s); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m.Contains(ctx, s.ID); ok {
		t.Error("a reload happened before the interval passed")
	}
	if changed, err := m.Reload(); !changed || err != nil {
		t.Fatalf("Reload: %v %v", changed, err)
	}
	if ok, _ := m.Contains(ctx, s.ID); !ok {
		t.Error("Reload did not switch to the new snapshot")
	}
	if changed, _ := m.Reload(); changed {
		t.Error("a second Reload reported a change")
	}
}

func TestConcurrentReadersDuringPublish(t *testing.T) {
	forBothWriters(t, testConcurrentReadersDuringPublish)
}

func testConcurrentReadersDuringPublish(t *testing.T, tx bool) {
	m := newTemp(t, Options{ReloadInterval: -1, BoltTransactions: tx})
	ctx := t.Context()
	key := testKey()
	base := []*store.Stage{genStage(t, 1, 500, key), genStage(t, 2, 500, key)}
	syncAll(t, m, base, PublishInfo{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				raw, err := m.GetRaw(ctx, base[0].ID)
				if err != nil || !bytes.Equal(raw, base[0].Raw) {
					errs <- fmt.Errorf("GetRaw during publish: %v", err)
					return
				}
				if _, _, err := m.Page(ctx, store.LifecycleUnknown, 0, 10); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range 5 {
		if _, err := m.Put(ctx, genStage(t, 10+i, 200, key)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if g := m.Meta().Generation; g != 6 {
		t.Errorf("generation %d after 1 sync and 5 puts, want 6", g)
	}
}

func TestClosed(t *testing.T) {
	m := newTemp(t, Options{})
	ctx := t.Context()
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := m.GetRaw(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if _, err := m.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Errorf("Snapshot after Close: %v", err)
	}
	if _, err := sn.GetRaw(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a snapshot pinned before Close must stay readable: %v", err)
	}
	sn.Close()
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCreateMakesDirectories(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a", "b", "mirror.db")
	m, err := Create(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("mirror file mode %v (%v), want 0644", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(p)); di.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", di.Mode())
	}
	before, _ := os.ReadFile(p)
	m2, err := Create(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m2.Close()
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("Create replaced an existing mirror")
	}
	mustVerify(t, m)
}

func TestSecondWriterIsBusy(t *testing.T) {
	m := newTemp(t, Options{})
	ctx := t.Context()
	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Open(m.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	start := time.Now()
	for name, begin := range map[string]func() error{
		"BeginSync":  func() error { _, err := other.BeginSync(ctx); return err },
		"BeginLocal": func() error { _, err := other.BeginLocal(ctx); return err },
		"Put":        func() error { _, err := other.Put(ctx, genStage(t, 1, 10, nil)); return err },
	} {
		if err := begin(); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
			t.Errorf("%s while another writer is active: %v, want ErrBusy naming the holder", name, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("ErrBusy took %v", d)
	}
	// Readers are not blocked by a writer.
	if _, err := other.Stats(ctx); err != nil {
		t.Errorf("read during a write: %v", err)
	}
	w.Abort(false)
	w2, err := other.BeginSync(ctx)
	if err != nil {
		t.Fatalf("BeginSync after Abort: %v", err)
	}
	w2.Abort(false)
	if err := w.PutBatch(nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("PutBatch after Abort: %v", err)
	}
}

func TestResumeAfterAbort(t *testing.T) { forBothWriters(t, testResumeAfterAbort) }

func testResumeAfterAbort(t *testing.T, tx bool) {
	m := newTemp(t, Options{BoltTransactions: tx})
	ctx := t.Context()
	key := testKey()
	var ss []*store.Stage
	for i := range 12 {
		ss = append(ss, genStage(t, i, 200, key))
	}
	syncAll(t, m, ss[:4], PublishInfo{})
	before, _ := os.ReadFile(m.Path())

	w, err := m.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.Resumed() || w.Progress() != nil {
		t.Fatal("a fresh sync claims to resume")
	}
	if err := w.PutBatch(entries(ss[:6]), []byte("page-1")); err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries(ss[6:9]), []byte("page-2")); err != nil {
		t.Fatal(err)
	}
	w.Abort(true)
	if after, _ := os.ReadFile(m.Path()); !bytes.Equal(before, after) {
		t.Fatal("an aborted sync changed the published snapshot")
	}
	mustVerify(t, m)

	// A new process resumes.
	m2, err := Open(m.Path(), Options{BoltTransactions: tx})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	w, err = m2.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Resumed() || string(w.Progress()) != "page-2" {
		t.Fatalf("resumed %v progress %q", w.Resumed(), w.Progress())
	}
	if raw, ok, err := w.Staged(ss[7].ID); !ok || err != nil || !bytes.Equal(raw, ss[7].Raw) {
		t.Errorf("Staged of a committed stage: %v %v", ok, err)
	}
	if _, ok, _ := w.Staged(ss[10].ID); ok {
		t.Error("Staged found a stage that was never put")
	}
	if err := w.PutBatch(entries(ss[9:]), []byte("page-3")); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ss[0].ID); err != nil {
		t.Fatal(err)
	}
	res, err := w.Publish(ctx, PublishInfo{})
	if err != nil || res.Total != 11 {
		t.Fatalf("publish after resume: %+v %v", res, err)
	}
	if _, err := os.Stat(m.Path() + ".next"); !errors.Is(err, os.ErrNotExist) {
		t.Error("staging file left after publish")
	}
	mustVerify(t, m2)

	// A staging file left by a sync is discarded by a local write, so the
	// next sync starts fresh.
	w, _ = m2.BeginSync(ctx)
	w.PutBatch(entries(ss[:1]), []byte("x"))
	w.Abort(true)
	if err := m2.Remove(ctx, ss[1].ID); err != nil {
		t.Fatal(err)
	}
	w, err = m2.BeginSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort(false)
	if w.Resumed() {
		t.Error("sync resumed a staging file that a local write discarded")
	}
}

// The kill test re-executes the test binary as a child that syncs in a
// loop; the parent SIGKILLs it at random moments.
const childEnv = "MIRROR_TEST_KILL_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		childSyncLoop(path)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childSyncLoop syncs rotating subsets of 48 stages forever (until killed).
func childSyncLoop(path string) {
	t := &testing.T{}
	key := testKey()
	pool := make([]*store.Stage, 48)
	for i := range pool {
		pool[i] = genStage(t, i, 400, key)
	}
	m, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Signing the pool takes a while under the race detector on a busy
	// machine: the parent's clock starts now.
	fmt.Println("ready")
	ctx := context.Background()
	for round := 0; ; round++ {
		w, err := m.BeginSync(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		set := pool[round%8 : 40+round%8]
		start := 0
		if w.Resumed() {
			fmt.Sscan(string(w.Progress()), &start)
		}
		for i := start; i < len(set); i += 4 {
			if err := w.PutBatch(entries(set[i:min(i+4, len(set))]), []byte(fmt.Sprint(i+4))); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		if _, err := w.Publish(ctx, PublishInfo{SyncTime: time.Now()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
}

func TestKillWriterMidSync(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	m := newTemp(t, Options{ReloadInterval: -1})
	r := rand.New(rand.NewPCG(3, 4))
	var lastGen uint64
	for round := range 6 {
		cmd := exec.Command(exe, "-test.run", "^$")
		cmd.Env = append(os.Environ(), childEnv+"="+m.Path())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the child to be ready to write (an EOF means it died,
		// which the wait below reports).
		_, _ = bufio.NewReader(stdout).ReadString('\n')
		time.Sleep(time.Duration(50+r.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child exited on its own (%v): %s", round, err, stderr.String())
		}
		res := mustVerify(t, m)
		if res.Generation < lastGen {
			t.Fatalf("generation went back from %d to %d", lastGen, res.Generation)
		}
		lastGen = res.Generation
		t.Logf("round %d: generation %d, %d stages", round, res.Generation, res.Checked)
	}
	if lastGen == 0 {
		t.Error("no child ever published")
	}
	// The next writer cleans up and publishes.
	w, err := m.BeginSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.PutBatch(entries([]*store.Stage{genStage(t, 1, 10, testKey())}), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Publish(t.Context(), PublishInfo{}); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, m)
	if names, _ := filepath.Glob(m.Path() + ".tmp-*"); len(names) > 0 {
		t.Errorf("temporary files left: %v", names)
	}
}
