package sync_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/noether-mirror/mirror/store"
	msync "github.com/noether-mirror/mirror/sync"
	"github.com/noether-mirror/mirror/sync/registrytest"
)

// scratchMaps counts this process's mappings of mirror scratch files.
func scratchMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc/self/maps here")
	}
	return strings.Count(string(b), ".mirror-scratch-")
}

// TestSyncReleasesScratch checks that a sync unmaps every scratch file it
// made (mirror.Scratch), whether it succeeds, relists after drift, skips a
// refused lifecycle or fails: a RemoteStageStore refreshes in a
// long-running process, where a leak would add up.
func TestSyncReleasesScratch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts mappings in /proc")
	}
	before := scratchMaps(t)
	srv := newServer(t, registrytest.Options{Stages: genStages(t, 40, 16), DraftsNeedAuth: true})
	m := newMirror(t)
	c := newClient(t, srv.URL())
	mustSync(t, m, c, msync.Options{PageSize: 7})
	if n := scratchMaps(t); n != before {
		t.Fatalf("after a sync: %d scratch mappings, %d before", n, before)
	}
	// The stages the hook adds, one an active page, built here: building
	// can fail the test, which the hook, on a registry goroutine, must not.
	churn := make([]*store.Stage, 64)
	for i := range churn {
		churn[i] = build(t, "scratch_"+itoa(i+1), "churn", store.Active)
	}
	var pages atomic.Int64
	var errs hookErrors
	srv.OnPage(func(lc string, _ int) {
		if lc != "active" {
			return
		}
		i := int(pages.Add(1))
		if i > len(churn) {
			errs.add(fmt.Errorf("more than %d active pages: the relists are not bounded", len(churn)))
			return
		}
		srv.AddRaw(churn[i-1].Raw)
	})
	rep, err := msync.Sync(context.Background(), m, c, msync.Options{PageSize: 7, MaxRelists: 2})
	errs.check(t)
	if err != nil {
		t.Fatalf("drifting sync: %v (report %+v)", err, rep)
	}
	if rep.Drift.Relists == 0 {
		t.Fatalf("no relist: %+v", rep.Drift)
	}
	if n := scratchMaps(t); n != before {
		t.Fatalf("after a drifting sync: %d scratch mappings, %d before", n, before)
	}
	srv.OnPage(nil)
	srv.FailNext(1000, 500)
	if _, err := msync.Sync(context.Background(), m, c, msync.Options{PageSize: 7}); err == nil {
		t.Fatal("a sync against a failing registry succeeded")
	}
	if n := scratchMaps(t); n != before {
		t.Fatalf("after a failed sync: %d scratch mappings, %d before", n, before)
	}
}
